"""On PostgreSQL the worker's batch statements run on psycopg itself (``storage.state``):
their keys as one array, ``= ANY(%s)``, never prepared. They must read and write exactly
what the portable SQLAlchemy statements (SQLite's, and PostgreSQL's before) read and write,
in the same order, whatever the session's time zone; and psycopg must never prepare them,
since the generic plan of ``= ANY($1)`` filters an organisation's rows instead of seeking
the index (88 ms a batch on a never-analysed table, against a few ms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError, StatementError

from storage import state
from storage.db import Database
from storage.models import Notification
from worker import processing
from worker.recorder import entity_row, entity_state

pytestmark = pytest.mark.postgres

PEOPLE = 1500
NOTIFICATIONS = 60
ORG, OTHER = "org_statements", "org_other"


@pytest.fixture
def tokyo(postgres_url: str) -> Iterator[Database]:
    """The database, through sessions whose time zone is not UTC."""
    database = Database(postgres_url + "?options=-c%20timezone%3DAsia/Tokyo")
    moment = datetime(2026, 11, 30, 23, 30, 0, 123456, UTC)
    with database.unit_of_work(write=True) as session:
        for org_id in (ORG, OTHER):
            rows = [
                {
                    "org_id": org_id,
                    "entity_type": "person",
                    "entity_id": f"p{index}",
                    "parent_id": None,
                    "properties": {"name": f"Person {index}", "level": index % 7, "x": [1, {}]},
                    "clocks": {"props": {"name": [index, 0]}, "snapshot": [index, 1]},
                    "deleted": index % 11 == 0,
                    "baseline": {"clock": [1, 0]} if index % 5 == 0 else None,
                    "updated_at": None if index % 3 == 0 else moment + timedelta(seconds=index),
                }
                for index in range(PEOPLE)
            ]
            rows += [
                {
                    "org_id": org_id,
                    "entity_type": "app",
                    "entity_id": f"a{index}",
                    "parent_id": None,
                    "properties": {"name": f"App {index}"},
                    "clocks": {},
                    "deleted": False,
                    "baseline": None,
                    "updated_at": moment,
                }
                for index in range(20)
            ]
            session.execute(insert(state.entities), rows)
            session.execute(
                insert(state.edges),
                [
                    {
                        "org_id": org_id,
                        "kind": kind,
                        "a_id": a_id,
                        "b_id": b_id,
                        "present": index % 4 != 0,
                        "clock_us": index,
                        "clock_seq": 0,
                    }
                    for index in range(PEOPLE)
                    for kind, a_id, b_id in (
                        ("app_person", f"a{index % 20}", f"p{index}"),
                        ("team_person", "t1", f"p{index}"),
                        ("device_person", f"d{index}", f"p{(index * 7) % PEOPLE}"),
                    )
                ],
            )
        session.execute(
            insert(Notification.__table__),
            [
                {
                    "org_id": ORG if index % 4 else OTHER,
                    "source_id": None,
                    "external_id": f"n{index}",
                    "kind": "snapshot",
                    "entity_type": "person",
                    "entity_id": f"p{index}",
                    # Out of pk order, with ties broken by sequence and then pk.
                    "occurred_at": moment - timedelta(seconds=index % 7),
                    "sequence": index % 3,
                    "payload": {"index": index},
                    "status": "processed" if index % 5 == 0 else "queued",
                    "attempts": index % 2,
                    "error": "an earlier failure" if index % 2 else None,
                    "received_at": moment,
                    "enqueued_at": moment,
                    "processed_at": moment if index % 5 == 0 else None,
                }
                for index in range(NOTIFICATIONS)
            ],
        )
        session.commit()
    yield database
    database.engine.dispose()


def both_ways(
    database: Database, monkeypatch: pytest.MonkeyPatch, work: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """``work`` in a transaction on psycopg's path, then on the portable one; each rolled
    back, so both start from the same rows."""
    results = []
    for portable in (False, True):
        with monkeypatch.context() as patch:
            if portable:
                patch.setattr(state, "on_postgresql", lambda _session: False)
            with database.unit_of_work(write=True) as session:
                results.append(work(session))
    return results[0], results[1]


def plain(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows as tuples with their column names (an aware datetime compares as an instant)."""
    return [tuple(zip(row._fields, row, strict=True)) for row in rows]


