"""Engines and units of work.

The caller owns the session: a request, a task or a ``with database.unit_of_work():`` block.
Functions that touch the database take the session; they never create, commit or close one.
The exceptions are the statements that stand alone on a request's hot path, which take the
``Database`` and run on ``driver_autocommit``: ``inbox.accept`` (which commits what it
stores) and ``accounts.identify_key_alone``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from storage import jsoncodec


def ip_in_network(address: str | None, network: str) -> int:
    """SQLite's stand-in for PostgreSQL's ``inet <<= cidr``."""
    if address is None:
        return 0
    try:
        return int(ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False))
    except ValueError:
        return 0


def _configure_sqlite(engine: Engine) -> None:
    """WAL, full syncs, a busy timeout, and explicit BEGINs so that writers take the lock first.

    ``synchronous=FULL`` on every connection: in WAL mode ``NORMAL`` syncs the log only at
    checkpoints, so a commit (the inbox's, before its 202) could be lost with the power;
    ``FULL`` syncs the log at every commit, which is what makes a 202 durable.

    pysqlite's own transaction handling is switched off (the SQLAlchemy recipe for
    "Serializable isolation / Savepoints / Transactional DDL"); a unit of work opened with
    ``write=True`` begins with ``BEGIN IMMEDIATE`` and so never fails half-way on a lock
    upgrade: writers queue for the database lock instead.
    """

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        dbapi_connection.create_function("auditlog_ip_in", 2, ip_in_network, deterministic=True)

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: A pooled connection unused for this long is pinged before it is handed out, so that a
#: server restarted meanwhile is noticed there (the pool then connects anew) rather than by
#: the request. Under load connections come back within milliseconds and cost no ping: the
#: ping was one of a webhook's four round trips with ``pool_pre_ping``.
PING_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("checked_in_at")
        if returned is None or time.monotonic() - returned < PING_IDLE_SECONDS:
            return  # a new connection, or one in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and hands out a fresh one.
            raise DisconnectionError("the pooled connection no longer answers") from exc


def _json_through_orjson(engine: Engine) -> None:
    """Every connection reads and writes ``json``/``jsonb`` through ``storage.jsoncodec``
    (the same values as the standard library, several times faster)."""
    from psycopg.types.json import set_json_dumps, set_json_loads

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        set_json_loads(jsoncodec.loads, dbapi_connection)
        set_json_dumps(jsoncodec.dumps_bytes, dbapi_connection)


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    # A server that is down must fail a request fast (503), not hang it.
    engine = create_engine(url, connect_args={"connect_timeout": 5}, **kwargs)
    _ping_when_idle(engine)
    if engine.dialect.driver == "psycopg":
        _json_through_orjson(engine)
    return engine


class Database:
    """One engine per process, and the sessions made from it."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            bind=self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        # PostgreSQL: each statement is its own transaction, with no BEGIN and COMMIT (or
        # ROLLBACK) round trips around it. SQLite keeps its own sessions: a writer's BEGIN
        # IMMEDIATE queues it for the lock.
        if self.dialect == "postgresql":
            autocommit = sessionmaker(
                bind=self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )
            self._statement_sessions = autocommit
        else:
            self._statement_sessions = self._sessions

    def session(self, write: bool = False) -> Session:
        return (self._write_sessions if write else self._sessions)()

    @contextmanager
    def unit_of_work(self, write: bool = False) -> Iterator[Session]:
        """A session that rolls back unless the block commits it explicitly.

        ``close`` rolls back what was not committed and detaches the objects without
        expiring them, so what the block read stays readable after it.
        """
        session = self.session(write=write)
        try:
            yield session
        finally:
            session.close()

    @contextmanager
    def statement_at_a_time(self) -> Iterator[Session]:
        """A session for work whose every statement stands alone (a page's one SELECT): on
        PostgreSQL each statement is its own transaction, so ``commit()`` and ``close()``
        send nothing; elsewhere it is ``unit_of_work()``. Not for what needs locks held
        or ``SET LOCAL``."""
        session = self._statement_sessions()
        try:
            yield session
        finally:
            session.close()

    @contextmanager
    def driver_autocommit(self) -> Iterator[Any]:
        """PostgreSQL: a pooled psycopg connection in autocommit, for the hot statements
        that stand alone: the webhook's INSERT into the inbox (and, when it inserts
        nothing, its look at the source), and every keyed request's key lookup.

        A Session and a Connection around one statement cost about a millisecond of Python
        per request, as much as the statement's own round trip and commit. This keeps what
        they give that matters here: the pool (with its idle ping); on a lost server, the
        dead connection thrown away and the pool's others with it (SQLAlchemy invalidates
        the whole pool on a disconnect too); and SQLAlchemy's exception classes, so that a
        server that is down, at connect or mid-statement, is ``OperationalError`` (a 503).
        """
        if self.dialect != "postgresql":
            raise RuntimeError("driver_autocommit is for PostgreSQL only")
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            pooled = self.engine.raw_connection()
        except dbapi_error as exc:  # refused, or the idle ping's reconnect refused
            raise DBAPIError.instance(
                None, None, exc, dbapi_error, connection_invalidated=True
            ) from exc
        driver: Any = pooled.driver_connection  # a psycopg Connection
        try:
            driver.autocommit = True
            yield driver
        except dbapi_error as exc:
            raise _translated(self.engine, exc, driver, pooled.invalidate) from exc
        finally:
            # Back in the pool as SQLAlchemy expects it, a connection that opens
            # transactions; one that cannot be put back so is thrown away.
            try:
                if not (driver.closed or driver.broken):
                    driver.autocommit = False
            except dbapi_error as exc:
                pooled.invalidate(exc)
            finally:
                pooled.close()

    def dispose(self) -> None:
        """Drop pooled connections; called in each worker process after fork."""
        self.engine.dispose(close=False)


@contextmanager
def driver_of(session: Session) -> Iterator[Any]:
    """PostgreSQL: the session's own psycopg connection, in the session's transaction, for
    the statements SQLAlchemy's per-parameter and per-row Python would slow down (the
    worker's batch statements, COPY in and out).

    A psycopg error raised in the block comes out as ``Session.execute`` would raise it:
    SQLAlchemy's class for it (``OperationalError`` for a lost server, which the worker
    treats as transient instead of charging the notification an attempt), with a lost
    connection invalidated and the pool's others thrown away, so that the pool does not
    hand out a dead one again. Pending ORM changes are flushed first, as ``execute`` would.
    """
    session.flush()  # what Session.execute's autoflush would send first
    connection = session.connection()
    pooled = connection.connection
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        yield pooled.driver_connection
    except dbapi_error as exc:
        raise _translated(
            connection.engine, exc, pooled.dbapi_connection, connection.invalidate
        ) from exc


def _translated(
    engine: Engine, exc: Any, driver: Any, invalidate: Callable[[Exception], None]
) -> StatementError:
    """A psycopg error as SQLAlchemy's class for it. On a lost server the connection is
    invalidated and the pool's others thrown away, since they are dead too (SQLAlchemy
    invalidates the whole pool on a disconnect as well)."""
    lost = engine.dialect.is_disconnect(exc, driver, None)
    if lost:
        invalidate(exc)
        engine.dispose()
    return DBAPIError.instance(
        None, None, exc, engine.dialect.loaded_dbapi.Error, connection_invalidated=lost
    )
