"""Bearer API keys: every request sees exactly one organisation, and only what its scopes allow.

Which scope an endpoint needs is said once, here (``ENDPOINT_SCOPES``), for every endpoint
of the API; the app refuses to start if an endpoint that takes a key is missing from it
(``check_endpoint_scopes``), so a new route cannot be reachable by every key by accident.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, g, request
from werkzeug.exceptions import Forbidden, Unauthorized

from api.context import services
from api.errors import reject
from storage import accounts

#: The scope each endpoint that takes a key needs. ``read`` covers everything that only
#: reads the log (records, feed, proofs, export status, the access log); an export's file
#: and its evidence need ``export``.
ENDPOINT_SCOPES: dict[str, str] = {
    "logs.list_events": "read",
    "logs.record_history": "read",
    "logs.actor_activity": "read",
    "logs.event_types": "read",
    "logs.record_state": "read",
    "logs.notification_status": "read",
    "logs.restore": "restore",
    "exports.create_export": "export",
    "exports.list_exports": "read",
    "exports.get_export": "read",
    "exports.download_export": "export",
    "exports.export_evidence": "export",
    "console_sessions.create_console_session": "console",
    "feed.feed": "read",
    "feed.latest_checkpoint": "read",
    "feed.inclusion_proof": "read",
    "feed.consistency_proof": "read",
    "access_log.access_log": "read",
}
#: Blueprints whose every endpoint takes a bearer key.
KEYED_BLUEPRINTS = ("logs", "exports", "console_sessions", "feed", "access_log")


def require_api_key() -> None:
    """``before_request`` of the keyed blueprints: sets ``g.org_id`` and ``g.api_key``, or
    answers 401 (no live key) or 403 ``insufficient_scope`` (the key may not do this)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        reject(Unauthorized, "unauthorized", "send Authorization: Bearer <api key>")
    database = services().database
    key = accounts.identify_key_alone(database, token.strip())
    if key is None:
        reject(Unauthorized, "unauthorized", "the API key is unknown or revoked")
    g.org_id = key.org_id
    g.api_key = key
    now = datetime.now(UTC)
    if accounts.needs_use_noted(key, now):
        with database.unit_of_work(write=True) as session:
            accounts.note_key_used(session, key, now)
            session.commit()
    # ``check_endpoint_scopes`` makes a missing entry impossible; were one missing, the
    # key is refused rather than let through.
    require_scope(ENDPOINT_SCOPES.get(request.endpoint or "", "(undeclared)"))


def has_scope(scope: str) -> bool:
    return scope in g.api_key.scopes


def require_scope(scope: str) -> None:
    if not has_scope(scope):
        reject(
            Forbidden,
            "insufficient_scope",
            f"this API key lacks the {scope!r} scope",
            {"required_scope": scope, "key_scopes": sorted(g.api_key.scopes)},
        )


def check_endpoint_scopes(app: Flask) -> None:
    """Refuse an app in which an endpoint that takes a key has no scope."""
    missing = sorted(
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".", 1)[0] in KEYED_BLUEPRINTS
        and rule.endpoint not in ENDPOINT_SCOPES
    )
    if missing:
        raise RuntimeError(f"endpoints with no scope in api.auth.ENDPOINT_SCOPES: {missing}")
