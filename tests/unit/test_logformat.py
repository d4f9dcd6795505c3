"""One JSON object per log line, with the request id of the work at hand."""

from __future__ import annotations

import importlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from api.edge import TrustedProxies
from storage.logformat import (
    RequestIdFilter,
    current_request_id,
    formatter_for,
    request_id_context,
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the service's formatter and filter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("tests.logformat")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestJsonLines:
    def test_a_line_carries_level_logger_message_time_and_the_request_id(self, captured):
        logger, stream = captured
        logger.handlers[0].setFormatter(formatter_for("json"))
        with request_id_context("req-1"):
            logger.info("recorded %d", 3, extra={"notifications": [1, 2, 3]})
        logger.warning("outside")
        inside, outside = lines(stream)
        assert inside["message"] == "recorded 3"
        assert (inside["level"], inside["logger"]) == ("INFO", "tests.logformat")
        assert inside["request_id"] == "req-1" and inside["notifications"] == [1, 2, 3]
        assert inside["time"].endswith("+00:00")
        assert "request_id" not in outside
        assert current_request_id.get() is None

    def test_a_traceback_stays_inside_its_line(self, captured):
        logger, stream = captured
        logger.handlers[0].setFormatter(formatter_for("json"))
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
        (line,) = lines(stream)
        assert "RuntimeError: boom" in line["exc_info"]

    def test_text_lines_for_a_person_name_the_request_too(self, captured):
        logger, stream = captured
        logger.handlers[0].setFormatter(formatter_for("text"))
        with request_id_context("req-2"):
            logger.info("hello")
        assert stream.getvalue().rstrip().endswith("tests.logformat: hello request_id=req-2")


class TestGunicornConfig:
    def test_gunicorn_trusts_exactly_the_peers_the_app_trusts(self, monkeypatch):
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8, 192.0.2.1")
        config = importlib.reload(importlib.import_module("api.gunicorn_conf"))
        assert config.forwarded_allow_ips == "10.0.0.0/8,192.0.2.1"
        proxies = TrustedProxies(lambda *_: [], ("10.0.0.0/8", "192.0.2.1"))
        assert proxies.trusts("10.9.9.9") and proxies.trusts("192.0.2.1")
        assert proxies.trusts("::ffff:10.1.1.1")
        assert not proxies.trusts("192.0.2.2") and not proxies.trusts("127.0.0.1")

    def test_unset_gunicorn_trusts_nobody_where_its_own_default_is_loopback(self, monkeypatch):
        monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
        config = importlib.reload(importlib.import_module("api.gunicorn_conf"))
        assert config.forwarded_allow_ips == ""

    def test_the_access_line_is_json_with_the_request_id(self, captured, monkeypatch):
        logger, stream = captured
        logger.handlers[0].setFormatter(formatter_for("json"))
        config = importlib.import_module("api.gunicorn_conf")
        access = object.__new__(config.JsonLogger)
        access.access_log = logger

        class Response:
            status = "404 NOT FOUND"

        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/nowhere",
            "QUERY_STRING": "a=1",
            "REMOTE_ADDR": "198.51.100.7",
            "auditlog.request_id": "req-3",
        }
        access.access(Response(), None, environ, timedelta(milliseconds=12))
        (line,) = lines(stream)
        assert line["message"] == "GET /nowhere?a=1 404"
        assert (line["status"], line["request_id"], line["remote_addr"]) == (
            404,
            "req-3",
            "198.51.100.7",
        )
        assert line["duration_ms"] == 12.0
