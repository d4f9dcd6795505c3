"""The sequencer: gives committed events their place in their organisation's log.

Event ids come from a sequence taken at insert time, so on PostgreSQL they commit out of
order; a reader that followed ids would skip an event whose transaction was still open.
Every event records its writing transaction's id (``txid``). The sequencer, holding an
advisory lock so that one runs at a time, takes the events whose transaction is older than
``pg_snapshot_xmin(pg_current_snapshot())`` (every such transaction has ended: nothing with
a lower txid can still appear), in (txid, id) order after its watermark, and gives each the
next ``seq`` of its organisation, its leaf hash and the tree nodes it completes, all in one
transaction. On SQLite writers are serial and ids are handed out inside the write
transaction, so id order is commit order and the watermark is an id.

The processing task runs it right after each commit (skipping if another run holds the
lock); beat runs it every second as a backstop, and signs checkpoints that are due.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.adapt import Loader
from psycopg.types.net import InetLoader
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from storage import merkle, tlog
from storage.canonical import event_leaf
from storage.db import Database
from storage.models import Event, LogTree, SequencerState
from storage.queries import event_document
from storage.settings import Settings
from storage.state import driver_rows

events = Event.__table__
log = logging.getLogger(__name__)

#: The advisory lock that makes one sequencer run at a time ("auditlog" in ASCII).
LOCK_KEY = 0x0061756469746C6F67 & 0x7FFFFFFFFFFFFFFF
#: Events numbered per transaction at most; a longer backlog takes several runs.
BATCH = 5000
#: How long one caller keeps draining commits that land while it sequences.
DRAIN_SECONDS = 2.0
#: A tree that grew is checkpointed at least this often.
CHECKPOINT_EVERY = timedelta(seconds=10)


@dataclass
class Sequenced:
    events: int = 0
    grown: dict[str, int] = field(default_factory=dict)
    checkpoints: list[tuple[str, int]] = field(default_factory=list)
    locked_out: bool = False


def _take_lock(session: Session, wait: bool) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True  # the caller's BEGIN IMMEDIATE already excludes every other writer
    if wait:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY}))


#: What a leaf is made of (``event_document``), and what the pass orders and groups by:
#: every column of an event but where its notification put it.
LEAF_COLUMNS = tuple(
    column.name for column in events.c if column.name not in ("notification_pk", "position")
)

#: PostgreSQL: the pass's events, read on the session's psycopg connection. SQLAlchemy's
#: result processing (every timestamp converted to UTC, every address to text, every row
#: built) was a quarter of a pass. ``event_document`` puts instants in UTC itself, and
#: ``_AddressAsText`` reads addresses as the column type did, so the leaves are the same
#: bytes (``tests/integration/test_sequencer.py`` holds them equal to the API's documents
#: for addresses, instants and numbers of every form).
PENDING = (
    f"SELECT {', '.join(LEAF_COLUMNS)} FROM events"
    " WHERE (txid, id) > (%s, %s) AND txid < %s ORDER BY txid, id LIMIT %s"
)


class _AddressAsText(Loader):
    """``inet`` as the API reads it (``storage.types.IPAddress``): psycopg's address, as text."""

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._address = InetLoader(oid, context)

    def load(self, data: Any) -> str:
        return str(self._address.load(data))


def _pending(session: Session, state: SequencerState, limit: int) -> tuple[list[Any], int]:
    """Up to ``limit`` events to number next, and the horizon below which that is all."""
    if session.get_bind().dialect.name == "postgresql":
        horizon = int(
            session.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
        )
        params = (state.txid, state.event_id, horizon, limit)
        return driver_rows(session, PENDING, params, {"inet": _AddressAsText}), horizon
    horizon = int(session.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0)
    statement = (
        select(*(events.c[name] for name in LEAF_COLUMNS))
        .where(events.c.id > state.event_id, events.c.id <= horizon)
        .order_by(events.c.id)
        .limit(limit)
    )
    return list(session.execute(statement).all()), horizon


def _state(session: Session) -> SequencerState:
    state = session.get(SequencerState, 1, with_for_update=True)
    if state is None:
        state = SequencerState(id=1, txid=0, event_id=0, horizon=0)
        session.add(state)
        session.flush()
    return state


def _grow(session: Session, org_id: str, rows: list[Any], now: datetime) -> int:
    """Append ``rows`` (in order) to the organisation's tree; return its new size."""
    tree = tlog.tree_of(session, org_id, lock=True)
    if tree is None:
        tree = LogTree(
            org_id=org_id, size=0, root_hash=merkle.EMPTY_ROOT, updated_at=now, checkpoint_size=0
        )
        session.add(tree)
        session.flush()
    size = tree.size
    placed = []
    hashes = []
    for offset, row in enumerate(rows, start=1):
        seq = size + offset
        digest = merkle.leaf_hash(event_leaf(event_document(row, seq=seq)))
        placed.append((seq, row.id, digest))
        hashes.append(digest)
    # The old tree's right edge: the left siblings the new leaves complete, and with the
    # nodes they create all the new root needs.
    reader = tlog.reader_of(session, org_id, merkle.root_nodes(size))
    created = merkle.appended_nodes(size, hashes, reader)
    reader.remember(created)
    tlog.save_leaves(session, org_id, placed)
    tlog.save_nodes(session, org_id, created)
    new_size = size + len(rows)
    session.execute(
        update(LogTree)
        .where(LogTree.org_id == org_id)
        .values(size=new_size, root_hash=merkle.root(new_size, reader), updated_at=now)
    )
    return new_size


