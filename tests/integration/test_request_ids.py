"""A webhook's X-Request-ID reaches the worker's JSON log lines for its notifications."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from api.app import create_app
from storage.models import Notification
from tests.factories import make_tenant, notification, post_signed, unique
from tests.integration.processes import celery_worker, wait_until

pytestmark = pytest.mark.redis


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line the worker wrote, each one JSON object (a line that is not fails here)."""
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{output}") from None
    return parsed


def all_processed(database: Any, count: int) -> bool:
    with database.unit_of_work() as session:
        found = list(session.scalars(select(Notification.status)))
    return found == ["processed"] * count


class TestRequestIdsInTheWorkersLog:
    def test_the_lines_of_a_webhooks_task_carry_its_request_id(self, worker_settings, database):
        tenant = make_tenant(database, worker_settings)
        client = create_app(worker_settings, database=database).test_client()
        request_id = unique("req-from-sender")
        with celery_worker(worker_settings) as worker:
            worker.wait_for_text("ready.")
            response = post_signed(
                client,
                tenant,
                {"notifications": [notification(), notification()]},
                **{"X-Request-ID": request_id},
            )
            assert response.status_code == 202
            assert response.headers["X-Request-ID"] == request_id
            wait_until(lambda: all_processed(database, 2), 60, worker.output)
            wait_until(lambda: "succeeded" in worker.output(), 30, worker.output)
            lines = json_lines(worker.output())

        mine = [line for line in lines if line.get("request_id") == request_id]
        messages = " | ".join(line["message"] for line in mine)
        assert any(line["message"].startswith("recorded 2 notifications") for line in mine), lines
        assert any("succeeded" in line["message"] for line in mine), messages
        recorded = next(line for line in mine if line["message"].startswith("recorded"))
        assert recorded["request_ids"] == [request_id]
        assert all(line["level"] not in ("ERROR", "CRITICAL") for line in lines), lines

    def test_a_catch_up_batch_names_every_request_it_holds(self, worker_settings, database):
        tenant = make_tenant(database, worker_settings)
        client = create_app(worker_settings, database=database).test_client()
        first, second = unique("req-first"), unique("req-second")
        # Both queued before the worker starts: the first message's transaction takes the
        # second's notification with its own.
        for request_id in (first, second):
            response = post_signed(client, tenant, notification(), **{"X-Request-ID": request_id})
            assert response.status_code == 202
        with celery_worker(worker_settings) as worker:
            wait_until(lambda: all_processed(database, 2), 60, worker.output)
            wait_until(lambda: worker.output().count("succeeded") >= 2, 30, worker.output)
            lines = json_lines(worker.output())

        recorded = [line for line in lines if line["message"].startswith("recorded")]
        assert len(recorded) == 1, recorded
        assert recorded[0]["request_id"] == first
        assert recorded[0]["request_ids"] == [first, second]
