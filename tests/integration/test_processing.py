"""Processing a message against a real database: batches, re-delivery, failures, the sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from api.app import create_app
from storage import inbox
from storage.db import Database
from storage.models import Notification
from tests.factories import (
    RecordingPublisher,
    make_settings,
    make_tenant,
    notification,
    post_signed,
)
from worker import processing


@pytest.fixture
def tenant(database, settings):
    return make_tenant(database, settings)


def rows(database):
    columns = [Notification.pk, Notification.status, Notification.attempts, Notification.error]
    with database.unit_of_work() as session:
        return session.execute(select(*columns).order_by(Notification.pk)).all()


def poison(monkeypatch, poisoned: int) -> None:
    """Make recording fail for any batch that holds the notification ``poisoned``."""
    real = processing.record_notifications

    def record(session, notifications, now):
        if any(n.pk == poisoned for n in notifications):
            raise ValueError("cannot diff this one")
        return real(session, notifications, now)

    monkeypatch.setattr(processing, "record_notifications", record)


class TestProcessing:
    def test_a_batch_is_processed_in_one_go_and_redelivery_does_nothing(
        self, client, tenant, database, publisher
    ):
        post_signed(client, tenant, {"notifications": [notification() for _ in range(3)]})
        [message] = publisher.messages
        assert processing.process_notifications(database, message, 5).processed == 3
        assert processing.process_notifications(database, message, 5).processed == 0
        assert {row.status for row in rows(database)} == {"processed"}

    def test_a_failing_notification_is_retried_then_failed_without_holding_back_others(
        self, client, tenant, database, publisher, monkeypatch
    ):
        post_signed(client, tenant, {"notifications": [notification() for _ in range(3)]})
        [message] = publisher.messages
        poisoned = message[1]
        poison(monkeypatch, poisoned)
        first = processing.process_notifications(database, message, max_attempts=2)
        assert (first.processed, first.failed, first.to_retry) == (2, 0, [poisoned])
        second = processing.process_notifications(database, first.to_retry, max_attempts=2)
        assert (second.processed, second.failed, second.to_retry) == (0, 1, [])

        by_pk = {row.pk: row for row in rows(database)}
        assert by_pk[poisoned].status == "failed"
        assert by_pk[poisoned].attempts == 2
        assert "cannot diff this one" in by_pk[poisoned].error
        assert [by_pk[pk].status for pk in message if pk != poisoned] == ["processed"] * 2

        with database.unit_of_work(write=True) as session:
            assert inbox.requeue_failed(session, datetime.now(UTC)) == [poisoned]
            session.commit()
        requeued = {row.pk: row for row in rows(database)}[poisoned]
        assert (requeued.status, requeued.attempts, requeued.error) == ("queued", 0, None)


class TestFailuresAreChargedToTheirCause:
    def test_a_poisoned_notification_pulled_in_by_catch_up_is_not_blamed_on_the_message(
        self, client, tenant, database, publisher, monkeypatch
    ):
        post_signed(client, tenant, notification())
        post_signed(client, tenant, notification())
        [innocent], [poisoned] = publisher.messages
        poison(monkeypatch, poisoned)
        outcome = processing.process_notifications(database, [innocent], max_attempts=1)
        assert (outcome.processed, outcome.failed, outcome.to_retry) == (1, 0, [])
        by_pk = {row.pk: row for row in rows(database)}
        assert (by_pk[innocent].status, by_pk[innocent].attempts) == ("processed", 0)
        # Not charged either: it is still waiting for its own message.
        assert (by_pk[poisoned].status, by_pk[poisoned].attempts) == ("queued", 0)

        outcome = processing.process_notifications(database, [poisoned], max_attempts=1)
        assert (outcome.processed, outcome.failed) == (0, 1)
        by_pk = {row.pk: row for row in rows(database)}
        assert (by_pk[poisoned].status, by_pk[poisoned].attempts) == ("failed", 1)
        assert by_pk[innocent].status == "processed"


class TestCatchUpOfOverdueNotifications:
    """Beat's catch-up pass: notifications whose message a dead worker holds."""

    def overdue(self, database, pks, seconds: float) -> None:
        with database.unit_of_work(write=True) as session:
            session.execute(
                update(Notification)
                .where(Notification.pk.in_(pks))
                .values(enqueued_at=datetime.now(UTC) - timedelta(seconds=seconds))
            )
            session.commit()

    def test_only_notifications_overdue_are_taken(self, client, tenant, database, publisher):
        post_signed(client, tenant, notification())
        post_signed(client, tenant, notification())
        [old], [recent] = publisher.messages
        self.overdue(database, [old], 10)
        outcome = processing.catch_up_overdue(database, 5, datetime.now(UTC), timedelta(seconds=2))
        assert (outcome.processed, outcome.failed) == (1, 0)
        by_pk = {row.pk: row for row in rows(database)}
        assert (by_pk[old].status, by_pk[recent].status) == ("processed", "queued")
        # Its message, redelivered later, finds nothing to do.
        assert processing.process_notifications(database, [old], 5).processed == 0

    def test_a_pass_takes_every_overdue_batch_until_its_time_is_up(
        self, client, tenant, database, publisher, monkeypatch
    ):
        post_signed(client, tenant, {"notifications": [notification() for _ in range(5)]})
        post_signed(client, tenant, notification())
        [message, recent] = publisher.messages
        self.overdue(database, message, 10)
        monkeypatch.setattr(processing, "CATCH_UP", 2)
        now = datetime.now(UTC)
        outcome = processing.catch_up_overdue(database, 5, now, timedelta(seconds=2))
        # Three transactions of at most two; the one not yet overdue is left to its message.
        assert (outcome.processed, outcome.failed) == (5, 0)
        by_pk = {row.pk: row for row in rows(database)}
        assert [by_pk[pk].status for pk in message] == ["processed"] * 5
        assert by_pk[recent[0]].status == "queued"

    def test_a_pass_out_of_time_leaves_the_rest_to_the_next(
        self, client, tenant, database, publisher, monkeypatch
    ):
        post_signed(client, tenant, {"notifications": [notification() for _ in range(5)]})
        [message] = publisher.messages
        self.overdue(database, message, 10)
        monkeypatch.setattr(processing, "CATCH_UP", 2)
        monkeypatch.setattr(processing, "CATCH_UP_SECONDS", 0.0)
        now = datetime.now(UTC)
        first = processing.catch_up_overdue(database, 5, now, timedelta(seconds=2))
        assert first.processed == 2
        second = processing.catch_up_overdue(database, 5, now, timedelta(seconds=2))
        assert second.processed == 2

    def test_a_failure_is_charged_to_its_cause_and_the_rest_are_recorded(
        self, client, tenant, database, publisher, monkeypatch
    ):
        post_signed(client, tenant, {"notifications": [notification() for _ in range(3)]})
        [message] = publisher.messages
        poisoned = message[1]
        self.overdue(database, message, 10)
        poison(monkeypatch, poisoned)
        outcome = processing.catch_up_overdue(database, 2, datetime.now(UTC), timedelta(seconds=2))
        assert (outcome.processed, outcome.failed, outcome.to_retry) == (2, 0, [poisoned])
        by_pk = {row.pk: row for row in rows(database)}
        assert (by_pk[poisoned].status, by_pk[poisoned].attempts) == ("queued", 1)
        assert [by_pk[pk].status for pk in message if pk != poisoned] == ["processed"] * 2
        # Having failed once, it is left to its own message (and the sweeper).
        again = processing.catch_up_overdue(database, 2, datetime.now(UTC), timedelta(seconds=2))
        assert (again.processed, again.failed) == (0, 0)