def sequence_events(
    session: Session, now: datetime, limit: int = BATCH, wait: bool = True
) -> Sequenced:
    """Number the committed events not yet numbered; the caller commits.

    ``wait=False`` gives up at once when another pass holds the lock (``locked_out``).
    """
    outcome = Sequenced()
    if not _take_lock(session, wait):
        outcome.locked_out = True
        return outcome
    state = _state(session)
    rows, horizon = _pending(session, state, limit)
    if len(rows) < limit:
        state.horizon = max(state.horizon, horizon)
    elif rows:
        # A full batch ends inside the last row's transaction at the latest: everything
        # before it is numbered, so the horizon moves under a backlog too.
        last = rows[-1]
        reached = (
            int(last.txid or 0) if session.get_bind().dialect.name == "postgresql" else last.id
        )
        state.horizon = max(state.horizon, reached)
    if not rows:
        return outcome
    by_org: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_org[row.org_id].append(row)
    for org_id in sorted(by_org):
        outcome.grown[org_id] = _grow(session, org_id, by_org[org_id], now)
    last = rows[-1]
    state.txid = int(last.txid or 0)
    state.event_id = int(last.id)
    outcome.events = len(rows)
    return outcome


def sign_due_checkpoints(
    session: Session, settings: Settings, now: datetime, every: timedelta = CHECKPOINT_EVERY
) -> list[tuple[str, int]]:
    """Sign a checkpoint of every tree that grew since its last one, signed ``every`` ago."""
    signed = []
    for org_id, size in tlog.due_for_checkpoint(session, now - every):
        tlog.sign_checkpoint(session, settings, org_id, size, now)
        signed.append((org_id, size))
    return signed


def sign_due_checkpoints_apart(
    database: Database, settings: Settings, now: datetime
) -> list[tuple[str, int]]:
    """``sign_due_checkpoints``, each organisation in a transaction of its own.

    A checkpoint that cannot be signed (a tree inconsistent with its last checkpoint, a key
    that does not open) is logged and left for the next pass; it never undoes sequencing,
    nor another organisation's checkpoint.
    """
    signed = []
    with database.unit_of_work() as session:
        due = tlog.due_for_checkpoint(session, now - CHECKPOINT_EVERY)
    for org_id, size in due:
        try:
            with database.unit_of_work(write=True) as session:
                tlog.sign_checkpoint(session, settings, org_id, size, now)
                session.commit()
            signed.append((org_id, size))
        except Exception:
            log.exception("could not sign %s's checkpoint of size %d", org_id, size)
    return signed


def anything_pending(database: Database) -> bool:
    """Whether a pass would find events to number now: one read, no lock, nothing written.

    What ``sequence_pending`` asks before another pass: a pass that finds nothing still
    takes the lock and writes its horizon, and so waits for the write-ahead log to reach
    the disk, where this question does neither.
    """
    with database.unit_of_work() as session:
        state = session.get(SequencerState, 1)
        if state is None:
            return True  # never run: the pass sets up its state
        if session.get_bind().dialect.name != "postgresql":
            statement = select(events.c.id).where(events.c.id > state.event_id).limit(1)
            return session.execute(statement).first() is not None
        # Ordered as the pass reads them, so that the (txid, id) index answers, whatever the
        # statistics of a table loaded moments ago say.
        query = (
            "SELECT 1 AS found FROM events WHERE (txid, id) > (%s, %s)"
            " AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            " ORDER BY txid, id LIMIT 1"
        )
        return bool(driver_rows(session, query, (state.txid, state.event_id)))


def sequence_pending(
    database: Database, settings: Settings, now: datetime | None = None, wait: bool = True
) -> Sequenced:
    """Sequencer passes, one transaction each, until none is left to find anything new,
    another run holds the lock (with ``wait=False``), or ``DRAIN_SECONDS`` have passed;
    then the checkpoints that are due are signed.

    ``wait=True`` (exports, the CLI, tests) waits for a pass in progress, then numbers what
    it left. The worker passes ``wait=False``: a run skipped for the lock leaves its events
    to the run holding it, which keeps taking new passes (each a fresh snapshot, seeing what
    committed during the last) while there are events to find, so a burst of commits is
    numbered without waiting for beat. Whether there are is asked first
    (``anything_pending``): the worker runs this after every batch it commits, and an
    empty pass after each was most of the sequencer's cost when few events are new. A
    caller that waits (an export waiting for the horizon to pass its mark) takes that
    last pass: a pass that finds nothing still moves the horizon.
    """
    total = Sequenced()
    started = time.monotonic()
    while True:
        moment = now or datetime.now(UTC)
        with database.unit_of_work(write=True) as session:
            outcome = sequence_events(session, moment, wait=wait)
            session.commit()
        total.events += outcome.events
        total.grown.update(outcome.grown)
        total.locked_out = outcome.locked_out
        if outcome.locked_out and not total.events:
            return total  # the run holding the lock signs what is due
        if outcome.locked_out or not outcome.events:
            break
        if time.monotonic() - started > DRAIN_SECONDS:
            break
        if not wait and not anything_pending(database):
            break  # the worker's run; a waiting caller's next pass also moves the horizon
    total.checkpoints = sign_due_checkpoints_apart(database, settings, moment)
    return total


def horizon(session: Session) -> int:
    """Below this (a transaction id on PostgreSQL, an event id on SQLite) all is sequenced."""
    state = session.get(SequencerState, 1)
    return state.horizon if state is not None else 0


def request_mark(session: Session) -> int:
    """What ``horizon`` must pass for every event recorded before now to be sequenced."""
    if session.get_bind().dialect.name == "postgresql":
        return int(
            session.scalar(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"))
        )
    return int(session.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0)
