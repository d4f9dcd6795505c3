"""Console links: minted by an API key (or the CLI), opened once within minutes.

A link's token is signed with ``SECRET_KEY`` and names a row of ``console_links``; opening it
marks the row used in one conditional UPDATE, so a link races itself at most once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage import access
from storage.credentials import new_id, signing_keys
from storage.models import ApiKey, ConsoleLink

#: How long a link can be opened; a session it starts lasts at most SESSION_LIFETIME.
LINK_LIFETIME = timedelta(minutes=5)
SESSION_LIFETIME = timedelta(hours=8)
PERMISSIONS = ("export", "restore")


@dataclass(frozen=True)
class Grant:
    """What an opened link lets its viewer see and do, in one organisation."""

    org_id: str
    scope: dict[str, Any]
    permissions: tuple[str, ...]
    viewer: dict[str, Any] | None
    #: The key that made the link, if an API key did: the session lasts no longer than it.
    key_id: str | None = None


class LinkRejected(Exception):
    """The link was altered, already used, or has expired."""


def _serializer(secret_keys: str | Sequence[str]) -> URLSafeSerializer:
    return URLSafeSerializer(signing_keys(secret_keys), salt="auditlog.console-link.v1")


def create_link(
    session: Session,
    secret_keys: str | Sequence[str],
    org_id: str,
    scope: dict[str, Any],
    permissions: list[str],
    viewer: dict[str, Any] | None,
    now: datetime,
    performed_by: dict[str, Any] | None = None,
    ip_address: str | None = None,
    request_id: str | None = None,
    key_id: str | None = None,
) -> tuple[str, datetime]:
    """A new link's token and the moment it stops opening."""
    link = ConsoleLink(
        id=new_id("cl"),
        org_id=org_id,
        scope=scope,
        permissions=sorted(set(permissions)),
        viewer=viewer,
        created_at=now,
        expires_at=now + LINK_LIFETIME,
        key_id=key_id,
    )
    session.add(link)
    session.flush()
    access.record(
        session,
        org_id,
        "console.link_created",
        now,
        performed_by=performed_by or access.CLI,
        subject_id=link.id,
        ip_address=ip_address,
        request_id=request_id,
        details={"scope": scope, "permissions": link.permissions, "viewer": viewer},
    )
    return _serializer(secret_keys).dumps(link.id), link.expires_at


def open_link(
    session: Session,
    secret_keys: str | Sequence[str],
    token: str,
    now: datetime,
    ip_address: str | None = None,
    request_id: str | None = None,
) -> Grant:
    """Use the link once: the caller commits; a second opening finds it used."""
    try:
        link_id = _serializer(secret_keys).loads(token)
    except BadSignature:
        raise LinkRejected("this link was altered") from None
    claimed = session.execute(
        update(ConsoleLink)
        .where(
            ConsoleLink.id == link_id,
            ConsoleLink.used_at.is_(None),
            ConsoleLink.expires_at > now,
        )
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise LinkRejected("this link was already used or has expired")
    link = session.get(ConsoleLink, link_id)
    assert link is not None
    access.record(
        session,
        link.org_id,
        "console.session_opened",
        now,
        performed_by={"type": "console", "viewer": link.viewer, "key_id": link.key_id},
        subject_id=link.id,
        ip_address=ip_address,
        request_id=request_id,
        details={"scope": link.scope, "permissions": list(link.permissions)},
    )
    return Grant(
        link.org_id, dict(link.scope), tuple(link.permissions), link.viewer, key_id=link.key_id
    )


def key_is_live(session: Session, key_id: str) -> bool:
    """Whether the key that opened a session is still unrevoked."""
    return (
        session.scalar(select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
        is not None
    )
