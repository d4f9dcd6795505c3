"""Who is looking: the console's cookie session, its scope, its permissions and CSRF.

An opened link (``storage.console``) becomes a session kept in Flask's signed cookie: HttpOnly,
SameSite=Lax, Secure when the request came over https, path ``/console``, at most eight
hours. The session says which organisation it sees, whether it is scoped to one record or
one actor, what it may change, and who the viewer is. Every page asks this module before it
reads anything; a page outside the session's scope is a 404, exactly like a missing one.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask, abort, g, request, session
from flask.sessions import SecureCookieSessionInterface

from storage.console import SESSION_LIFETIME, Grant

COOKIE_NAME = "auditlog_console"
CSRF_FIELD = "csrf_token"


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, marked Secure whenever the request itself was https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        public_https = str(app.config.get("AUDITLOG_PUBLIC_URL", "")).startswith("https:")
        return bool(request.is_secure) or public_https or super().get_cookie_secure(app)


def configure_sessions(
    app: Flask, secret_key: str, public_url: str = "", fallbacks: Sequence[str] = ()
) -> None:
    """Behind a TLS-terminating proxy ``PUBLIC_URL`` (https) keeps the cookie Secure.

    Sessions signed with a fallback key still open (Flask's ``SECRET_KEY_FALLBACKS``)."""
    app.secret_key = secret_key
    app.config["SECRET_KEY_FALLBACKS"] = list(fallbacks)
    app.config["AUDITLOG_PUBLIC_URL"] = public_url
    app.session_interface = ConsoleSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


@dataclass(frozen=True)
class Viewer:
    """The session of the request: set by ``require_session`` on every console page."""

    org_id: str
    scope: dict[str, Any]
    permissions: frozenset[str]
    viewer: dict[str, Any] | None
    csrf_token: str
    #: The API key whose link opened the session (None for a link the CLI made).
    key_id: str | None = None

    @property
    def scoped_record(self) -> tuple[str, str] | None:
        entity = self.scope.get("entity")
        return (entity["type"], entity["id"]) if entity else None

    @property
    def scoped_actor(self) -> str | None:
        actor_id = self.scope.get("actor_id")
        return str(actor_id) if actor_id is not None else None

    @property
    def whole_organisation(self) -> bool:
        return not self.scope

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    def sees_record(self, entity_type: str, entity_id: str) -> bool:
        return self.whole_organisation or self.scoped_record == (entity_type, entity_id)

    def sees_actor(self, actor_id: str | None) -> bool:
        return actor_id is not None and (self.whole_organisation or self.scoped_actor == actor_id)

    def sees_event(self, event: dict[str, Any]) -> bool:
        """An event is in scope when it concerns the scoped record or was the scoped actor's."""
        if self.whole_organisation:
            return True
        if self.scoped_actor is not None:
            return bool(event["actor"]["id"] == self.scoped_actor)
        concerned = [(event["entity"]["type"], event["entity"]["id"])]
        concerned += [(target["type"], target["id"]) for target in event["targets"]]
        return self.scoped_record in concerned

    @property
    def home(self) -> tuple[str, dict[str, Any]]:
        """The endpoint (and its arguments) of the scope's own page."""
        if self.scoped_record is not None:
            entity_type, entity_id = self.scoped_record
            return "console.record", {"entity_type": entity_type, "entity_id": entity_id}
        if self.scoped_actor is not None:
            return "console.actor", {"actor_id": self.scoped_actor}
        return "console.log", {}


def start_session(grant: Grant) -> None:
    """Replace whatever session the browser had with the one the link grants."""
    session.clear()
    session.permanent = True
    session.update(
        org=grant.org_id,
        scope=grant.scope,
        permissions=list(grant.permissions),
        viewer=grant.viewer,
        key=grant.key_id,
        csrf=secrets.token_urlsafe(32),
        until=int(time.time() + SESSION_LIFETIME.total_seconds()),
    )


def current_viewer() -> Viewer | None:
    """The request's session, or None when there is none or it has run out."""
    if "org" not in session or float(session.get("until", 0)) <= time.time():
        return None
    return Viewer(
        org_id=session["org"],
        scope=dict(session.get("scope") or {}),
        permissions=frozenset(session.get("permissions") or ()),
        viewer=session.get("viewer"),
        csrf_token=session["csrf"],
        key_id=session.get("key"),
    )


def viewer() -> Viewer:
    """The session of the current page (``require_session`` ran before it)."""
    found: Viewer = g.console_viewer
    return found


def check_csrf() -> None:
    """Every form that changes something carries the session's token: else 403."""
    sent = request.form.get(CSRF_FIELD, "").encode("utf-8", "surrogatepass")
    if not sent or not hmac.compare_digest(sent, viewer().csrf_token.encode()):
        abort(403, description="The form's security token is missing or wrong; nothing changed.")