SUBJECTS = {("person", f"p{index}") for index in range(0, PEOPLE, 2)} | {
    ("person", "never-seen-1"),
    ("app", "a3"),
}
SHARED = {("app", f"a{index}") for index in range(10)} | {("person", "p1"), ("team", "t1")}


def test_lock_and_load_read_the_same_rows_in_the_same_order(tokyo, monkeypatch):
    def lock(session: Any) -> Any:
        rows = state.lock_entities(session, ORG, SUBJECTS, SHARED)
        edges = state.lock_edges_of(session, ORG, SUBJECTS)
        loaded = state.load_entities(session, ORG, {("person", "p3"), ("app", "a19")})
        return plain(rows), [entity_state(r) for r in rows], plain(edges), plain(loaded)

    fast, portable = both_ways(tokyo, monkeypatch, lock)
    assert fast == portable
    rows, states, edges, loaded = fast
    assert len(rows) == len(SUBJECTS | SHARED)  # the unseen ones created empty, then locked
    assert all(dict(row)["org_id"] == ORG for row in rows + edges)
    assert {s.updated_us for s in states} - {None}  # times came through, as the same instants
    # Every edge of every subject and no other: each even person's three, and a3's to odd ones.
    assert len(edges) == 3 * (PEOPLE // 2) + PEOPLE // 20
    assert [dict(row)["entity_id"] for row in loaded] == ["a19", "p3"]


def test_state_written_back_is_the_same_row_for_row(tokyo, monkeypatch):
    moment = datetime(2026, 12, 1, 8, 0, 0, 654321, UTC)

    def write(session: Any) -> Any:
        rows = state.lock_entities(session, ORG, SUBJECTS, ())
        changed = []
        for row in rows:
            entity = entity_state(row)
            entity.properties["title"] = f"Title of {entity.id}"
            entity.prop_clocks["title"] = (10**15, 3)
            changed.append(entity_row(ORG, entity, moment if entity.id != "p2" else None))
        state.save_entities(session, changed)
        state.save_edges(
            session,
            [
                {
                    "org_id": ORG,
                    "kind": "app_person",
                    "a_id": f"a{index % 20}",
                    "b_id": f"p{index}",
                    "present": index % 3 == 0,
                    "clock_us": 10**15 + index,
                    "clock_seq": 1,
                }
                for index in range(0, PEOPLE, 5)
            ]
            + [
                {
                    "org_id": ORG,
                    "kind": "license_person",
                    "a_id": "l1",
                    "b_id": "p0",
                    "present": True,
                    "clock_us": 1,
                    "clock_seq": 0,
                }
            ],
        )
        order = (state.entities.c.org_id, state.entities.c.entity_type, state.entities.c.entity_id)
        # JSON null and SQL NULL both read back as None: their types tell them apart.
        baseline_type = func.jsonb_typeof(state.entities.c.baseline).label("baseline_type")
        entities = session.execute(
            select(state.entities, baseline_type, state.entities.c.baseline.is_(None)).order_by(
                *order
            )
        ).all()
        edges = session.execute(
            select(state.edges).order_by(
                state.edges.c.org_id, state.edges.c.kind, state.edges.c.a_id, state.edges.c.b_id
            )
        ).all()
        return plain(entities), plain(edges)

    fast, portable = both_ways(tokyo, monkeypatch, write)
    assert fast == portable
    entities = [dict(row) for row in fast[0]]
    p0 = next(row for row in entities if row["org_id"] == ORG and row["entity_id"] == "p0")
    assert p0["properties"]["title"] == "Title of p0" and p0["updated_at"] == moment
    untouched = next(row for row in entities if row["org_id"] == OTHER and row["entity_id"] == "p0")
    assert "title" not in untouched["properties"]


def all_notification_pks(session: Any) -> list[int]:
    return list(session.scalars(select(Notification.pk).order_by(Notification.pk)))


def test_a_message_locks_and_marks_its_notifications_the_same_way(tokyo, monkeypatch):
    moment = datetime(2026, 12, 1, 9, 0, 0, 1, UTC)

    def work(session: Any) -> Any:
        pks = all_notification_pks(session)
        locked = processing.lock_queued(session, pks[5:] + [10**12])
        state.mark_processed(session, [row.pk for row in locked][::2], moment)
        table = state.notifications
        after = session.execute(select(table).order_by(table.c.pk)).all()
        return plain(locked), plain(after)

    fast, portable = both_ways(tokyo, monkeypatch, work)
    assert fast == portable
    locked, after = (list(map(dict, rows)) for rows in fast)
    assert len(locked) == len([i for i in range(5, NOTIFICATIONS) if i % 5])  # queued ones
    clock = [(row["occurred_at"], row["sequence"], row["pk"]) for row in locked]
    assert clock == sorted(clock) and clock != sorted(clock, key=lambda c: c[2])
    marked = {row["pk"] for row in locked[::2]}
    for row in after:
        if row["pk"] in marked:
            assert (row["status"], row["processed_at"], row["error"]) == (
                "processed",
                moment,
                None,
            )
    assert sum(row["status"] == "processed" for row in after) == len(marked) + NOTIFICATIONS // 5


def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it(tokyo, monkeypatch):
    naive = datetime(2026, 12, 1, 9, 0, 0)
    refused = (ValueError, StatementError)  # SQLAlchemy wraps its type's ValueError

    def work(session: Any) -> Any:
        with pytest.raises(refused, match="naive"):
            state.mark_processed(session, all_notification_pks(session)[:3], naive)
        [row] = state.lock_entities(session, ORG, {("person", "p1")}, ())
        with pytest.raises(refused, match="naive"):
            state.save_entities(session, [entity_row(ORG, entity_state(row), naive)])
        return True

    assert both_ways(tokyo, monkeypatch, work) == (True, True)


def test_the_batch_statements_are_never_prepared(tokyo):
    """psycopg prepares a statement from its fifth run: these must stay custom-planned."""
    with tokyo.unit_of_work(write=True) as session:
        for _ in range(8):
            state.lock_entities(session, ORG, SUBJECTS, SHARED)
            state.lock_edges_of(session, ORG, SUBJECTS)
            pks = all_notification_pks(session)
            processing.lock_queued(session, pks)
            state.mark_processed(session, pks, datetime.now(UTC))
        prepared = session.connection().exec_driver_sql(
            "SELECT statement FROM pg_prepared_statements"
        )
        statements = [row[0] for row in prepared]
    assert not [s for s in statements if "ANY(" in s], statements


def test_a_driver_error_is_sqlalchemys_and_a_lost_server_is_transient(tokyo, postgres_url):
    """The worker tells a lost database (retry later) from a bad notification (charge it an
    attempt) by SQLAlchemy's exception classes: the driver path must raise them too."""
    with tokyo.unit_of_work() as session, pytest.raises(ProgrammingError):
        state.driver_rows(session, "SELECT * FROM no_such_table WHERE x = ANY(%s)", ([1],))

    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with tokyo.unit_of_work(write=True) as session:
            pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(OperationalError) as raised:
                state.lock_entities(session, ORG, SUBJECTS, SHARED)
            assert raised.value.connection_invalidated
    finally:
        admin.dispose()
    with tokyo.unit_of_work() as session:  # the pool hands out a live connection again
        assert len(state.load_entities(session, ORG, {("person", "p1")})) == 1
