"""Every periodic task of beat's schedule is safe to run twice at once.

Two beats may overlap for a moment (a holder paused past its lock's TTL), and a task a
worker took may be redelivered; so each task of ``worker.queue``'s schedule is run here
by two threads released together, on SQLite and PostgreSQL, and the outcome must be that
of one run.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from storage.models import Event, Export, LogLeaf, Notification
from tests.e2e.test_exports import stored_chunks
from tests.e2e.test_read_api import auth, deliver, post_signed
from tests.factories import make_tenant, notification
from worker import processing
from worker import queue as worker_queue
from worker.exports import build_export


def twice_at_once(task: Callable[[], Any]) -> list[Any]:
    """Run ``task`` in two threads that start together; both results (or the first error)."""
    barrier = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(task())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    assert len(results) == 2
    return results


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, value: Any) -> None:
        with self.lock:
            self.calls.append(value)


@pytest.fixture
def celery(settings, database, monkeypatch):
    """The worker's Celery app on the test's database, publishing into recorders."""
    published, started = Recorder(), Recorder()
    monkeypatch.setattr(worker_queue, "publisher", lambda app: published)
    monkeypatch.setattr(worker_queue, "export_starter", lambda app: started)
    tuned = dataclasses.replace(settings, requeue_after_seconds=1)
    app = worker_queue.create_celery(tuned)
    worker_queue._databases[tuned.database_url] = database
    yield app, published, started
    worker_queue._databases.pop(tuned.database_url, None)


def task(app, name: str) -> Callable[[], Any]:
    return lambda: app.tasks[name].run()


class TestEachScheduledTaskTwiceAtOnce:
    def test_the_schedule_is_these_four_tasks(self, celery):
        app, _, _ = celery
        assert {entry["task"] for entry in app.conf.beat_schedule.values()} == {
            worker_queue.REQUEUE_STALE,
            worker_queue.CATCH_UP_OVERDUE,
            worker_queue.SEQUENCE_LOG,
            worker_queue.EXPIRE_EXPORTS,
        }

    def test_the_requeue_sweep_records_each_stale_notification_once(
        self, celery, client, database, settings, publisher
    ):
        app, published, _ = celery
        tenant = make_tenant(database, settings)
        payloads = [notification("person", f"p{i}") for i in range(30)]
        assert post_signed(client, tenant, {"notifications": payloads}).status_code == 202
        publisher.messages.clear()  # the broker was down: only the sweeper will publish them
        with database.unit_of_work(write=True) as session:
            session.execute(
                update(Notification).values(enqueued_at=datetime.now(UTC) - timedelta(hours=1))
            )
            session.commit()

        results = twice_at_once(task(app, worker_queue.REQUEUE_STALE))
        assert sum(result["requeued"] for result in results) >= 30
        for pks in list(published.calls):
            processing.process_notifications(database, pks, max_attempts=1)
        with database.unit_of_work() as session:
            statuses = session.execute(
                select(Notification.status, func.count()).group_by(Notification.status)
            ).all()
            events = session.scalar(select(func.count()).select_from(Event))
        assert dict(statuses) == {"processed": 30}
        assert events == 30  # one "person created" each, however often they were published

    def test_the_catch_up_pass_records_each_overdue_notification_once(
        self, celery, client, database, settings, publisher
    ):
        app, _, _ = celery
        tenant = make_tenant(database, settings)
        payloads = [notification("person", f"p{i}") for i in range(30)]
        assert post_signed(client, tenant, {"notifications": payloads}).status_code == 202
        lost = publisher.messages.pop()  # the worker holding the message died
        with database.unit_of_work(write=True) as session:
            session.execute(
                update(Notification).values(enqueued_at=datetime.now(UTC) - timedelta(minutes=1))
            )
            session.commit()

        results = twice_at_once(task(app, worker_queue.CATCH_UP_OVERDUE))
        assert sum(result["processed"] for result in results) == 30
        # The message, redelivered an hour later, finds nothing left to do.
        assert processing.process_notifications(database, lost, max_attempts=1).processed == 0
        with database.unit_of_work() as session:
            statuses = session.execute(
                select(Notification.status, func.count()).group_by(Notification.status)
            ).all()
            events = session.scalar(select(func.count()).select_from(Event))
        assert dict(statuses) == {"processed": 30}
        assert events == 30

    def test_the_stalled_export_sweep_restarts_each_export_once(
        self, celery, client, database, settings
    ):
        app, _, started = celery
        tenant = make_tenant(database, settings)
        ids = [
            client.post("/v1/exports", json={}, headers=auth(tenant)).json["id"] for _ in range(5)
        ]
        with database.unit_of_work(write=True) as session:
            session.execute(
                update(Export).values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
            )
            session.commit()
        results = twice_at_once(task(app, worker_queue.REQUEUE_STALE))
        assert sorted(started.calls) == sorted(ids)
        assert sum(result["exports_restarted"] for result in results) == 5
        # Freshly claimed: the next sweep leaves them to the builds it started.
        assert app.tasks[worker_queue.REQUEUE_STALE].run()["exports_restarted"] == 0

    def test_the_sequencer_pass_numbers_each_event_once(
        self, celery, client, database, settings, publisher
    ):
        app, _, _ = celery
        tenant = make_tenant(database, settings)
        deliver(
            client,
            tenant,
            publisher,
            database,
            [notification("person", f"p{i}") for i in range(40)],
        )
        twice_at_once(task(app, worker_queue.SEQUENCE_LOG))
        twice_at_once(task(app, worker_queue.SEQUENCE_LOG))  # whatever the first pair skipped
        with database.unit_of_work() as session:
            seqs = list(session.scalars(select(LogLeaf.seq).order_by(LogLeaf.seq)))
            numbered = session.scalar(select(func.count(func.distinct(LogLeaf.event_id))))
        assert seqs == list(range(1, 41)) and numbered == 40

    def test_the_expiry_sweep_expires_each_export_once_and_deletes_its_chunks(
        self, celery, client, database, settings
    ):
        app, _, _ = celery
        tenant = make_tenant(database, settings)
        ids = [
            client.post("/v1/exports", json={}, headers=auth(tenant)).json["id"] for _ in range(4)
        ]
        long_ago = datetime.now(UTC) - timedelta(seconds=settings.export_ttl_seconds + 60)
        for export_id in ids:
            built = build_export(
                database,
                export_id,
                settings.export_dir,
                settings.export_ttl_seconds,
                clock=lambda: long_ago,
                settings=settings,
            )
            assert built == "succeeded"
            assert stored_chunks(database, export_id)
        results = twice_at_once(task(app, worker_queue.EXPIRE_EXPORTS))
        assert sum(result["expired"] for result in results) == 4
        with database.unit_of_work() as session:
            assert set(session.scalars(select(Export.status))) == {"expired"}
        assert all(stored_chunks(database, export_id) == [] for export_id in ids)
