"""A real Celery worker on Redis, from webhook to processed, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select

from api.app import create_app
from storage.models import Notification
from tests.factories import make_tenant, notification, post_signed
from tests.integration.processes import celery_worker, wait_until

pytestmark = pytest.mark.redis


def statuses(database) -> list[str]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Notification.status).order_by(Notification.pk)))


def all_processed(database, count: int) -> bool:
    return statuses(database) == ["processed"] * count


class TestWorkerEndToEnd:
    def test_a_webhook_batch_is_processed_by_a_real_worker(self, worker_settings, database):
        tenant = make_tenant(database, worker_settings)
        client = create_app(worker_settings, database=database).test_client()
        with celery_worker(worker_settings) as worker:
            batch = {"notifications": [notification() for _ in range(20)]}
            assert post_signed(client, tenant, batch).status_code == 202
            wait_until(lambda: all_processed(database, 20), 60, worker.output)


class TestBrokerOutage:
    def test_accepted_while_the_broker_is_down_then_processed_through_the_sweeper(
        self, settings, database, private_redis
    ):
        worker_settings = dataclasses.replace(
            settings, redis_url=private_redis.url, requeue_after_seconds=1, sweep_interval_seconds=1
        )
        tenant = make_tenant(database, worker_settings)
        client = create_app(worker_settings, database=database).test_client()

        private_redis.stop()
        response = post_signed(client, tenant, {"notifications": [notification(), notification()]})
        assert response.status_code == 202
        assert statuses(database) == ["queued", "queued"]

        private_redis.start()
        with celery_worker(worker_settings, beat=True) as worker:
            wait_until(lambda: all_processed(database, 2), 60, worker.output)
            assert "auditlog.requeue_stale_notifications" in worker.output()
