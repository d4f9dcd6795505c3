from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

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
