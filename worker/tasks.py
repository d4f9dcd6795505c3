"""Celery tasks: thin entry points that take ids, open one unit of work and call one function."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import InterfaceError, OperationalError

from storage import inbox
from worker import processing

#: Transient database trouble (server down, deadlock, lock timeout): retry with backoff.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
MAX_TRANSIENT_RETRIES = 20
PUBLISH_CHUNK = 1000


def backoff(retries: int) -> float:
    return float(min(60, 2**retries))


def register(app: Celery) -> None:
    from worker.queue import PROCESS_NOTIFICATIONS, REQUEUE_STALE, database_for, publisher

    @app.task(name=PROCESS_NOTIFICATIONS, bind=True, max_retries=MAX_TRANSIENT_RETRIES)
    def process_notifications(self: Task, pks: Sequence[int]) -> dict[str, Any]:
        """Diff and record a batch of notifications (one message per webhook request)."""
        settings = app.auditlog_settings
        try:
            outcome = processing.process_notifications(
                database_for(app), pks, max_attempts=settings.max_attempts
            )
        except TRANSIENT_ERRORS as exc:
            # Past the last retry the notifications stay queued and the sweeper finds them.
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        if outcome.to_retry:
            raise self.retry(
                args=[outcome.to_retry], countdown=backoff(self.request.retries), max_retries=None
            )
        return {"processed": outcome.processed, "failed": outcome.failed}

    @app.task(name=REQUEUE_STALE)
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
        publish = publisher(app)
        for start in range(0, len(pks), PUBLISH_CHUNK):
            publish(pks[start : start + PUBLISH_CHUNK])
        return {"requeued": len(pks)}
