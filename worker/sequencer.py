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

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.orm import Session

from storage import merkle, tlog
from storage.canonical import event_leaf
from storage.db import Database
from storage.models import Event, LogTree, SequencerState
from storage.queries import event_document
from storage.settings import Settings

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


def _pending(session: Session, state: SequencerState, limit: int) -> tuple[list[Any], int]:
    """Up to ``limit`` events to number next, and the horizon below which that is all."""
    if session.get_bind().dialect.name == "postgresql":
        horizon = int(
            session.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
        )
        statement = (
            select(events)
            .where(
                tuple_(events.c.txid, events.c.id) > tuple_(state.txid, state.event_id),
                events.c.txid < horizon,
            )
            .order_by(events.c.txid, events.c.id)
            .limit(limit)
        )
        return list(session.execute(statement).all()), horizon
    horizon = int(session.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0)
    statement = (
        select(events)
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


def sequence_pending(
    database: Database, settings: Settings, now: datetime | None = None, wait: bool = True
) -> Sequenced:
    """Sequencer passes, one transaction each, until one finds nothing new, another run
    holds the lock (with ``wait=False``), or ``DRAIN_SECONDS`` have passed.

    ``wait=True`` (exports, the CLI, tests) waits for a pass in progress, then numbers what
    it left. The worker passes ``wait=False``: a run skipped for the lock leaves its events
    to the run holding it, which keeps taking new passes (each a fresh snapshot, seeing what
    committed during the last) while they find events, so a burst of commits is numbered
    without waiting for beat.
    """
    total = Sequenced()
    started = time.monotonic()
    while True:
        moment = now or datetime.now(UTC)
        with database.unit_of_work(write=True) as session:
            outcome = sequence_events(session, moment, wait=wait)
            session.commit()
        if not outcome.locked_out:
            outcome.checkpoints = sign_due_checkpoints_apart(database, settings, moment)
        total.events += outcome.events
        total.grown.update(outcome.grown)
        total.checkpoints += outcome.checkpoints
        total.locked_out = outcome.locked_out
        if outcome.locked_out or not outcome.events:
            return total
        if time.monotonic() - started > DRAIN_SECONDS:
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
