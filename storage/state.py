"""Entity state, edges and events: the set-based reads and writes of the worker.

Every function takes the caller's session and works on many rows per statement. Locks are
taken in a stable order (entity type, then id) so that two workers touching overlapping
records wait for each other instead of deadlocking. On SQLite the caller's ``BEGIN
IMMEDIATE`` serialises writers and ``FOR UPDATE`` is not rendered.

On PostgreSQL the statements over a batch's keys (the locks and loads, the write-back of
entities and edges, the notifications' status) run on the session's psycopg connection,
in its transaction (``driver_rows``): the same SQL but for ``= ANY(array)`` in place of IN
lists, without SQLAlchemy's per-key and per-row Python. The portable statements below are
SQLite's, and ``tests/integration/test_worker_statements.py`` holds the two equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import Row, Table, and_, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session

from storage import jsoncodec
from storage.catalog import EDGE_ENDS
from storage.db import driver_of
from storage.inbox import PROCESSED, dialect_insert
from storage.models import Edge, Entity, Event, EventSubject, Notification
from storage.types import require_aware

EntityKey = tuple[str, str]

entities: Table = Entity.__table__  # type: ignore[assignment]
edges: Table = Edge.__table__  # type: ignore[assignment]
events: Table = Event.__table__  # type: ignore[assignment]
event_subjects: Table = EventSubject.__table__  # type: ignore[assignment]
notifications: Table = Notification.__table__  # type: ignore[assignment]

#: Ids per IN list: far below every bind-parameter limit.
CHUNK = 1000


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def on_postgresql(session: Session) -> bool:
    """Whether the batch statements take psycopg's path (tests compare it to the other)."""
    return session.get_bind().dialect.name == "postgresql"


def driver_rows(
    session: Session, query: str, params: Sequence[Any], loaders: dict[str, Any] | None = None
) -> list[Any]:
    """PostgreSQL: ``query`` on the session's psycopg connection; rows as named tuples
    (a ``timestamptz`` comes back aware, in the session's time zone).

    For the worker's statements over a batch's thousand keys. Through SQLAlchemy each key
    of an IN list is a bind parameter of its own, rendered, named and converted on every
    run: that cost more than the statement itself (a third of a batch's lock and load).
    Here the keys travel as one array, ``= ANY(%s)``, planned for the very array each time
    (``prepare=False``): once prepared, psycopg's default after five runs, the generic plan
    of ``= ANY($1)`` filters the organisation's rows instead of seeking the index.
    ``loaders``: psycopg loaders by type name, in place of the connection's.
    """
    with driver_of(session) as driver, driver.cursor(row_factory=namedtuple_row) as cursor:
        for type_name, loader in (loaders or {}).items():  # for this cursor only
            cursor.adapters.register_loader(type_name, loader)
        cursor.execute(query, params, prepare=False)
        return cursor.fetchall()


def driver_execute(session: Session, query: str, params: Sequence[Any]) -> None:
    """PostgreSQL: a statement that returns nothing, as ``driver_rows`` runs one."""
    with driver_of(session) as driver, driver.cursor() as cursor:
        cursor.execute(query, params, prepare=False)


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
    if on_postgresql(session):
        return _select_entities_pg(session, org_id, keys, lock, columns)
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


_LOCK_CLAUSES = {None: "", "update": " FOR UPDATE", "share": " FOR SHARE"}


def _select_entities_pg(
    session: Session,
    org_id: str,
    keys: Iterable[EntityKey],
    lock: str | None,
    columns: Sequence[Any],
) -> list[Any]:
    every = len(columns) == 1 and columns[0] is entities
    names = [column.name for column in (entities.c if every else columns)]
    query = (
        f"SELECT {', '.join(names)} FROM entities"
        " WHERE org_id = %s AND entity_type = %s AND entity_id = ANY(%s)"
        f" ORDER BY entity_id{_LOCK_CLAUSES[lock]}"
    )
    found: list[Any] = []
    for entity_type, ids in _by_type(keys).items():
        found.extend(driver_rows(session, query, (org_id, entity_type, ids)))
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
    if on_postgresql(session):
        return _lock_edges_of_pg(session, org_id, grouped)
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


