"""gunicorn's settings for the ``web`` process (``gunicorn -c python:api.gunicorn_conf``).

- Its own lines and the access log go through ``storage.logformat``: one JSON object per
  line (``LOG_FORMAT=text`` for plain lines), the access line with the request's method,
  path, status, duration, client address and ``request_id`` (the one the app echoed).
- ``forwarded_allow_ips`` is ``FORWARDED_ALLOW_IPS``, the very list the app trusts for
  ``X-Forwarded-*`` (``api.edge``), so that gunicorn and the app agree on who is a proxy.
  Unset, nobody is (gunicorn's own default would trust 127.0.0.1).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from api.edge import REQUEST_ID_ENVIRON_KEY
from storage.logformat import configure_logging
from storage.settings import (
    ConfigurationError,
    Settings,
    parse_forwarded_allow_ips,
    settings_or_exit,
)

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
forwarded_allow_ips = ",".join(parse_forwarded_allow_ips(os.environ.get("FORWARDED_ALLOW_IPS")))
accesslog = "-"
# An idle sync worker stops at once; one serving a long-poll gets this long to finish it.
graceful_timeout = 30


def post_worker_init(worker: Any) -> None:
    """Said once a worker has loaded the app: from then on it stops at once on SIGTERM.

    What the app holds from then on (modules, the app, its schemas) is left out of the
    garbage collector's full passes (``gc.freeze()``), which would otherwise walk it again
    and again for the short-lived objects of each request, as in the worker."""
    gc.collect()  # what is garbage now would never be freed once frozen
    gc.freeze()
    worker.log.info("worker %s ready", worker.pid)


class JsonLogger(glogging.Logger):
    """gunicorn's logger, writing through the root logger the app logs to."""

    def setup(self, cfg: Any) -> None:
        try:
            log_format = Settings.log_format_from_env()
        except ConfigurationError as exc:  # before any log line: say it plainly and stop
            print(f"auditlog: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        configure_logging(log_format, logging.INFO)
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True
        self.error_log.setLevel(self.loglevel)
        self.access_log.setLevel(logging.INFO)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        status = getattr(resp, "status_code", None) or str(resp.status).split(" ", 1)[0]
        path = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        self.access_log.info(
            "%s %s %s",
            environ.get("REQUEST_METHOD"),
            path,
            status,
            extra={
                "method": environ.get("REQUEST_METHOD"),
                "path": path,
                "status": int(status),
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
                "request_id": environ.get(REQUEST_ID_ENVIRON_KEY),
            },
        )


logger_class = JsonLogger


def on_starting(server: Any) -> None:
    """Read the configuration once in the arbiter, before any worker forks: a setting the
    service cannot run with stops gunicorn with its reason (exit 2), instead of workers
    failing to boot one after another while the arbiter shuts down."""
    settings_or_exit()
