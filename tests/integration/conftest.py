from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from bench.services import BIN, free_port
from storage.settings import Settings
from tests.conftest import redis_url
from tests.integration.processes import PrivateRedis

#: The suite's own Redis database number on the shared server, flushed before each test.
TEST_REDIS_DB = 13


@pytest.fixture
def shared_redis_url() -> str:
    parts = urlsplit(redis_url())
    url = urlunsplit(parts._replace(path=f"/{TEST_REDIS_DB}"))
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    client.ping()  # no Redis is a failure, never a skip
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker_settings(settings: Settings, shared_redis_url: str) -> Settings:
    """The test's database, the shared Redis, and a sweeper fast enough to watch."""
    return dataclasses.replace(
        settings, redis_url=shared_redis_url, requeue_after_seconds=1, sweep_interval_seconds=1
    )


def host_env(postgres_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """This environment without the service's own variables, plus the three a host
    shares with the others (and ``extra``)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AUDITLOG_", "DATABASE_", "REDIS_", "SECRET_", "EXPORT_"))
    }
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        SECRET_KEY="a-secret-shared-by-every-host",
        SWEEP_INTERVAL_SECONDS="1",
        **extra,
    )
    return env


@pytest.fixture
def fresh_host(tmp_path: Path, postgres_url: str, shared_redis_url: str):
    """An empty working directory and the three variables a host shares with the others."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    return folder, host_env(postgres_url, shared_redis_url, PORT=str(free_port()))