def _lock_edges_of_pg(session: Session, org_id: str, grouped: dict[str, list[str]]) -> list[Any]:
    conditions: list[str] = []
    params: list[Any] = [org_id]
    for kind, (a_type, b_type) in EDGE_ENDS.items():
        for side, end_type in (("a", a_type), ("b", b_type)):
            ids = grouped.get(end_type or "")
            if ids:
                conditions.append(f"(kind = %s AND {side}_id = ANY(%s))")
                params += [kind, ids]
    if not conditions:
        return []
    return driver_rows(
        session,
        "SELECT org_id, kind, a_id, b_id, present, clock_us, clock_seq FROM edges"
        f" WHERE org_id = %s AND ({' OR '.join(conditions)})"
        " ORDER BY kind, a_id, b_id FOR UPDATE",
        params,
    )


def save_entities(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write back the state of locked rows: one executemany of primary-key UPDATEs.

    (An UPDATE … FROM unnest(…) was tried: the planner, misjudging the array's size, chose
    a nested loop over the whole table and took seconds per batch.)"""
    if not rows:
        return
    if on_postgresql(session):
        _save_entities_pg(session, rows)
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


#: The same UPDATE by primary key, sent by psycopg's executemany (one pipeline, no round
#: trip per row) without SQLAlchemy's per-row bind processing, half of its cost here.
SAVE_ENTITY = (
    "UPDATE entities SET parent_id = %s, properties = %s, clocks = %s, deleted = %s,"
    " baseline = %s, updated_at = %s WHERE org_id = %s AND entity_type = %s AND entity_id = %s"
)


def _save_entities_pg(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    with driver_of(session) as driver, driver.cursor() as cursor:
        cursor.executemany(
            SAVE_ENTITY,
            [
                (
                    row["parent_id"],
                    Jsonb(row["properties"]),
                    Jsonb(row["clocks"]),
                    row["deleted"],
                    # JSON null for none, as SQLAlchemy's JSONB binds None (none_as_null off).
                    Jsonb(row["baseline"]),
                    require_aware(row["updated_at"]),
                    row["k_org_id"],
                    row["k_entity_type"],
                    row["k_entity_id"],
                )
                for row in rows
            ],
        )


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
UPSERT_EDGES = """
    INSERT INTO edges (org_id, kind, a_id, b_id, present, clock_us, clock_seq)
    SELECT * FROM unnest(
        %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::boolean[],
        %s::bigint[], %s::bigint[]
    )
    ON CONFLICT (org_id, kind, a_id, b_id) DO UPDATE
    SET present = excluded.present, clock_us = excluded.clock_us, clock_seq = excluded.clock_seq
"""
EDGE_COLUMNS = ("org_id", "kind", "a_id", "b_id", "present", "clock_us", "clock_seq")


def save_edges(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write edges (each key at most once): inserted, or their state and clock replaced."""
    if not rows:
        return
    if on_postgresql(session):
        driver_execute(
            session, UPSERT_EDGES, [[row[column] for row in rows] for column in EDGE_COLUMNS]
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


def mark_processed(session: Session, pks: Sequence[int], moment: datetime) -> None:
    """The batch's notifications are done: ``processed`` at ``moment``, any error cleared."""
    if on_postgresql(session):
        driver_execute(
            session,
            "UPDATE notifications SET status = %s, processed_at = %s, error = NULL"
            " WHERE pk = ANY(%s)",
            (PROCESSED, require_aware(moment), list(pks)),
        )
        return
    for chunk in _chunks(pks):
        session.execute(
            update(notifications)
            .where(notifications.c.pk.in_(chunk))
            .values(status=PROCESSED, processed_at=moment, error=None)
        )


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
    with (
        driver_of(session) as driver,
        driver.cursor() as cursor,
        cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(
                [
                    jsoncodec.dumps(row[c]) if c in JSON_COLUMNS and row[c] is not None else row[c]
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
