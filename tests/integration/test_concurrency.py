"""Real Celery workers on PostgreSQL and Redis: concurrency, re-delivery and kill -9."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import select

from api.app import create_app
from storage.db import Database
from storage.models import Event, Notification
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


class TestTheFeedUnderLoad:
    def test_a_reader_following_the_feed_receives_every_event_once_in_order(
        self, pg_settings, pg_database
    ):
        """20,000 notifications through two workers (each with its own pool process and
        beat's sequencer pass in one of them) while a reader long-polls the feed."""
        import threading

        rng = random.Random(20261202)
        tenant = make_tenant(pg_database, pg_settings)
        app = create_app(pg_settings, database=pg_database)
        payloads = [
            {
                "kind": "snapshot",
                "entity": {"type": "person", "id": f"p{i}"},
                "occurred_at": f"2026-11-{1 + rng.randrange(28):02d}T10:00:00Z",
                "properties": {"name": f"Person {i}"},
            }
            for i in range(20_000)
        ]
        delivered: list[dict] = []
        done = threading.Event()

        def read() -> None:
            client = app.test_client()
            headers = {"Authorization": f"Bearer {tenant.api_key}"}
            after = 0
            while not done.is_set() or after < 20_000:
                page = client.get(f"/v1/feed?after={after}&limit=1000&wait=1", headers=headers)
                body = page.get_json()
                delivered.extend(body["events"])
                after = body["next_after"]
                if done.is_set() and not body["events"]:
                    break

        reader = threading.Thread(target=read, daemon=True)
        with celery_worker(pg_settings, beat=True) as first, celery_worker(pg_settings) as second:
            reader.start()
            send(app.test_client(), tenant, payloads, batch_size=200)
            wait_until(
                lambda: status_counts(pg_database) == {"processed": 20_000},
                240,
                f"{status_counts(pg_database)}\n{first.output()[-3000:]}\n{second.output()[-3000:]}",
            )
            wait_until(lambda: len(delivered) >= 20_000, 60, f"delivered {len(delivered)}")
            done.set()
            reader.join(timeout=30)
        assert [event["seq"] for event in delivered] == list(range(1, 20_001))
        assert len({event["id"] for event in delivered}) == 20_000
        with pg_database.unit_of_work() as session:
            stored = set(session.scalars(select(Event.id)))
        assert {int(event["id"][4:], 16) for event in delivered} == stored
