"""What a request reaches through the app: the process's services and the caller's organisation."""

from __future__ import annotations

import ipaddress

from flask import current_app, g, has_request_context, request

from api.edge import REQUEST_ID_ENVIRON_KEY
from storage.accounts import KeyIdentity
from storage.runtime import Services


def services() -> Services:
    return current_app.extensions["auditlog"]


def org_id() -> str:
    """The organisation of the request's API key (set by ``api.auth.require_api_key``)."""
    return g.org_id


def api_key() -> KeyIdentity:
    """The request's API key (set by ``api.auth.require_api_key``)."""
    return g.api_key


def request_id() -> str | None:
    """The request's id (``X-Request-ID``, set by ``api.edge.RequestIds``), for what it
    records; None outside a request."""
    if not has_request_context():
        return None
    return request.environ.get(REQUEST_ID_ENVIRON_KEY)


def client_ip() -> str | None:
    """The client's address as recorded (restores, the access log): the peer's, or behind
    a trusted proxy the one it forwards; None when it is not an IP address (a unix
    socket, a proxy that forwards a name), so that no record holds what no IP column can."""
    try:
        return str(ipaddress.ip_address(request.remote_addr or ""))
    except ValueError:
        return None
