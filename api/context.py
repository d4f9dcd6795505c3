"""What a request reaches through the app: the process's services and the caller's organisation."""

from __future__ import annotations

from flask import current_app, g

from storage.runtime import Services


def services() -> Services:
    return current_app.extensions["auditlog"]


def org_id() -> str:
    """The organisation of the request's API key (set by ``api.auth.require_api_key``)."""
    return g.org_id
