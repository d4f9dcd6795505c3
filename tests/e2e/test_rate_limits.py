"""Rate limits per webhook source and per API key: 429 with Retry-After, tenants isolated."""

from __future__ import annotations

import dataclasses

import pytest

from api.app import create_app
from tests.factories import make_tenant, notification, post_signed


@pytest.fixture
def limited(settings):
    return dataclasses.replace(settings, webhook_rate_limit="3/minute", api_rate_limit="2/minute")


def assert_limited(response) -> None:
    assert response.status_code == 429
    assert response.json["error"]["code"] == "too_many_requests"
    # Until the breached per-minute window frees a request: within that minute, never 0.
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "X-RateLimit-Limit" not in response.headers


class TestWebhookLimits:
    def test_a_source_at_its_limit_gets_429_and_another_source_does_not(
        self, limited, database, publisher
    ):
        client = create_app(limited, database=database, publish=publisher).test_client()
        busy, quiet = make_tenant(database, limited), make_tenant(database, limited)
        assert [post_signed(client, busy, notification()).status_code for _ in range(3)] == [
            202
        ] * 3
        refused = post_signed(client, busy, notification())
        assert_limited(refused)
        assert post_signed(client, quiet, notification()).status_code == 202


class TestApiKeyLimits:
    def test_a_key_at_its_limit_gets_429_and_another_key_does_not(
        self, limited, database, publisher
    ):
        client = create_app(limited, database=database, publish=publisher).test_client()
        busy, quiet = make_tenant(database, limited), make_tenant(database, limited)
        busy_key = {"Authorization": f"Bearer {busy.api_key}"}
        assert [client.get("/v1/events", headers=busy_key).status_code for _ in range(2)] == [
            200,
            200,
        ]
        assert_limited(client.get("/v1/event-types", headers=busy_key))
        quiet_key = {"Authorization": f"Bearer {quiet.api_key}"}
        assert client.get("/v1/events", headers=quiet_key).status_code == 200


@pytest.mark.redis
class TestSharedCounters:
    def test_two_web_processes_share_one_count_through_redis(self, limited, database, publisher):
        import redis

        from tests.conftest import redis_url
        from tests.integration.conftest import TEST_REDIS_DB

        url = redis_url().rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}"
        redis.Redis.from_url(url).flushdb()
        shared = dataclasses.replace(limited, redis_url=url)
        first = create_app(shared, database=database, publish=publisher).test_client()
        second = create_app(shared, database=database, publish=publisher).test_client()
        tenant = make_tenant(database, shared)
        statuses = [
            post_signed(client, tenant, notification()).status_code
            for client in (first, second, first, second)
        ]
        assert statuses == [202, 202, 202, 429]
