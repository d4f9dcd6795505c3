"""Liveness and readiness probes: ``GET /healthz`` and ``GET /readyz`` (no API key).

``/healthz`` answers while the process serves and touches nothing else. ``/readyz`` asks
the database (``SELECT 1``) and the broker (a Redis ``PING``, or for the filesystem
transport its folder) and answers 503 naming the one that does not answer. Every check is
bounded by short timeouts, so a dead or unreachable server costs the probe a few seconds
at most, never a hung request; an error is summarised in the body (its class, never a
stack trace nor a host name) and logged in full.

These are operational endpoints outside ``/v1``: they are not in the OpenAPI document and
not in any rate-limited blueprint.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from api.context import services
from storage.db import Database
from storage.settings import Settings

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)

OK = "ok"
#: libpq's connect timeout (whole seconds; libpq treats anything below 2 as 2).
DATABASE_CONNECT_TIMEOUT_SECONDS = 2
#: The server-side bound of the probe's statement, and (where libpq has it) the TCP
#: bound of unacknowledged data, so a server that vanishes mid-probe fails it too.
DATABASE_STATEMENT_TIMEOUT_MS = 2000
REDIS_TIMEOUT_SECONDS = 1.0


def _summary(exception: BaseException) -> str:
    """``error: <class>`` of the driver's own exception (SQLAlchemy wraps it in ``orig``)."""
    cause = getattr(exception, "orig", None) or exception
    return f"error: {type(cause).__name__}"


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.route("/healthz", methods=["GET"])
def healthz() -> Any:
    """200 while the process serves."""
    return _no_store(jsonify(status="ok"))


@blueprint.route("/readyz", methods=["GET"])
def readyz() -> Any:
    """200 when the database and the broker answer; else 503 naming the failing check."""
    runtime = services()
    # Side by side, so the worst case is the slower check's timeouts, not their sum.
    with ThreadPoolExecutor(max_workers=1) as pool:
        broker = pool.submit(check_broker, runtime.settings)
        checks = {"database": check_database(runtime.database), "broker": broker.result()}
    ready = all(value == OK for value in checks.values())
    response = jsonify(status="ready" if ready else "unavailable", checks=checks)
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return _no_store(response)


def _probe_engine(database: Database) -> Engine:
    """The engine the database check connects through.

    For PostgreSQL one of the probe's own, kept per app: no pool (each probe makes a fresh
    connection, so a restarted server is never seen through a stale one, and a probe never
    waits for a connection the requests hold) and short timeouts, where the app's engine
    waits up to 5 s to connect. Other backends (SQLite) use the app's engine.
    """
    if database.dialect != "postgresql":
        return database.engine
    engines: dict[str, Engine] = current_app.extensions.setdefault("auditlog.readiness", {})
    engine = engines.get(database.url)
    if engine is None:
        connect_args: dict[str, Any] = {"connect_timeout": DATABASE_CONNECT_TIMEOUT_SECONDS}
        if _libpq_version() >= 120000:  # tcp_user_timeout is a libpq 12 option
            connect_args["tcp_user_timeout"] = DATABASE_STATEMENT_TIMEOUT_MS
        engine = engines[database.url] = create_engine(
            database.url, poolclass=NullPool, connect_args=connect_args
        )
    return engine


def _libpq_version() -> int:
    try:
        import psycopg

        return int(psycopg.pq.version())
    except Exception:  # no psycopg, or a libpq that cannot say: the option is left out
        return 0


def check_database(database: Database) -> str:
    """``ok`` when ``SELECT 1`` answers within the timeouts, else an error summary."""
    try:
        engine = _probe_engine(database)
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                # LOCAL: a session-level SET would stay on a pooler's server connection.
                connection.exec_driver_sql(
                    f"SET LOCAL statement_timeout = {DATABASE_STATEMENT_TIMEOUT_MS}"
                )
            connection.exec_driver_sql("SELECT 1").scalar_one()
    except Exception as exc:
        log.warning("readiness: the database does not answer: %s", exc)
        return _summary(exc)
    return OK


def check_broker(settings: Settings) -> str:
    """A Redis PING with 1 s timeouts and no retry, or the filesystem transport's folders."""
    try:
        if settings.redis_url:
            _ping_redis(settings.redis_url)
            return OK
        return _check_broker_folder(settings.var_dir)
    except Exception as exc:
        log.warning("readiness: the broker does not answer: %s", exc)
        return _summary(exc)


def _ping_redis(url: str) -> None:
    """A client of the probe's own, closed after one PING: no stale pooled connection."""
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    finally:
        client.close()


def _check_broker_folder(var_dir: Path) -> str:
    """The folders ``worker.queue.broker_settings`` gives kombu's filesystem transport
    exist, and the queue folder (where messages are written) is writable."""
    folder = (var_dir / "broker").resolve()
    for name in ("queue", "processed", "control"):
        if not (folder / name).is_dir():
            log.warning("readiness: the broker folder %s is missing", folder / name)
            return "error: broker folder missing"
    if not os.access(folder / "queue", os.W_OK | os.X_OK):
        log.warning("readiness: the broker folder %s is not writable", folder / "queue")
        return "error: broker folder not writable"
    return OK
