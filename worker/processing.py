"""Processing a message: the queued notifications it names, in as few transactions as possible.

The whole batch is applied in one transaction. If that fails for a reason other than a
transient database error, the message's own notifications are tried again without the
waiting ones it pulled in, then each alone, so that a failure is charged only to the
notification that causes it and one bad notification cannot hold back the others; it is
retried, and after ``max_attempts`` it becomes ``failed`` with its error (``auditlog
notifications retry`` queues it again).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from storage import state
from storage.db import Database
from storage.inbox import FAILED, QUEUED
from storage.models import Notification
from worker.recorder import record_notifications

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    processed: int = 0
    failed: int = 0
    to_retry: list[int] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.processed += other.processed
        self.failed += other.failed
        self.to_retry.extend(other.to_retry)


def lock_queued(session: Session, pks: Sequence[int]) -> list[Any]:
    """The still-queued notifications among ``pks``, locked, in clock order.

    A second delivery of the same message waits here for the first to commit and then
    finds nothing left to do: that is what makes re-delivery harmless.
    """
    table = Notification.__table__
    if state.on_postgresql(session):
        # Found by key alone, and kept if still queued here. Asked in SQL, ``status =
        # 'queued'`` lets the planner AND in the queued rows' partial index whenever its
        # statistics say that index is small, as they do of a freshly loaded inbox: every
        # message then read the whole index (120,000 entries, most of them dead, in the
        # benchmark) to lock its own thousand rows. A row another worker held is read
        # after that worker commits, so one it processed shows it here.
        columns = ", ".join(column.name for column in table.c)
        rows = state.driver_rows(
            session,
            f"SELECT {columns} FROM notifications WHERE pk = ANY(%s)"
            " ORDER BY occurred_at, sequence, pk FOR UPDATE",
            (list(pks),),
        )
        return [row for row in rows if row.status == QUEUED]
    return list(
        session.execute(
            select(table)  # plain rows: the ORM's identity map buys nothing here
            .where(table.c.pk.in_(list(pks)), table.c.status == QUEUED)
            .order_by(table.c.occurred_at, table.c.sequence, table.c.pk)
            .with_for_update()
        )
    )


#: A transaction takes its message's notifications and up to this many in all, counting
#: others of the same organisations already waiting.
CATCH_UP = 500


def lock_waiting(session: Session, org_ids: set[str], mine: set[int], limit: int) -> list[Any]:
    """Other queued notifications of these organisations that no other worker holds.

    Under a stream of single-notification requests this turns many one-row transactions
    into a few larger ones; each skipped message later finds its rows processed.
    """
    table = Notification.__table__
    rows = session.execute(
        select(table)
        # One that already failed is retried by its own message only: pulled into others'
        # batches it would make each of them fail and be redone.
        .where(
            table.c.status == QUEUED,
            table.c.attempts == 0,
            table.c.org_id.in_(sorted(org_ids)),
        )
        .order_by(table.c.pk)
        .limit(limit + len(mine))
        .with_for_update(skip_locked=True)
    )
    return [row for row in rows if row.pk not in mine][:limit]


def overdue(session: Session, before: datetime, limit: int) -> list[int]:
    """Queued notifications published before ``before`` that no worker holds, oldest first."""
    table = Notification.__table__
    return list(
        session.scalars(
            select(table.c.pk)
            .where(
                table.c.status == QUEUED,
                table.c.attempts == 0,
                table.c.enqueued_at < before,
            )
            .order_by(table.c.enqueued_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


#: How long one catch-up pass keeps taking batches of overdue notifications (beat's next
#: pass, a second later, goes on where it stopped).
CATCH_UP_SECONDS = 5.0

#: The PostgreSQL advisory lock that lets one catch-up pass run at a time.
CATCH_UP_LOCK = int.from_bytes(b"catch-up", "big") & 0x7FFFFFFFFFFFFFFF


@contextmanager
def _one_pass_at_a_time(database: Database) -> Iterator[bool]:
    """Whether this pass may run: on PostgreSQL a session lock on a connection in
    autocommit (no transaction held open, so the sequencer's horizon does not stall), for
    the whole pass including its one-by-one retries; elsewhere writers queue anyway."""
    if database.dialect != "postgresql":
        yield True
        return
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as guard:
        key = {"key": CATCH_UP_LOCK}
        if not guard.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
            yield False
            return
        try:
            yield True
        finally:
            guard.execute(text("SELECT pg_advisory_unlock(:key)"), key)


def catch_up_overdue(
    database: Database, max_attempts: int, now: datetime, overdue_after: timedelta
) -> Outcome:
    with _one_pass_at_a_time(database) as mine:
        if not mine:
            return Outcome()  # another worker's pass is at it: the next second's will do
        return _catch_up_overdue(database, max_attempts, now, overdue_after)


def _catch_up_overdue(
    database: Database, max_attempts: int, now: datetime, overdue_after: timedelta
) -> Outcome:
    """Process notifications whose message is overdue, without waiting for it.

    A message is lost for a while when the process that held it dies: Redis gives an
    unacknowledged message back only after the visibility timeout (an hour), and the
    sweeper republishes after ``REQUEUE_AFTER_SECONDS``. Beat runs this every second, so
    such notifications are recorded seconds after the loss instead. They are processed as a
    redelivered message is (``process_notifications``): locked again, those processed
    meanwhile left out, a failing batch tried one notification at a time. A message that
    was merely slow then finds its notifications processed and does nothing. Notifications
    that already failed once keep to their own message, which charges their failure to
    them; one that fails here is charged once and left to its message or the sweeper (this
    pass does not retry it). One pass runs at a time, so two cannot charge the same failure
    twice. A pass takes them ``CATCH_UP`` to a transaction until none that were overdue at
    ``now`` are left, or for ``CATCH_UP_SECONDS``: a dead worker's messages (a thousand
    notifications each) are recorded in one pass, not ``CATCH_UP`` a second.
    """
    total = Outcome()
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while True:
        with database.unit_of_work(write=True) as session:
            pks = overdue(session, now - overdue_after, CATCH_UP)
        if not pks:
            return total
        log.info("catching up %d overdue notifications", len(pks))
        total.add(process_notifications(database, pks, max_attempts, catch_up=False))
        # Each pk taken leaves the overdue set (processed, or charged an attempt), and
        # only those overdue at ``now`` qualify: the pass ends.
        if len(pks) < CATCH_UP or time.monotonic() >= deadline:
            return total


def process_notifications(
    database: Database, pks: Sequence[int], max_attempts: int, catch_up: bool = True
) -> Outcome:
    outcome = Outcome()
    pulled_in = False
    try:
        with database.unit_of_work(write=True) as session:
            batch = lock_queued(session, pks)
            if not batch:
                return outcome
            retrying = any(row.attempts for row in batch)
            if catch_up and not retrying and len(batch) < CATCH_UP:
                mine = {row.pk for row in batch}
                orgs = {row.org_id for row in batch}
                waiting = lock_waiting(session, orgs, mine, CATCH_UP - len(batch))
                pulled_in = bool(waiting)
                batch = sorted(
                    batch + waiting, key=lambda row: (row.occurred_at, row.sequence, row.pk)
                )
            record_notifications(session, batch, datetime.now(UTC))
            session.commit()
            outcome.processed = len(batch)
            log.info(
                "recorded %d notifications (%d of this message's)",
                len(batch),
                len(pks),
                extra={
                    "notifications": [row.pk for row in batch],
                    "request_ids": request_ids_of(batch),
                },
            )
            return outcome
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        if pulled_in:
            # Any of the notifications pulled in may be the one at fault: try the message's
            # own alone before charging anything to them. The others keep their own messages.
            log.warning("catch-up batch failed; retrying the message alone", exc_info=True)
            return process_notifications(database, pks, max_attempts, catch_up=False)
        if len(pks) == 1:
            return _record_failure(database, pks[0], max_attempts, outcome, exc)
        log.warning("batch of %d failed; processing one by one", len(pks), exc_info=True)
    return one_by_one(database, pks, max_attempts)


def one_by_one(database: Database, pks: Sequence[int], max_attempts: int) -> Outcome:
    """Each notification in a transaction of its own: a failure is charged to its cause."""
    outcome = Outcome()
    for pk in pks:
        outcome.add(process_notifications(database, [pk], max_attempts, catch_up=False))
    return outcome


def request_ids_of(rows: Sequence[Any]) -> list[str]:
    """The webhook requests that delivered these notifications, in first-seen order: a
    catch-up batch holds several requests' notifications, and its log lines name them all."""
    seen: dict[str, None] = {}
    for row in rows:
        request_id = (row.payload or {}).get("request_id")
        if request_id:
            seen.setdefault(request_id, None)
    return list(seen)


def _record_failure(
    database: Database, pk: int, max_attempts: int, outcome: Outcome, exc: Exception
) -> Outcome:
    log.error("notification %s could not be processed", pk, exc_info=exc)
    error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:2000]
    with database.unit_of_work(write=True) as session:
        notification = session.get(Notification, pk, with_for_update=True)
        if notification is None or notification.status != QUEUED:
            return outcome
        attempts = notification.attempts + 1
        failed = attempts >= max_attempts
        session.execute(
            update(Notification)
            .where(Notification.pk == pk)
            .values(attempts=attempts, error=error, status=FAILED if failed else QUEUED)
        )
        session.commit()
    if failed:
        outcome.failed += 1
    else:
        outcome.to_retry.append(pk)
    return outcome
