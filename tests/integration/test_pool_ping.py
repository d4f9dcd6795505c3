"""Pooled PostgreSQL connections: pinged only after being idle, replaced when dead."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine

from storage import db as storage_db
from storage.db import Database

pytestmark = pytest.mark.postgres


def backend_pid(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


@pytest.fixture
def pings(monkeypatch):
    counted: list[int] = []

    def count(database: Database) -> list[int]:
        dialect = database.engine.dialect
        original = dialect.do_ping

        def do_ping(dbapi_connection):
            counted.append(1)
            return original(dbapi_connection)

        monkeypatch.setattr(dialect, "do_ping", do_ping)
        return counted

    return count


class TestIdlePing:
    def test_a_connection_killed_while_idle_is_replaced_before_the_caller_sees_it(
        self, postgres_url, monkeypatch
    ):
        monkeypatch.setattr(storage_db, "PING_IDLE_SECONDS", 0.2)
        database = Database(postgres_url)
        killer = create_engine(postgres_url)
        try:
            first = backend_pid(database)
            with killer.connect() as connection:
                connection.exec_driver_sql(f"SELECT pg_terminate_backend({first})")
            time.sleep(0.3)
            # No error: the pool found the dead connection and connected anew.
            assert backend_pid(database) != first
        finally:
            database.engine.dispose()
            killer.dispose()

    def test_a_connection_in_use_a_moment_ago_is_not_pinged(self, postgres_url, pings):
        database = Database(postgres_url)
        counted = pings(database)
        try:
            same = {backend_pid(database) for _ in range(20)}
            assert len(same) == 1 and counted == []
            time.sleep(storage_db.PING_IDLE_SECONDS + 0.1)
            assert backend_pid(database) in same
            assert counted == [1]
        finally:
            database.engine.dispose()
