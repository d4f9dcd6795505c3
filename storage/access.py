"""The access log: who did what to the log itself.

Events say what happened to an organisation's records; this says what was done with the
log: keys created and revoked, exports created and downloaded, console links made and
sessions opened, values restored, sources created, rotated and disabled. An entry is
written in the transaction of the change it records (a download, which changes nothing,
in its own), so an entry exists exactly when the thing was done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from storage.models import AccessEntry
from storage.timefmt import rfc3339

#: What an entry's ``action`` can be.
ACTIONS = (
    "key.created",
    "key.revoked",
    "source.created",
    "source.secret_rotated",
    "source.disabled",
    "export.created",
    "export.downloaded",
    "console.link_created",
    "console.session_opened",
    "entity.restored",
)
#: ``performed_by`` of what the ``auditlog`` command does (an operator on a host).
CLI: dict[str, Any] = {"type": "cli"}


def record(
    session: Session,
    org_id: str,
    action: str,
    now: datetime,
    *,
    performed_by: dict[str, Any],
    subject_id: str | None = None,
    ip_address: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an entry to the session's transaction (the caller commits)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown access-log action {action!r}")
    session.add(
        AccessEntry(
            org_id=org_id,
            occurred_at=now,
            action=action,
            subject_id=subject_id,
            performed_by=performed_by,
            ip_address=ip_address,
            request_id=request_id,
            details=details or {},
        )
    )


def page(
    session: Session,
    org_id: str,
    limit: int,
    after: tuple[datetime, int] | None = None,
    actions: tuple[str, ...] = (),
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AccessEntry]:
    """Up to ``limit`` entries, newest first, strictly after the cursor ``(occurred_at, id)``."""
    table = AccessEntry
    query = select(table).where(table.org_id == org_id)
    if actions:
        query = query.where(table.action.in_(actions))
    if since is not None:
        query = query.where(table.occurred_at >= since)
    if until is not None:
        query = query.where(table.occurred_at < until)
    if after is not None:
        moment, pk = after
        query = query.where(
            or_(table.occurred_at < moment, and_(table.occurred_at == moment, table.id < pk))
        )
    query = query.order_by(table.occurred_at.desc(), table.id.desc()).limit(limit)
    return list(session.scalars(query))


def document(entry: AccessEntry) -> dict[str, Any]:
    return {
        "id": f"acc_{entry.id}",
        "occurred_at": rfc3339(entry.occurred_at),
        "action": entry.action,
        "subject_id": entry.subject_id,
        "performed_by": entry.performed_by,
        "ip_address": entry.ip_address,
        "request_id": entry.request_id,
        "details": entry.details,
    }
