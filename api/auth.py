"""Bearer API keys: every read request sees exactly one organisation."""

from __future__ import annotations

from flask import g, request
from werkzeug.exceptions import Unauthorized

from api.context import services
from api.errors import reject
from storage import accounts


def require_api_key() -> None:
    """``before_request`` of the read blueprints: sets ``g.org_id`` or answers 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        reject(Unauthorized, "unauthorized", "send Authorization: Bearer <api key>")
    with services().database.unit_of_work() as session:
        org_id = accounts.org_for_api_key(session, token.strip())
    if org_id is None:
        reject(Unauthorized, "unauthorized", "the API key is unknown or revoked")
    g.org_id = org_id
