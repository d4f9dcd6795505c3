"""Celery tasks: thin entry points that take ids, open one unit of work and call one function."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import InterfaceError, OperationalError

from storage import exports, inbox
from worker import exports as worker_exports
from worker import processing, sequencer

log = logging.getLogger(__name__)

#: Transient database trouble (server down, deadlock, lock timeout): retry with backoff.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
MAX_TRANSIENT_RETRIES = 20
PUBLISH_CHUNK = 1000
#: An export silent for this many REQUEUE_AFTER_SECONDS is presumed lost and restarted.
EXPORT_STALL_FACTOR = 10
#: A notification published this long ago and still queued is taken by the catch-up pass.
#: A message normally finds its notifications within a fraction of a second; under a
#: backlog the pass only takes over work that the queue's messages would do anyway.
OVERDUE_AFTER_SECONDS = 2


def backoff(retries: int) -> float:
    return float(min(60, 2**retries))


def register(app: Celery) -> None:
    from worker.queue import (
        BUILD_EXPORT,
        CATCH_UP_OVERDUE,
        EXPIRE_EXPORTS,
        PROCESS_NOTIFICATIONS,
        REQUEUE_STALE,
        SEQUENCE_LOG,
        database_for,
        export_starter,
        publisher,
    )

    # One of each for the process's life: each keeps a broker connection (worker.queue).
    publish = publisher(app)
    start_export = export_starter(app)

    @app.task(
        name=PROCESS_NOTIFICATIONS, shared=False, bind=True, max_retries=MAX_TRANSIENT_RETRIES
    )
    def process_notifications(
        self: Task, pks: Sequence[int], request_id: str | None = None
    ) -> dict[str, Any]:
        """Diff and record a batch of notifications (one message per webhook request).

        ``request_id`` is the webhook request's; the task's log lines carry it (set by
        ``worker.queue`` around every task), and a retry keeps it."""
        settings = app.auditlog_settings
        try:
            outcome = processing.process_notifications(
                database_for(app), pks, max_attempts=settings.max_attempts
            )
        except TRANSIENT_ERRORS as exc:
            # Past the last retry the notifications stay queued and the sweeper finds them.
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        if outcome.processed and settings.sequencer_enabled:
            # Right after the commit, so that new events get their seq within moments;
            # skipped if another pass holds the lock (beat's pass is the backstop, and takes
            # over if this one fails: the notifications are processed either way).
            try:
                sequencer.sequence_pending(database_for(app), settings, wait=False)
            except TRANSIENT_ERRORS:
                log.warning(
                    "sequencing after processing failed; beat's pass retries", exc_info=True
                )
        if outcome.to_retry:
            raise self.retry(
                args=[outcome.to_retry], countdown=backoff(self.request.retries), max_retries=None
            )
        return {"processed": outcome.processed, "failed": outcome.failed}

    @app.task(name=CATCH_UP_OVERDUE, shared=False)
    def catch_up_overdue() -> dict[str, int]:
        """Record notifications whose message is overdue (its worker died holding it)."""
        settings = app.auditlog_settings
        try:
            outcome = processing.catch_up_overdue(
                database_for(app),
                settings.max_attempts,
                datetime.now(UTC),
                timedelta(seconds=OVERDUE_AFTER_SECONDS),
            )
        except TRANSIENT_ERRORS:
            # The database is away: the next second's pass tries again.
            log.warning("the catch-up pass could not reach the database", exc_info=True)
            return {"processed": 0, "failed": 0}
        # Their events get a seq from beat's sequence-log pass, due within the second.
        return {"processed": outcome.processed, "failed": outcome.failed}

    @app.task(name=SEQUENCE_LOG, shared=False)
    def sequence_log() -> dict[str, int]:
        """Number committed events in each organisation's log; sign checkpoints that are due."""
        settings = app.auditlog_settings
        if not settings.sequencer_enabled:
            return {"sequenced": 0, "checkpoints": 0}
        outcome = sequencer.sequence_pending(database_for(app), settings, wait=False)
        return {"sequenced": outcome.events, "checkpoints": len(outcome.checkpoints)}

    @app.task(name=REQUEUE_STALE, shared=False)
    def requeue_stale_notifications() -> dict[str, int]:
        """Re-publish notifications left queued, e.g. when the broker was down at ingest."""
        settings = app.auditlog_settings
        database = database_for(app)
        with database.unit_of_work(write=True) as session:
            pks = inbox.claim_stale(
                session,
                datetime.now(UTC),
                timedelta(seconds=settings.requeue_after_seconds),
                limit=50 * PUBLISH_CHUNK,
            )
            session.commit()
        for start in range(0, len(pks), PUBLISH_CHUNK):
            publish(pks[start : start + PUBLISH_CHUNK])

        # Exports whose task went silent (message lost, worker killed) start again.
        now = datetime.now(UTC)
        silent_for = timedelta(seconds=EXPORT_STALL_FACTOR * settings.requeue_after_seconds)
        with database.unit_of_work(write=True) as session:
            stalled = exports.claim_stalled(session, now, silent_for)
            session.commit()
        for export_id in stalled:
            start_export(export_id)
        return {"requeued": len(pks), "exports_restarted": len(stalled)}

    @app.task(name=BUILD_EXPORT, shared=False, bind=True, max_retries=5)
    def build_export(self: Task, export_id: str) -> str:
        """Write one export's CSV file."""
        settings = app.auditlog_settings
        database = database_for(app)
        try:
            return worker_exports.build_export(
                database,
                export_id,
                settings.export_dir,
                settings.export_ttl_seconds,
                settings=settings,
            )
        except TRANSIENT_ERRORS as exc:
            if self.request.retries >= self.max_retries:
                worker_exports.fail_export(database, export_id, str(exc), datetime.now(UTC))
                raise
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        except Exception as exc:
            worker_exports.fail_export(database, export_id, repr(exc), datetime.now(UTC))
            raise

    @app.task(name=EXPIRE_EXPORTS, shared=False)
    def expire_exports() -> dict[str, int]:
        """Delete export files past EXPORT_TTL_SECONDS and mark those exports expired."""
        return {"expired": worker_exports.expire_exports(database_for(app), datetime.now(UTC))}
