"""Real Celery workers on PostgreSQL and Redis: concurrency, re-delivery and kill -9."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import select

from api.app import create_app
from storage.db import Database
from storage.models import Notification
from tests.factories import make_settings, make_tenant, post_signed
from tests.integration.processes import celery_worker, wait_until
from tests.integration.workload import (
    doubled_events,
    history,
    population,
    replayed_state,
    status_counts,
    stored_state,
)
from worker.queue import create_celery, publisher

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def pg_settings(tmp_path, postgres_url, shared_redis_url):
    return make_settings(
        tmp_path / "var",
        database_url=postgres_url,
        redis_url=shared_redis_url,
        requeue_after_seconds=2,
        sweep_interval_seconds=1,
    )


@pytest.fixture
def pg_database(pg_settings):
    database = Database(pg_settings.database_url)
    yield database
    database.engine.dispose()


def send(client, tenant, payloads, batch_size: int) -> None:
    for start in range(0, len(payloads), batch_size):
        batch = {"notifications": payloads[start : start + batch_size]}
        response = post_signed(client, tenant, batch)
        assert response.status_code == 202, response.json


class TestTwoWorkers:
    def test_shuffled_and_partly_duplicated_deliveries_reach_the_in_order_state(
        self, pg_settings, pg_database
    ):
        rng = random.Random(20261126)
        tenant = make_tenant(pg_database, pg_settings)
        client = create_app(pg_settings, database=pg_database).test_client()
        payloads = history(rng, 5000, population(50))
        shuffled = list(payloads)
        rng.shuffle(shuffled)
        again = rng.sample(payloads, len(payloads) // 10)

        with celery_worker(pg_settings) as first, celery_worker(pg_settings) as second:
            send(client, tenant, shuffled, batch_size=100)
            send(client, tenant, again, batch_size=100)
            # Re-deliver a tenth of the messages as the broker would after a lost ack.
            with pg_database.unit_of_work() as session:
                pks = list(session.scalars(select(Notification.pk)))
            republish = publisher(create_celery(pg_settings, fail_fast=True))
            for start in range(0, len(pks), 1000):
                republish(rng.sample(pks[start : start + 1000], 100))
            wait_until(
                lambda: status_counts(pg_database) == {"processed": 5000},
                180,
                f"{status_counts(pg_database)}\n{first.output()[-3000:]}\n{second.output()[-3000:]}",
            )
        assert stored_state(pg_database, tenant.org_id) == replayed_state(
            pg_database, tenant.org_id
        )
        assert doubled_events(pg_database) == 0

    def test_two_workers_hammering_one_record_keep_every_latest_change(
        self, pg_settings, pg_database
    ):
        rng = random.Random(7)
        tenant = make_tenant(pg_database, pg_settings)
        client = create_app(pg_settings, database=pg_database).test_client()
        payloads = []
        for index, second in enumerate(rng.sample(range(100_000), 400)):
            payloads.append(
                {
                    "id": f"h{index}",
                    "kind": "patch",
                    "entity": {"type": "person", "id": "p-hot"},
                    "occurred_at": f"2026-11-25T{second // 3600 % 24:02d}:"
                    f"{second // 60 % 60:02d}:{second % 60:02d}Z",
                    "sequence": second,
                    "properties": {rng.choice(["title", "level", "name"]): index},
                    "relationships": {"apps": {"add": [rng.choice(["a1", "a2", "a3"])]}},
                }
            )
        with celery_worker(pg_settings) as first, celery_worker(pg_settings) as second:
            send(client, tenant, payloads, batch_size=1)
            wait_until(
                lambda: status_counts(pg_database) == {"processed": 400},
                180,
                f"{first.output()[-3000:]}\n{second.output()[-3000:]}",
            )
        stored = stored_state(pg_database, tenant.org_id)
        assert stored == replayed_state(pg_database, tenant.org_id)
        assert stored["entities"][("person", "p-hot")][0]  # every key landed somewhere


class TestKilledWorker:
    def test_kill_9_of_the_main_process_loses_and_doubles_nothing(self, pg_settings, pg_database):
        rng = random.Random(99)
        tenant = make_tenant(pg_database, pg_settings)
        client = create_app(pg_settings, database=pg_database).test_client()
        payloads = history(rng, 2000, population(40))
        rng.shuffle(payloads)

        worker = celery_worker(pg_settings, concurrency=2, beat=True)
        victim = worker.__enter__()
        try:
            send(client, tenant, payloads, batch_size=20)
            wait_until(
                lambda: status_counts(pg_database).get("processed", 0) >= 200,
                120,
                victim.output()[-3000:],
            )
            victim.kill_main()
            processed_at_kill = status_counts(pg_database).get("processed", 0)
        finally:
            worker.__exit__(None, None, None)
        assert processed_at_kill < 2000, "the kill came too late to prove anything"

        killed_at = time.monotonic()
        with celery_worker(pg_settings, concurrency=2, beat=True) as successor:
            wait_until(
                lambda: status_counts(pg_database) == {"processed": 2000},
                120,
                f"{status_counts(pg_database)}\n{successor.output()[-3000:]}",
            )
        recovery = time.monotonic() - killed_at
        print(f"processed at kill: {processed_at_kill}/2000; all processed {recovery:.1f}s later")
        assert doubled_events(pg_database) == 0
        assert stored_state(pg_database, tenant.org_id) == replayed_state(
            pg_database, tenant.org_id
        )
