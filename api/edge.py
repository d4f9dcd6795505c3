"""What every request goes through before the app sees it: proxy trust and its request id.

Two WSGI middlewares, so that they hold for every response the process sends (errors,
404s, probes, webhooks, the console), whatever the app does:

- ``TrustedProxies`` believes ``X-Forwarded-For``/``-Proto``/``-Host``/``-Port``/``-Prefix``
  (Werkzeug's ``ProxyFix``, one proxy hop) only when the peer's address is in
  ``FORWARDED_ALLOW_IPS``; from anyone else the headers are ignored. Behind a TLS proxy the
  links the service makes are then ``https`` and restores record the client's address.
- ``RequestIds`` takes the request's ``X-Request-ID`` when it is 1 to 200 printable ASCII
  characters, else makes one, echoes it on the response and sets it as the logging context
  (``storage.logformat``) while the request is handled.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

from storage.logformat import request_id_context

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

REQUEST_ID_HEADER = "X-Request-ID"
#: Where the request id is kept in the WSGI environ (gunicorn's access log reads it there).
REQUEST_ID_ENVIRON_KEY = "auditlog.request_id"
MAX_REQUEST_ID_LENGTH = 200
_ACCEPTABLE_REQUEST_ID = re.compile(rf"[\x20-\x7e]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def accepted_request_id(sent: str | None) -> str | None:
    """The caller's request id if it may be kept: 1 to 200 printable ASCII characters."""
    if sent is None or not _ACCEPTABLE_REQUEST_ID.fullmatch(sent):
        return None
    return sent


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIds:
    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # WSGI carries header values as latin-1 strings: anything else is not ASCII anyway.
        request_id = accepted_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        environ[REQUEST_ID_ENVIRON_KEY] = request_id

        def start_with_request_id(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            headers = [(name, value) for name, value in headers if name.lower() != "x-request-id"]
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, *args)

        with request_id_context(request_id):
            return self.app(environ, start_with_request_id)


class TrustedProxies:
    def __init__(self, app: WSGIApplication, allowed: Iterable[str]) -> None:
        self.direct = app
        self.proxied = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
        entries = list(allowed)
        self.everyone = "*" in entries
        self.networks = [
            ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"
        ]

    def trusts(self, peer: str | None) -> bool:
        if self.everyone:
            return True
        if not peer or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:  # a unix socket's peer, say
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.trusts(environ.get("REMOTE_ADDR")):
            return self.proxied(environ, start_response)
        return self.direct(environ, start_response)
