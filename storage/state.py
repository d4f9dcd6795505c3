"""Entity state, edges and events: the set-based reads and writes of the worker.

Every function takes the caller's session and works on many rows per statement. Locks are
taken in a stable order (entity type, then id) so that two workers touching overlapping
records wait for each other instead of deadlocking. On SQLite the caller's ``BEGIN
IMMEDIATE`` serialises writers and ``FOR UPDATE`` is not rendered.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, and_, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session

from storage.catalog import EDGE_ENDS
from storage.inbox import dialect_insert
from storage.models import Edge, Entity, Event, EventSubject

EntityKey = tuple[str, str]

entities: Table = Entity.__table__  # type: ignore[assignment]
edges: Table = Edge.__table__  # type: ignore[assignment]
events: Table = Event.__table__  # type: ignore[assignment]
event_subjects: Table = EventSubject.__table__  # type: ignore[assignment]

#: Ids per IN list: far below every bind-parameter limit.
CHUNK = 1000


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _by_type(keys: Iterable[EntityKey]) -> dict[str, list[str]]:
    grouped: dict[str, set[str]] = defaultdict(set)
    for entity_type, entity_id in keys:
        grouped[entity_type].add(entity_id)
    return {entity_type: sorted(ids) for entity_type, ids in sorted(grouped.items())}


def _select_entities(
    session: Session,
    org_id: str,
    keys: Iterable[EntityKey],
    lock: str | None,
    columns: Sequence[Any] = (entities,),
) -> list[Row[Any]]:
    """Rows of ``keys`` in (type, id) order; ``lock`` is None, "update" or "share";
    ``columns`` what to read of them (every column unless given)."""
    found: list[Row[Any]] = []
    for entity_type, ids in _by_type(keys).items():
        for chunk in _chunks(ids):
            statement = (
                select(*columns)
                .where(
                    entities.c.org_id == org_id,
                    entities.c.entity_type == entity_type,
                    entities.c.entity_id.in_(chunk),
                )
                .order_by(entities.c.entity_id)
            )
            if lock is not None:
                statement = statement.with_for_update(read=lock == "share")
            found.extend(session.execute(statement).all())
    return found


def lock_entities(
    session: Session, org_id: str, exclusive: Iterable[EntityKey], shared: Iterable[EntityKey]
) -> list[Row[Any]]:
    """Lock the rows a batch writes (``exclusive``) and the rows it only reads (``shared``).

    Rows missing are created empty first: an empty row knows nothing (no clocks), it exists
    so that two workers seeing the same new record serialise on it. Locks are then taken in
    one pass in (type, id) order, so two workers never wait on each other in a cycle. A
    shared lock keeps a far end's clocks still while letting other batches that merely
    point at it (every person of a sync listing the same app) run side by side.
    """
    exclusive = set(exclusive)
    keys = exclusive | set(shared)
    # Which exist: their keys only, the rows are read (and decoded) once, locked, below.
    key_columns = (entities.c.entity_type, entities.c.entity_id)
    existing = {tuple(r) for r in _select_entities(session, org_id, keys, None, key_columns)}
    insert = dialect_insert(session)
    for chunk in _chunks(sorted(keys - existing)):
        session.execute(
            insert(entities)
            .values(
                [
                    {
                        "org_id": org_id,
                        "entity_type": entity_type,
                        "entity_id": entity_id,
                        "properties": {},
                        "clocks": {},
                        "deleted": False,
                    }
                    for entity_type, entity_id in chunk
                ]
            )
            .on_conflict_do_nothing()
        )
    found: list[Row[Any]] = []
    run: list[EntityKey] = []
    mode = ""
    for key in sorted(keys):
        wanted = "update" if key in exclusive else "share"
        if run and (wanted != mode or key[0] != run[0][0]):
            found.extend(_select_entities(session, org_id, run, mode))
            run = []
        run.append(key)
        mode = wanted
    if run:
        found.extend(_select_entities(session, org_id, run, mode))
    return found


def load_entities(session: Session, org_id: str, keys: Iterable[EntityKey]) -> list[Row[Any]]:
    """Read rows without locking them (for display names and parents)."""
    return _select_entities(session, org_id, keys, None)


def lock_edges_of(session: Session, org_id: str, keys: Iterable[EntityKey]) -> list[Row[Any]]:
    """Every edge with one of ``keys`` at an end, locked."""
    grouped = _by_type(keys)
    conditions = []
    for kind, (a_type, b_type) in EDGE_ENDS.items():
        for side, end_type in (("a", a_type), ("b", b_type)):
            ids = grouped.get(end_type or "")
            if not ids:
                continue
            column = edges.c.a_id if side == "a" else edges.c.b_id
            for chunk in _chunks(ids):
                conditions.append(and_(edges.c.kind == kind, column.in_(chunk)))
    if not conditions:
        return []
    statement = (
        select(edges)
        .where(edges.c.org_id == org_id, or_(*conditions))
        .order_by(edges.c.kind, edges.c.a_id, edges.c.b_id)
        .with_for_update()
    )
    return list(session.execute(statement).all())


def save_entities(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write back the state of locked rows: one executemany of primary-key UPDATEs.

    (An UPDATE … FROM unnest(…) was tried: the planner, misjudging the array's size, chose
    a nested loop over the whole table and took seconds per batch.)"""
    if not rows:
        return
    statement = (
        update(entities)
        .where(
            entities.c.org_id == bindparam("k_org_id"),
            entities.c.entity_type == bindparam("k_entity_type"),
            entities.c.entity_id == bindparam("k_entity_id"),
        )
        .values(
            parent_id=bindparam("parent_id"),
            properties=bindparam("properties"),
            clocks=bindparam("clocks"),
            deleted=bindparam("deleted"),
            baseline=bindparam("baseline"),
            updated_at=bindparam("updated_at"),
        )
    )
    session.connection().execute(statement, list(rows))


