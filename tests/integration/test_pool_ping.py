"""Pooled PostgreSQL connections: pinged only after being idle, replaced when dead."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

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


class TestDriverAutocommit:
    """``Database.driver_autocommit``: the webhook's straight-to-the-driver statement."""

    @pytest.fixture
    def database(self, postgres_url):
        database = Database(postgres_url)
        yield database
        database.engine.dispose()

    def test_it_hands_back_a_connection_that_opens_transactions_again(self, database):
        with database.driver_autocommit() as connection:
            pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            connection.execute("CREATE TEMPORARY TABLE scratch (n int)")
            connection.execute("INSERT INTO scratch VALUES (1)")  # committed at once
        with database.unit_of_work() as session:
            # The same pooled connection, out of autocommit: what is not committed goes.
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
            session.execute(text("INSERT INTO scratch VALUES (2)"))
        with database.unit_of_work() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
            assert list(session.scalars(text("SELECT n FROM scratch"))) == [1]

    def test_a_connection_that_died_is_a_wrapped_error_and_is_not_pooled_again(
        self, database, postgres_url
    ):
        killer = create_engine(postgres_url)
        try:
            with pytest.raises(OperationalError) as raised:
                with database.driver_autocommit() as connection:
                    pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
                    with killer.connect() as other:
                        other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
                    connection.execute("SELECT 1")
            assert raised.value.connection_invalidated
            assert backend_pid(database) != pid
        finally:
            killer.dispose()

    def test_a_lost_server_throws_the_pools_other_connections_away_too(
        self, database, postgres_url
    ):
        killer = create_engine(postgres_url)
        try:
            # Two pooled connections, both used a moment ago (so neither is pinged).
            first = database.engine.raw_connection()
            second = database.engine.raw_connection()
            pids = [
                c.driver_connection.execute("SELECT pg_backend_pid()").fetchone()[0]
                for c in (first, second)
            ]
            first.close()
            second.close()
            with killer.connect() as other:
                for pid in pids:
                    other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            time.sleep(0.1)
            with pytest.raises(OperationalError):
                with database.driver_autocommit() as connection:
                    connection.execute("SELECT 1")
            # The next statement gets a live connection, not the pool's other dead one.
            with database.driver_autocommit() as connection:
                pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert pid not in pids
        finally:
            killer.dispose()

    def test_a_server_that_refuses_is_operational_error(self, postgres_url):
        nobody = make_url(postgres_url).set(host="127.0.0.1", port=1)  # nothing listens
        refused = Database(nobody.render_as_string(hide_password=False))
        try:
            with pytest.raises(OperationalError):
                with refused.driver_autocommit():
                    pass
        finally:
            refused.engine.dispose()

    def test_any_error_in_the_block_hands_the_connection_back_as_it_was(self, database):
        with pytest.raises(ValueError):
            with database.driver_autocommit() as connection:
                pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
                raise ValueError("not the database's")
        with database.unit_of_work() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid
            assert session.connection().connection.driver_connection.autocommit is False

    def test_an_error_in_the_statement_leaves_the_connection_usable(self, database):
        with pytest.raises(ProgrammingError):
            with database.driver_autocommit() as connection:
                pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
                connection.execute("SELECT * FROM no_such_table")
        assert backend_pid(database) == pid
