"""Faults under load: nothing a 202 accepted is ever lost or recorded twice.

Run alone with ``make test-faults`` (``pytest -m faults``). Each test prints its figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import redis

from api.app import create_app
from storage.db import Database
from storage.migrate import upgrade
from storage.settings import Settings
from tests.factories import make_settings, make_tenant, post_signed
from tests.integration.processes import (
    CeleryBeat,
    CeleryWorker,
    PrivatePostgres,
    celery_worker,
    children_of,
    service_env,
    wait_until,
)
from tests.integration.workload import (
    doubled_events,
    history,
    population,
    replayed_state,
    status_counts,
    stored_state,
)

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.slow]


def fast_sweeper(settings: Settings, **changes) -> Settings:
    import dataclasses

    return dataclasses.replace(
        settings, requeue_after_seconds=2, sweep_interval_seconds=1, **changes
    )


def send_batches(client, tenant, payloads, size: int = 100) -> int:
    accepted = 0
    for start in range(0, len(payloads), size):
        response = post_signed(client, tenant, {"notifications": payloads[start : start + size]})
        assert response.status_code == 202, response.json
        accepted += response.json["accepted"]
    return accepted


def assert_nothing_lost(database, tenant, total: int) -> None:
    assert status_counts(database) == {"processed": total}
    assert doubled_events(database) == 0
    assert stored_state(database, tenant.org_id) == replayed_state(database, tenant.org_id)


@pytest.fixture
def pg_settings(tmp_path, postgres_url, shared_redis_url):
    return fast_sweeper(
        make_settings(
            tmp_path / "var",
            database_url=postgres_url,
            redis_url=shared_redis_url,
        )
    )


#: After the last ``kill -9``, every accepted notification is processed within this long,
#: with the default settings: beat's catch-up pass (every second) takes the notifications
#: of a message the dead process held, which Redis would give back only after an hour.
RECOVERY_SECONDS = 5


@pytest.mark.postgres
class TestKilledWorkers:
    def test_repeated_kill_9_of_children_and_main_loses_and_doubles_nothing(
        self, tmp_path, postgres_url, shared_redis_url
    ):
        # The default settings: no fast sweeper. Beat runs as its own process, as in the
        # Procfile, so killing the worker's main process leaves the schedule running.
        settings = make_settings(
            tmp_path / "var", database_url=postgres_url, redis_url=shared_redis_url
        )
        assert settings.requeue_after_seconds == Settings.requeue_after_seconds
        assert settings.sweep_interval_seconds == Settings.sweep_interval_seconds
        database = Database(settings.database_url)
        tenant = make_tenant(database, settings)
        client = create_app(settings, database=database).test_client()
        rng = random.Random(10_000)
        payloads = history(rng, 10_000, population(60))
        rng.shuffle(payloads)

        # Everything is queued first, so that every kill lands in the middle of the work;
        # the last kill (of the main process) comes near the end, so that what follows it
        # is mostly recovery, not the backlog.
        sent = send_batches(client, tenant, payloads)
        kills: list[tuple[str, int]] = []
        beat = CeleryBeat(settings)
        worker = CeleryWorker(settings, concurrency=2)
        try:
            for number, threshold in enumerate([1000, 2500, 4000, 5500, 7000, 8000]):
                wait_until(
                    lambda t=threshold: status_counts(database).get("processed", 0) >= t,
                    120,
                    worker.output()[-3000:],
                )
                if number % 2 == 0:
                    child = children_of(worker.process.pid)[0]
                    os.kill(child, signal.SIGKILL)
                    kills.append(("child", status_counts(database).get("processed", 0)))
                else:
                    worker.kill_main()
                    kills.append(("main", status_counts(database).get("processed", 0)))
                    worker.stop()
                    worker = CeleryWorker(settings, concurrency=2)
            last_kill = time.monotonic()
            wait_until(
                lambda: status_counts(database) == {"processed": 10_000},
                120,
                worker.output()[-3000:] + beat.output()[-2000:],
            )
            recovery = time.monotonic() - last_kill
        finally:
            worker.stop()
            beat.stop()
        print(
            f"\nkill -9: sent {sent}, processed {status_counts(database).get('processed')}, "
            f"doubled {doubled_events(database)}, kills {kills}, "
            f"all processed {recovery:.1f}s after the last"
        )
        assert sent == 10_000
        assert all(processed < 10_000 for _, processed in kills), "a kill came after the work"
        assert kills[-1][0] == "main"
        assert_nothing_lost(database, tenant, 10_000)
        assert recovery <= RECOVERY_SECONDS
        database.engine.dispose()


#: Takes one message from the queue as a worker does (unacknowledged: Redis keeps it for
#: the visibility timeout) and dies without a word, like a worker killed holding it.
TAKE_AND_DIE = """
import os, sys
from storage.settings import Settings
from worker.queue import QUEUE, create_celery

app = create_celery(Settings.from_env())
with app.connection_for_read() as connection:
    message = connection.SimpleQueue(QUEUE).get(timeout=10)
    print(message.delivery_tag, flush=True)
    os._exit(0)