def bump_updated_at(
    session: Session, org_id: str, keys: Iterable[EntityKey], moment: datetime
) -> None:
    """Move ``updated_at`` forward on rows this transaction did not lock (atomic per row)."""
    for entity_type, ids in _by_type(keys).items():
        for chunk in _chunks(ids):
            session.execute(
                update(entities)
                .where(
                    entities.c.org_id == org_id,
                    entities.c.entity_type == entity_type,
                    entities.c.entity_id.in_(chunk),
                    or_(entities.c.updated_at.is_(None), entities.c.updated_at < moment),
                )
                .values(updated_at=moment)
            )


#: PostgreSQL: a batch's edges in one upsert of seven arrays. SQLAlchemy's executemany of
#: an upsert renders a multi-row VALUES with seven parameters a row, which cost more Python
#: than the write itself; no join here, so no plan to go wrong.
UPSERT_EDGES = text(
    """
    INSERT INTO edges (org_id, kind, a_id, b_id, present, clock_us, clock_seq)
    SELECT * FROM unnest(
        CAST(:org_id AS varchar[]), CAST(:kind AS varchar[]), CAST(:a_id AS varchar[]),
        CAST(:b_id AS varchar[]), CAST(:present AS boolean[]), CAST(:clock_us AS bigint[]),
        CAST(:clock_seq AS bigint[])
    )
    ON CONFLICT (org_id, kind, a_id, b_id) DO UPDATE
    SET present = excluded.present, clock_us = excluded.clock_us, clock_seq = excluded.clock_seq
    """
)
EDGE_COLUMNS = ("org_id", "kind", "a_id", "b_id", "present", "clock_us", "clock_seq")


def save_edges(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write edges (each key at most once): inserted, or their state and clock replaced."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            UPSERT_EDGES, {column: [row[column] for row in rows] for column in EDGE_COLUMNS}
        )
        return
    insert = dialect_insert(session)
    statement = insert(edges)
    statement = statement.on_conflict_do_update(
        index_elements=[edges.c.org_id, edges.c.kind, edges.c.a_id, edges.c.b_id],
        set_={
            "present": statement.excluded.present,
            "clock_us": statement.excluded.clock_us,
            "clock_seq": statement.excluded.clock_seq,
        },
    )
    session.execute(statement, list(rows))


def allocate_event_ids(session: Session, count: int) -> list[int]:
    """``count`` new event keys, increasing in the order given out."""
    if count == 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return list(
            session.scalars(
                text("SELECT nextval('events_id_seq') FROM generate_series(1, :n)"), {"n": count}
            )
        )
    # SQLite: the caller's BEGIN IMMEDIATE makes this read-then-insert safe.
    start = session.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0
    return list(range(start + 1, start + 1 + count))


#: From this many events on, COPY beats an executemany (below, its round trips cost more).
COPY_FROM_ROWS = 200
#: JSON columns, sent to COPY as JSON text.
JSON_COLUMNS = frozenset({"targets", "old_value", "new_value", "details"})


def _copy_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """PostgreSQL's COPY FROM STDIN inside the session's transaction: the fastest insert."""
    columns = list(rows[0])
    cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row[c], separators=(",", ":"))
                    if c in JSON_COLUMNS and row[c] is not None
                    else row[c]
                    for c in columns
                ]
            )


def insert_events(
    session: Session, rows: Sequence[dict[str, Any]], subjects: Sequence[dict[str, Any]]
) -> None:
    """The events of a batch and their subjects. Keys are allocated, so COPY can be used."""
    if session.get_bind().dialect.name == "postgresql" and len(rows) >= COPY_FROM_ROWS:
        if rows:
            _copy_rows(session, events, rows)
        if subjects:
            _copy_rows(session, event_subjects, subjects)
        return
    if rows:
        session.execute(events.insert(), list(rows))
    if subjects:
        insert = dialect_insert(session)
        session.execute(insert(event_subjects).on_conflict_do_nothing(), list(subjects))