@pytest.mark.postgres
class TestOneCatchUpPassAtATime:
    def test_a_pass_finding_another_at_work_leaves_it_alone(self, postgres_url, tmp_path):
        settings = make_settings(tmp_path / "var", database_url=postgres_url)
        database = Database(postgres_url)
        tenant = make_tenant(database, settings)
        publisher = RecordingPublisher()
        client = create_app(settings, database=database, publish=publisher).test_client()
        post_signed(client, tenant, notification())
        TestCatchUpOfOverdueNotifications().overdue(database, publisher.messages[0], 10)
        later = datetime.now(UTC)
        other = database.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            key = {"key": processing.CATCH_UP_LOCK}
            assert other.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar()
            busy = processing.catch_up_overdue(database, 5, later, timedelta(seconds=2))
            assert busy.processed == 0
            other.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            done = processing.catch_up_overdue(database, 5, later, timedelta(seconds=2))
            assert done.processed == 1
            # The pass gave its lock back.
            assert other.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar()
            other.execute(text("SELECT pg_advisory_unlock(:key)"), key)
        finally:
            other.close()
            database.engine.dispose()


class TestSweeper:
    def test_only_notifications_queued_past_the_threshold_are_claimed(
        self, client, tenant, database
    ):
        post_signed(client, tenant, {"notifications": [notification(), notification()]})
        old, recent = [row.pk for row in rows(database)]
        now = datetime.now(UTC)
        with database.unit_of_work(write=True) as session:
            session.execute(
                update(Notification)
                .where(Notification.pk == old)
                .values(enqueued_at=now - timedelta(minutes=5))
            )
            session.commit()
        with database.unit_of_work(write=True) as session:
            assert inbox.claim_stale(session, now, timedelta(seconds=60), limit=100) == [old]
            session.commit()
        with database.unit_of_work(write=True) as session:
            # Claiming resets the clock: the same row is not published twice in a row.
            assert inbox.claim_stale(session, now, timedelta(seconds=60), limit=100) == []

    def test_processed_notifications_are_never_claimed(self, client, tenant, database, publisher):
        post_signed(client, tenant, notification())
        processing.process_notifications(database, publisher.messages[0], 5)
        later = datetime.now(UTC) + timedelta(hours=1)
        with database.unit_of_work(write=True) as session:
            assert inbox.claim_stale(session, later, timedelta(seconds=60), limit=100) == []
