"""The bench's bulk load leaves the log tables exactly as the migrations made them.

``fill_events(bulk=True)`` drops the secondary indexes of ``events`` and ``event_subjects``
for the load and builds them again: afterwards the catalog (indexes, constraints,
triggers, columns, storage options) reads as it did after ``upgrade``, the append-only
triggers still refuse changes, the rows are those of the default path, and a load that
fails rolls the drops back with everything else.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, ProgrammingError

import bench.data
from bench.data import fill_events, indexes, schema_snapshot
from bench.services import BenchDatabase
from storage.db import Database
from storage.migrate import upgrade
from tests.conftest import postgres_admin_url

pytestmark = pytest.mark.postgres

ROWS = 20_000

#: Every column but the two a load stamps with its own moment and transaction.
ROW_DIGEST = """
SELECT md5(string_agg(row(id, org_id, type, occurred_at, entity_type, entity_id,
                          entity_name, targets, actor_type, actor_id, ip_address, origin,
                          position, details)::text, ',' ORDER BY id)),
       (SELECT md5(string_agg(row(s.*)::text, ',' ORDER BY s.event_id)) FROM event_subjects s)
FROM events
"""


def migrated() -> Iterator[Engine]:
    with BenchDatabase(postgres_admin_url()) as db:
        database = Database(db.url)
        upgrade(database)
        yield database.engine
        database.engine.dispose()


@pytest.fixture
def engine() -> Iterator[Engine]:
    yield from migrated()


@pytest.fixture
def other_engine() -> Iterator[Engine]:
    yield from migrated()


def snapshot(engine: Engine) -> dict[str, list[object]]:
    with engine.connect() as connection:
        return schema_snapshot(connection)


class TestBulkLoad:
    def test_the_schema_reads_as_the_migrations_left_it(self, engine):
        before = snapshot(engine)
        # What the comparison covers, so that an empty snapshot cannot pass.
        assert {row[1] for row in before["indexes"]} == {
            "pk_events",
            "pk_event_subjects",
            "ix_events_notification",
            "ix_events_org_actor_time",
            "ix_events_org_entity_type_time",
            "ix_events_org_ip",
            "ix_events_org_time",
            "ix_events_org_type_time",
            "ix_events_txid",
        }
        assert {row[1] for row in before["triggers"]} == {
            "events_append_only",
            "events_no_truncate",
            "event_subjects_append_only",
            "event_subjects_no_truncate",
        }
        with engine.begin() as connection:
            loaded = fill_events(connection, ROWS, orgs=10, bulk=True)
        assert sorted(loaded.rebuilt) == sorted(
            row[1] for row in before["indexes"] if row[1] != "pk_events"
        )
        assert snapshot(engine) == before
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM events").scalar() == ROWS
            subjects = connection.exec_driver_sql("SELECT count(*) FROM event_subjects").scalar()
            assert subjects == ROWS
            # The planner's statistics were taken after the rebuild.
            analysed = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stats WHERE tablename IN ('events', 'event_subjects')"
            ).scalar()
            assert analysed > 0

    def test_the_rebuilt_indexes_are_valid_and_used(self, engine):
        with engine.begin() as connection:
            fill_events(connection, ROWS, orgs=10, bulk=True)
        with engine.connect() as connection:
            invalid = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_index WHERE NOT (indisvalid AND indisready AND indislive)"
                " AND indrelid IN ('events'::regclass, 'event_subjects'::regclass)"
            ).scalar()
            assert invalid == 0
            connection.exec_driver_sql("SET enable_seqscan = off")
            plan = connection.exec_driver_sql(
                "EXPLAIN SELECT * FROM event_subjects WHERE org_id = 'org_3'"
                " AND entity_type = 'person' AND entity_id = 'e3'"
            ).all()
            assert "pk_event_subjects" in " ".join(row[0] for row in plan)

    @pytest.mark.parametrize(
        "statement",
        ["UPDATE events SET type = 'app.created'", "DELETE FROM event_subjects", "TRUNCATE events"],
    )
    def test_the_log_still_refuses_changes(self, engine, statement):
        with engine.begin() as connection:
            fill_events(connection, 1_000, orgs=10, bulk=True)
        with engine.connect() as connection, pytest.raises(ProgrammingError, match="append-only"):
            connection.exec_driver_sql(statement)

    def test_the_rows_are_those_of_the_default_path(self, engine, other_engine):
        with engine.begin() as connection:
            fill_events(connection, ROWS, orgs=10, bulk=True)
            fill_events(connection, 500, org_id="org_x", bulk=True)
        with other_engine.begin() as connection:
            fill_events(connection, ROWS, orgs=10)
            fill_events(connection, 500, org_id="org_x")
        digests = []
        for each in (engine, other_engine):
            with each.connect() as connection:
                digests.append(tuple(connection.exec_driver_sql(ROW_DIGEST).one()))
                last = connection.exec_driver_sql("SELECT last_value FROM events_id_seq").scalar()
                assert last == ROWS + 500
        assert digests[0] == digests[1]

    def test_a_failed_load_rolls_the_drops_back(self, engine, monkeypatch):
        before = snapshot(engine)
        # Fails after the indexes are dropped and the events inserted.
        monkeypatch.setattr(bench.data, "INSERT_SUBJECTS", "SELECT 1 / 0")
        with pytest.raises(DBAPIError, match="division by zero"), engine.begin() as connection:
            fill_events(connection, ROWS, orgs=10, bulk=True)
        assert snapshot(engine) == before
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM events").scalar() == 0

    def test_autocommit_is_refused_before_anything_is_dropped(self, engine):
        before = snapshot(engine)
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as connection, pytest.raises(ValueError, match="transaction"):
            fill_events(connection, ROWS, orgs=10, bulk=True)
        assert snapshot(engine) == before
        with engine.connect() as connection:
            assert len(indexes(connection)) == len(before["indexes"])
