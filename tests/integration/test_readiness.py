"""``/readyz`` against dead and silent servers, and ``/metrics`` under gunicorn's workers.

A dead server (nothing listening) and a silent one (it accepts the connection and never
answers) must both turn into a 503 naming the failing check within a few seconds, never a
hung request nor another 5xx.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from bench.services import BIN, Process, free_port
from storage.settings import Settings
from tests.factories import RecordingPublisher, make_settings
from tests.integration.processes import service_env, wait_until

#: What "within a few seconds" means here (the probes' own timeouts are 1 s and 2 s).
ANSWER_WITHIN_SECONDS = 4.0


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose server accepts connections (the kernel completes them) and never
    sends a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def timed_readyz(settings: Settings) -> tuple[int, dict[str, object], float]:
    client = create_app(settings, publish=RecordingPublisher()).test_client()
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    return response.status_code, response.json, elapsed


def assert_unavailable(answer: tuple[int, dict[str, object], float], failing: str) -> None:
    status, body, elapsed = answer
    assert status == 503, body
    assert elapsed < ANSWER_WITHIN_SECONDS, elapsed
    assert body["status"] == "unavailable"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert set(checks) == {"database", "broker"}
    assert checks[failing].startswith("error: "), checks
    assert "Traceback" not in checks[failing]
    other = ({"database", "broker"} - {failing}).pop()
    assert checks[other] == "ok", checks


class TestDeadBroker:
    def test_a_dead_redis_port_is_a_503_naming_the_broker(self, settings):
        dead = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")
        assert_unavailable(timed_readyz(dead), "broker")

    def test_a_silent_redis_is_a_503_naming_the_broker(self, settings, silent_port):
        silent = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{silent_port}/0")
        assert_unavailable(timed_readyz(silent), "broker")

    @pytest.mark.redis
    def test_a_live_redis_is_ready(self, settings, shared_redis_url):
        live = dataclasses.replace(settings, redis_url=shared_redis_url)
        status, body, _ = timed_readyz(live)
        assert (status, body) == (
            200,
            {"status": "ready", "checks": {"database": "ok", "broker": "ok"}},
        )


class TestDeadDatabase:
    def test_a_dead_postgresql_port_is_a_503_naming_the_database(self, tmp_path):
        dead = make_settings(tmp_path / "var", database_url="postgresql://postgres@127.0.0.1:1/x")
        assert_unavailable(timed_readyz(dead), "database")

    def test_a_silent_postgresql_is_a_503_naming_the_database(self, tmp_path, silent_port):
        url = f"postgresql://postgres@127.0.0.1:{silent_port}/x"
        assert_unavailable(
            timed_readyz(make_settings(tmp_path / "var", database_url=url)), "database"
        )

    def test_health_and_metrics_still_answer_without_the_database(self, tmp_path):
        dead = make_settings(tmp_path / "var", database_url="postgresql://postgres@127.0.0.1:1/x")
        client = create_app(dead, publish=RecordingPublisher()).test_client()
        assert client.get("/healthz").json == {"status": "ok"}
        response = client.get("/metrics")
        assert response.status_code == 200
        families = {
            family.name: family
            for family in text_string_to_metric_families(response.get_data(as_text=True))
        }
        assert families["auditlog_database_up"].samples[0].value == 0
        assert "auditlog_http_requests" in families
        assert "auditlog_notifications" not in families


def test_both_checks_run_side_by_side(tmp_path, silent_port):
    settings = make_settings(
        tmp_path / "var",
        database_url=f"postgresql://postgres@127.0.0.1:{silent_port}/x",
        redis_url=f"redis://127.0.0.1:{silent_port}/0",
    )
    status, body, elapsed = timed_readyz(settings)
    assert status == 503
    assert body["checks"] == {
        "database": "error: ConnectionTimeout",
        "broker": "error: TimeoutError",
    }
    # The database's 2 s, not 2 s and the broker's 1 s one after the other.
    assert elapsed < 2.9, elapsed


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    path = tmp_path / "auditlog.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return make_settings(tmp_path / "var", database_url=f"sqlite:///{path}")


def unmatched_count(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "auditlog_http_requests_total"
        and sample.labels == {"method": "GET", "route": "unmatched", "status": "404"}
    )


def get_missing(port: int) -> None:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/count-me", timeout=5)
    except urllib.error.HTTPError as error:
        assert error.code == 404
    else:
        raise AssertionError("expected a 404")


class TestMultiprocessMetrics:
    def test_every_scrape_sums_the_counts_of_every_gunicorn_worker(self, sqlite_settings, tmp_path):
        folder = tmp_path / "prometheus"
        folder.mkdir()
        port = free_port()
        env = service_env(sqlite_settings, PROMETHEUS_MULTIPROC_DIR=str(folder))
        command = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2"]
        web = Process([*command, "api.wsgi:app"], env, tmp_path / "web.log", tmp_path)
        try:

            def answers() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                        return True
                except OSError:
                    return False

            wait_until(answers, 60, web.output())
            sent = 0
            lock = threading.Lock()

            def burst() -> None:
                nonlocal sent
                get_missing(port)
                with lock:
                    sent += 1

            # Concurrent requests until both workers have counted some (each writes its
            # own file, named by its pid).
            deadline = time.monotonic() + 30
            while len(list(folder.glob("counter_*.db"))) < 2:
                assert time.monotonic() < deadline, os.listdir(folder)
                threads = [threading.Thread(target=burst) for _ in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            # Whichever worker answers the scrape, it reports the sum over both.
            assert [unmatched_count(port) for _ in range(6)] == [sent] * 6
            assert "Traceback" not in web.output(), web.output()
        finally:
            web.stop()
