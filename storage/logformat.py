"""How every process logs: one JSON object per line on stdout, carrying the request id.

Web, worker and beat call ``configure_logging`` once at start (gunicorn through
``api/gunicorn_conf.py``, Celery through its ``setup_logging`` signal). The request id of
the work at hand lives in a context variable: the web sets it for each request, the worker
for each task from its message; every line logged meanwhile carries it. ``LOG_FORMAT=text``
gives plain lines for a person at a terminal instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The request whose work is being done: set around a request or a task, else None.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)

LOG_FORMATS = ("json", "text")

JSON_FIELDS = "%(levelname)s %(name)s %(processName)s %(process)d %(message)s"
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s%(request_suffix)s"


@contextmanager
def request_id_context(request_id: str | None) -> Iterator[None]:
    """Every line logged inside carries ``request_id`` (unless it names its own)."""
    token = current_request_id.set(request_id)
    try:
        yield
    finally:
        current_request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to a record from the context, unless the call passed one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = current_request_id.get()
            if request_id is not None:
                record.request_id = request_id
        request_id = getattr(record, "request_id", None)
        record.request_suffix = f" request_id={request_id}" if request_id else ""
        return True


class JsonLineFormatter(JsonFormatter):
    """python-json-logger's formatter: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``process`` (its name), ``pid``, ``message``, then every ``extra`` field; a traceback
    is ``exc_info``."""

    def __init__(self) -> None:
        super().__init__(
            JSON_FIELDS,
            rename_fields={
                "levelname": "level",
                "name": "logger",
                "processName": "process",
                "process": "pid",
            },
            timestamp="time",
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("request_suffix", None)
        log_data.pop("color_message", None)


def formatter_for(log_format: str) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonLineFormatter()


def parse_log_format(raw: str | None) -> str:
    value = (raw or "").strip().lower() or "json"
    if value not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")
    return value


def configure_logging(log_format: str = "json", level: int | str = logging.INFO) -> None:
    """The root logger writes to stdout in ``log_format``; every other logger propagates to
    it (their own handlers are removed, so nothing is written twice), and Python's warnings
    become log lines too."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
