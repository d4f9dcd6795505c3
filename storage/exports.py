"""Export rows: created by the API, advanced by the worker, expired by beat.

``queued`` and ``running`` are the only states an export leaves: every move out of them is
an UPDATE conditional on the status (``transition``), so of two builders, or a build and
a late failure, only the first moves the export and a ``succeeded`` one stays succeeded.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from storage.credentials import new_id
from storage.models import Event, Export, LogLeaf
from storage.queries import EventFilter, latest_event_id

QUEUED, RUNNING, SUCCEEDED, FAILED, EXPIRED = "queued", "running", "succeeded", "failed", "expired"
#: The states a build may still move an export out of.
ACTIVE = (QUEUED, RUNNING)
#: What an export's file holds: CSV cells, or one event object per line.
FORMATS = ("csv", "jsonl")
MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def create_export(
    session: Session,
    org_id: str,
    filters: dict[str, Any],
    flt: EventFilter,
    now: datetime,
    format: str = "csv",
) -> Export:
    """A queued export of the matching events recorded up to now (its snapshot).

    ``requested_xmax`` is the sequencer's mark taken in this transaction: once the
    sequencer's horizon has passed it, every event recorded before now has its seq, and
    the build picks the tree size that holds exactly those (``snapshot_size``).
    """
    from worker.sequencer import request_mark  # the sequencer owns what a mark means

    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}")
    export = Export(
        id=new_id("exp"),
        org_id=org_id,
        filters=filters,
        query=flt.to_json(),
        status=QUEUED,
        format=format,
        max_event_id=latest_event_id(session),
        requested_xmax=request_mark(session),
        rows_written=0,
        created_at=now,
        heartbeat_at=now,
    )
    session.add(export)
    session.flush()
    return export


def snapshot_size(session: Session, org_id: str, mark: int) -> int:
    """The smallest tree size of the organisation's log holding every event before ``mark``.

    Call it once the sequencer's horizon has passed ``mark``. The sequencer numbers events
    in (txid, id) order on PostgreSQL and in id order on SQLite, and ``mark`` is a txid
    bound there and an id bound here, so the events before the mark are a prefix of the
    log: the answer is the seq of the last of them (0 if none). Events committed later
    are beyond it and stay out of the export. The walk goes down the primary key of
    ``log_leaves`` from the end and stops at the first such event.
    """
    leaves, events = LogLeaf.__table__, Event.__table__
    if session.get_bind().dialect.name == "postgresql":
        before = events.c.txid < mark
    else:
        before = events.c.id <= mark
    found = session.scalar(
        select(leaves.c.seq)
        .select_from(leaves.join(events, events.c.id == leaves.c.event_id))
        .where(leaves.c.org_id == org_id, before)
        .order_by(leaves.c.seq.desc())
        .limit(1)
    )
    return int(found or 0)


def find_export(session: Session, org_id: str, export_id: str) -> Export | None:
    export = session.get(Export, export_id)
    return export if export is not None and export.org_id == org_id else None


def list_exports(session: Session, org_id: str) -> list[Export]:
    return list(
        session.scalars(
            select(Export)
            .where(Export.org_id == org_id)
            .order_by(Export.created_at.desc(), Export.id.desc())
        )
    )


def transition(
    session: Session, export_id: str, from_statuses: Collection[str], **values: Any
) -> bool:
    """Set ``values`` only if the export's status is one of ``from_statuses``; whether it was.

    The condition is in the UPDATE itself: on PostgreSQL a second writer waits for the
    first's commit and then re-checks the row, on SQLite writers are serialised, so of
    two racing moves exactly one happens.
    """
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Export)
            .where(Export.id == export_id, Export.status.in_(list(from_statuses)))
            .values(**values)
        ),
    )
    return result.rowcount == 1


def status_at(export: Export, now: datetime) -> str:
    """The status as clients see it: a succeeded export past ``expires_at`` is expired.

    Beat deletes the files of such exports and stores ``expired`` on its next sweep; until
    then the export is already expired for every reader.
    """
    if export.status == SUCCEEDED and export.expires_at is not None and export.expires_at <= now:
        return EXPIRED
    return export.status


def claim_stalled(session: Session, now: datetime, silent_for: timedelta) -> list[str]:
    """Exports queued or running whose task has not been heard of for ``silent_for``,
    claimed for a restart by setting their heartbeat to now.

    The condition is in the UPDATE itself, so of two sweeps at once each export is claimed
    by one: on PostgreSQL the second waits for the first's row locks and then finds the
    heartbeat fresh; on SQLite writers are serialised.
    """
    result = session.execute(
        update(Export)
        .where(
            Export.status.in_([QUEUED, RUNNING]),
            or_(Export.heartbeat_at.is_(None), Export.heartbeat_at < now - silent_for),
        )
        .values(heartbeat_at=now)
        .returning(Export.id)
    )
    return list(result.scalars())


def claim_expired(session: Session, now: datetime) -> list[Export]:
    """Succeeded exports past their time, marked expired (the caller deletes the files)."""
    expired = list(
        session.scalars(
            select(Export)
            .where(Export.status == SUCCEEDED, Export.expires_at <= now)
            .with_for_update(skip_locked=True)
        )
    )
    for export in expired:
        export.status = EXPIRED
    return expired