"""


@pytest.mark.postgres
class TestMessageHeldByADeadWorker:
    def test_its_notifications_are_recorded_within_seconds_with_the_default_settings(
        self, tmp_path, postgres_url, private_redis
    ):
        settings = make_settings(
            tmp_path / "var", database_url=postgres_url, redis_url=private_redis.url
        )
        database = Database(settings.database_url)
        tenant = make_tenant(database, settings)
        client = create_app(settings, database=database).test_client()
        payloads = history(random.Random(5), 200, population(10))
        assert send_batches(client, tenant, payloads, size=200) == 200
        taken = subprocess.run(
            [sys.executable, "-c", TAKE_AND_DIE],
            env=service_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode == 0 and taken.stdout.strip(), taken.stderr[-2000:]
        client_redis = redis.Redis.from_url(private_redis.url)
        assert client_redis.llen("auditlog") == 0  # the only message is held by the dead
        assert client_redis.hlen("unacked") == 1

        beat = CeleryBeat(settings)
        worker = CeleryWorker(settings, concurrency=1)
        try:
            started = time.monotonic()
            wait_until(
                lambda: status_counts(database) == {"processed": 200},
                60,
                worker.output()[-3000:] + beat.output()[-2000:],
            )
            recovered = time.monotonic() - started
        finally:
            worker.stop()
            beat.stop()
        print(f"\nmessage held by a dead worker: all processed {recovered:.1f}s after start")
        assert_nothing_lost(database, tenant, 200)
        # From the worker's start, which takes most of it: the pass itself runs every second.
        assert recovered <= RECOVERY_SECONDS
        database.engine.dispose()


@pytest.mark.postgres
class TestBrokerRestart:
    def test_redis_restarted_during_the_load_and_down_at_ingest(self, pg_settings, private_redis):
        settings = fast_sweeper(pg_settings, redis_url=private_redis.url)
        database = Database(settings.database_url)
        tenant = make_tenant(database, settings)
        client = create_app(settings, database=database).test_client()
        payloads = history(random.Random(2), 3000, population(30))
        with celery_worker(settings, concurrency=2, beat=True) as worker:
            send_batches(client, tenant, payloads[:1000])
            private_redis.stop()  # the broker and everything queued in it are gone
            started = time.monotonic()
            send_batches(client, tenant, payloads[1000:2000])  # accepted while it is down
            down_for = time.monotonic() - started
            private_redis.start()
            send_batches(client, tenant, payloads[2000:])
            restarted = time.monotonic()
            wait_until(
                lambda: status_counts(database) == {"processed": 3000}, 180, worker.output()[-3000:]
            )
            recovery = time.monotonic() - restarted
        print(
            f"\nredis restart: 3000 accepted ({down_for:.1f}s of it with Redis down), "
            f"all processed {recovery:.1f}s after restart"
        )
        assert_nothing_lost(database, tenant, 3000)
        database.engine.dispose()


class TestDatabaseRestart:
    def test_postgres_restarted_during_the_load(self, tmp_path, shared_redis_url):
        server = PrivatePostgres()
        server.init()
        server.start()
        try:
            settings = fast_sweeper(
                make_settings(
                    tmp_path / "var",
                    database_url=server.url,
                    redis_url=shared_redis_url,
                )
            )
            database = Database(settings.database_url)
            upgrade(database)
            tenant = make_tenant(database, settings)
            client = create_app(settings, database=database).test_client()
            payloads = history(random.Random(3), 2000, population(30))
            with celery_worker(settings, concurrency=2, beat=True) as worker:
                send_batches(client, tenant, payloads[:1000])
                server.stop(mode="immediate")
                started = time.monotonic()
                refused = post_signed(client, tenant, {"notifications": payloads[1000:1010]})
                read = client.get(
                    "/v1/events", headers={"Authorization": f"Bearer {tenant.api_key}"}
                )
                answered_in = time.monotonic() - started
                time.sleep(2)  # let the worker hit the outage
                server.start()
                restarted = time.monotonic()
                send_batches(client, tenant, payloads[1000:])
                wait_until(
                    lambda: status_counts(database) == {"processed": 2000},
                    180,
                    worker.output()[-3000:],
                )
                recovery = time.monotonic() - restarted
            print(
                f"\npostgres restart: 503s answered in {answered_in:.2f}s, "
                f"all 2000 processed {recovery:.1f}s after restart"
            )
            for response in (refused, read):
                assert response.status_code == 503
                assert response.json["error"]["code"] == "database_unavailable"
                assert response.headers["Retry-After"]
            assert answered_in < 10
            assert_nothing_lost(database, tenant, 2000)
            database.engine.dispose()
        finally:
            try:
                server.stop(mode="immediate")
            except subprocess.CalledProcessError:
                pass  # already stopped by a failure above
            server.remove()


CRASH_SCRIPT = """
import json, os, sys
from api.app import create_app
from storage.settings import Settings
from tests.factories import Tenant, notification, post_signed

settings = Settings.from_env()
tenant = Tenant(**json.loads(sys.argv[1]))

def crash(pks):
    os._exit(3)  # the process dies after the inbox commit, before anything is published

client = create_app(settings, publish=crash).test_client()
post_signed(client, tenant, {"notifications": [notification() for _ in range(5)]})
"""


@pytest.mark.postgres
class TestCrashBeforePublish:
    def test_a_crash_between_commit_and_publish_is_processed_by_the_sweeper(self, pg_settings):
        from tests.integration.processes import service_env

        database = Database(pg_settings.database_url)
        tenant = make_tenant(database, pg_settings)
        crashed = subprocess.run(
            [sys.executable, "-c", CRASH_SCRIPT, json.dumps(tenant.__dict__)],
            env=service_env(pg_settings),
            capture_output=True,
            timeout=60,
        )
        assert crashed.returncode == 3, crashed.stderr.decode()
        assert status_counts(database) == {"queued": 5}
        started = time.monotonic()
        with celery_worker(pg_settings, beat=True) as worker:
            wait_until(
                lambda: status_counts(database) == {"processed": 5}, 60, worker.output()[-3000:]
            )
        took = time.monotonic() - started
        print(
            f"\ncrash before publish: 5 committed, processed {took:.1f}s after the worker started"
        )
        bound = pg_settings.requeue_after_seconds + pg_settings.sweep_interval_seconds + 15
        assert took <= bound
        database.engine.dispose()
