"""Only one beat schedule runs, however many beats are started, and a standby takes over.

Real ``celery beat`` processes (the Procfile's command), each in an empty folder of its own,
sharing PostgreSQL and a Redis server; then each lock on its own, in process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bench.services import Process
from tests.integration.conftest import host_env
from tests.integration.processes import wait_until
from tests.integration.test_procfile import procfile
from worker.beatlock import (
    AdvisoryScheduleLock,
    FileScheduleLock,
    RedisScheduleLock,
    lock_name,
)

SENT = "Sending due task"
STANDING_BY = "standing by"
#: The lock's TTL in these tests: a beat killed with -9 is replaced after about this long.
LOCK_SECONDS = 3


def beat_env(postgres_url: str, redis_url: str) -> dict[str, str]:
    return host_env(postgres_url, redis_url, BEAT_LOCK_SECONDS=str(LOCK_SECONDS))


class Beat:
    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        folder.mkdir()
        self.folder = folder
        self.process = Process(
            ["bash", "-c", f"exec {procfile()['beat']}"],
            env,
            folder.parent / f"{folder.name}.log",
            folder,
        )

    def sends(self) -> int:
        return self.process.output().count(SENT)

    def decided(self) -> bool:
        output = self.process.output()
        return SENT in output or STANDING_BY in output


@pytest.mark.postgres
@pytest.mark.redis
class TestOneScheduleAcrossHosts:
    def test_one_beat_sends_and_a_standby_takes_over_when_it_stops_or_dies(
        self, tmp_path, postgres_url, private_redis
    ):
        env = beat_env(postgres_url, private_redis.url)
        beats = [Beat(tmp_path / "host-a", env), Beat(tmp_path / "host-b", env)]
        try:
            wait_until(lambda: all(beat.decided() for beat in beats), 60, "beats did not start")
            time.sleep(2.5)  # a few of the schedule's one-second ticks
            (holder,) = [beat for beat in beats if beat.sends()]
            (standby,) = [beat for beat in beats if beat is not holder]
            assert holder.sends() >= 3, holder.process.output()
            assert standby.sends() == 0 and STANDING_BY in standby.process.output()

            # A clean stop releases the lock: the standby takes over at its next retry.
            stopped = time.monotonic()
            holder.process.stop()
            wait_until(lambda: standby.sends() > 0, 10, standby.process.output())
            assert time.monotonic() - stopped < 1 + 5  # one retry, and a wide margin

            # A beat killed outright holds the lock until its TTL lapses, then no longer.
            third = Beat(tmp_path / "host-c", env)
            beats.append(third)
            wait_until(third.decided, 60, "the third beat did not start")
            assert third.sends() == 0
            killed = time.monotonic()
            os.killpg(standby.process.process.pid, signal.SIGKILL)
            wait_until(lambda: third.sends() > 0, LOCK_SECONDS + 10, third.process.output())
            assert time.monotonic() - killed < LOCK_SECONDS + 1 + 5
            for beat in beats:
                assert "Traceback" not in beat.process.output(), beat.process.output()
            assert not any((beat.folder / "var").exists() for beat in beats)
        finally:
            for beat in beats:
                beat.process.stop()


class TestTheLocks:
    """Each lock alone: one holder at a time, renewal, release, and a lost lock noticed."""

    def test_redis_one_holder_renewal_release_and_lapse(self, private_redis):
        name = lock_name("postgresql+psycopg://u:pw@db/auditlog")
        first = RedisScheduleLock(private_redis.url, name, ttl_seconds=1)
        second = RedisScheduleLock(private_redis.url, name, ttl_seconds=1)
        try:
            assert first.hold() and not second.hold()
            time.sleep(0.6)
            assert first.hold()  # renewed: the TTL starts again
            time.sleep(0.6)
            assert not second.hold()
            first.release()
            assert second.hold()
            time.sleep(1.3)  # the holder stops renewing: its key lapses
            third = RedisScheduleLock(private_redis.url, name, ttl_seconds=1)
            assert third.hold()
            assert not second.hold()  # and the former holder knows it lost it
            third.release()
        finally:
            first.release()
            second.release()

    def test_redis_lock_lost_when_redis_is_gone(self, private_redis):
        lock = RedisScheduleLock(private_redis.url, "auditlog:test-lock", ttl_seconds=5)
        assert lock.hold()
        private_redis.stop()
        assert not lock.hold()
        private_redis.start()
        assert lock.hold()  # a new server: the key is free again
        lock.release()

    @pytest.mark.postgres
    def test_postgres_advisory_lock(self, postgres_url):
        first, second = AdvisoryScheduleLock(postgres_url), AdvisoryScheduleLock(postgres_url)
        try:
            assert first.hold() and not second.hold()
            assert first.hold()
            first.release()
            assert second.hold() and not first.hold()
            # The holder's session ends (server restart, network): the lock goes with it.
            assert second.connection is not None
            pid = second.connection.scalar(text("SELECT pg_backend_pid()"))
            engine = create_engine(postgres_url)
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            engine.dispose()
            wait_until(lambda: first.hold(), 10, "the lock did not come free")
            assert not second.hold()
        finally:
            first.release()
            second.release()

    def test_file_lock(self, tmp_path):
        first = FileScheduleLock(tmp_path / "var" / "beat.lock")
        second = FileScheduleLock(tmp_path / "var" / "beat.lock")
        assert first.hold() and not second.hold() and first.hold()
        first.release()
        assert second.hold() and not first.hold()
        second.release()

    def test_the_redis_key_names_the_database_not_its_password(self):
        one = lock_name("postgresql+psycopg://app:secret@db.internal/auditlog")
        assert one == lock_name("postgresql+psycopg://app:rotated@db.internal/auditlog")
        assert one != lock_name("postgresql+psycopg://app:secret@db.internal/other")
        assert "secret" not in one
