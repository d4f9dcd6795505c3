"""Generated data for benchmarks and for the tests that need volume.

``fill_events`` writes the rows with SQL alone. Its default path inserts into the tables
as they are, indexes and all, and analyses them: right for the thousands to a million
rows the tests and most figures load. ``bulk=True`` is the path for tens of millions
(``python -m bench --events 10000000``): inserting into seven secondary btrees row by row
is most of a big load's time, so it drops those indexes, loads, and builds them again
from the definitions it read out of the catalog (``pg_get_indexdef``,
``pg_get_constraintdef``) before dropping them, each in one sorted pass. The whole of it
is one transaction of the caller's: a failure anywhere rolls the drops back with the
rows. Triggers are left alone (the append-only triggers fire on UPDATE, DELETE and
TRUNCATE, never on INSERT, so they cost a load nothing), and before the transaction can
commit the tables' indexes, constraints, triggers and options are read again and compared
with what they were: any difference raises, and the caller's transaction rolls back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

#: The tables a load writes: the events and the index of records they concern.
TABLES = ("events", "event_subjects")

#: Kept through a bulk load: ``events``' primary key is on ``id``, which the load appends
#: in ascending order, so maintaining it costs little, and it serves the read of the new
#: rows that fills ``event_subjects``. ``event_subjects``' primary key leads with the
#: record, which the load's order scatters, so it is rebuilt like the other indexes: at
#: 4,000,000 rows (an index beyond shared_buffers) keeping it made the subjects' insert
#: 2–3× slower than dropping it and building it afterwards.
KEPT = frozenset({"pk_events"})

#: Memory for each index build of a bulk load (a session setting of the load's own
#: transaction): enough to sort 10,000,000 keys without spilling to disk.
BUILD_MEMORY = "1GB"

INSERT_EVENTS = """
INSERT INTO events (id, org_id, type, occurred_at, recorded_at, entity_type, entity_id,
                    entity_name, targets, actor_type, actor_id, ip_address, origin, position,
                    details)
SELECT g,
       {org_expression},
       (ARRAY['person.created', 'person.property_updated', 'app.created',
              'app.person_relationship_created', 'team.created', 'device.status_updated',
              'app.license_assigned', 'person.app_relationship_removed'])[1 + mod(g, 8)],
       timestamptz '2026-01-01 00:00:00+00' + g * interval '30 seconds',
       now(),
       (ARRAY['person', 'app', 'team', 'device'])[1 + mod(g, 4)],
       'e' || mod(g, 20000),
       'Name ' || mod(g, 20000), '[]', 'user', 'actor' || mod(g, 500),
       CASE WHEN mod(g, 3) = 0 THEN ('2001:db8:' || to_hex(mod(g, 65536)) || '::1')::inet
            ELSE ('10.' || mod(g, 256) || '.' || mod(g / 256, 256) || '.7')::inet END,
       'sync', 0, '{{}}'
FROM generate_series({first}, {last}) AS g
"""

INSERT_SUBJECTS = """
INSERT INTO event_subjects (org_id, entity_type, entity_id, occurred_at, event_id)
SELECT org_id, entity_type, entity_id, occurred_at, id FROM events
WHERE id BETWEEN {first} AND {last}
"""


@dataclass(frozen=True)
class Index:
    """One index of a loaded table, as the catalog defines it."""

    table: str
    name: str
    #: ``pg_get_indexdef``: the ``CREATE [UNIQUE] INDEX`` statement that makes it again.
    definition: str
    #: The constraint the index implements (primary key, unique, exclusion), if any, and
    #: its ``pg_get_constraintdef``: such an index is dropped and made with its constraint.
    constraint: str | None
    constraint_definition: str | None

    def drop(self) -> str:
        if self.constraint is not None:
            return f'ALTER TABLE {self.table} DROP CONSTRAINT "{self.constraint}"'
        return f'DROP INDEX "{self.name}"'

    def create(self) -> str:
        if self.constraint is not None:
            return (
                f'ALTER TABLE {self.table} ADD CONSTRAINT "{self.constraint}" '
                f"{self.constraint_definition}"
            )
        return self.definition


@dataclass
class Loaded:
    """Where a load's time went, in seconds, and the indexes a bulk load rebuilt."""

    inserts: float = 0.0
    indexes: float = 0.0
    analyze: float = 0.0
    rebuilt: list[str] = field(default_factory=list)


def indexes(connection: Any, tables: tuple[str, ...] = TABLES) -> list[Index]:
    """Every index of ``tables`` (in the current schema), read from the catalog."""
    rows = connection.exec_driver_sql(
        """
        SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid), c.conname,
               pg_get_constraintdef(c.oid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        LEFT JOIN pg_constraint c
               ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
              AND c.contype IN ('p', 'u', 'x')
        WHERE t.relname = ANY(%(tables)s) AND t.relnamespace = current_schema()::regnamespace
        ORDER BY t.relname, i.relname
        """,
        {"tables": list(tables)},
    ).all()
    return [Index(*row) for row in rows]


def schema_snapshot(connection: Any, tables: tuple[str, ...] = TABLES) -> dict[str, list[Any]]:
    """What a load must leave as the migrations made it, per kind, in a stable order:
    the indexes (definition and flags), the constraints, the triggers (definition and
    whether enabled), the columns' NOT NULL and defaults, and the tables' and indexes'
    storage options (``reloptions``, where ``autovacuum_enabled`` lives)."""
    parameters = {"tables": list(tables)}
    scope = "relname = ANY(%(tables)s) AND relnamespace = current_schema()::regnamespace"
    queries = {
        "indexes": f"""
            SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisunique,
                   x.indisprimary, x.indisexclusion, x.indimmediate, x.indisclustered,
                   x.indisvalid, x.indisready, x.indislive, x.indisreplident,
                   i.reloptions::text, i.relpersistence
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN (SELECT oid, relname FROM pg_class WHERE {scope}) t ON t.oid = x.indrelid
            ORDER BY 1, 2""",
        "constraints": f"""
            SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid),
                   c.condeferrable, c.condeferred, c.convalidated,
                   (SELECT relname FROM pg_class WHERE oid = c.conindid)
            FROM pg_constraint c
            JOIN (SELECT oid, relname FROM pg_class WHERE {scope}) t ON t.oid = c.conrelid
            ORDER BY 1, 2""",
        "triggers": f"""
            SELECT t.relname, g.tgname, pg_get_triggerdef(g.oid), g.tgenabled, g.tgisinternal
            FROM pg_trigger g
            JOIN (SELECT oid, relname FROM pg_class WHERE {scope}) t ON t.oid = g.tgrelid
            ORDER BY 1, 2""",
        "columns": f"""
            SELECT t.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid), a.attstattarget
            FROM pg_attribute a
            JOIN (SELECT oid, relname FROM pg_class WHERE {scope}) t ON t.oid = a.attrelid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attnum > 0 AND NOT a.attisdropped
            ORDER BY 1, a.attnum""",
        "tables": f"""
            SELECT relname, reloptions::text, relpersistence, relkind, relhastriggers
            FROM pg_class WHERE {scope} ORDER BY 1""",
    }
    return {
        kind: [tuple(row) for row in connection.exec_driver_sql(sql, parameters).all()]
        for kind, sql in queries.items()
    }


def fill_events(
    connection: Any,
    rows: int,
    orgs: int = 10,
    org_id: str | None = None,
    *,
    analyze: bool = True,
    bulk: bool = False,
) -> Loaded:
    """Generate ``rows`` events on PostgreSQL with SQL alone (fast enough for millions).

    Organisations are ``org_0`` … unless ``org_id`` names the one to fill. Keys continue
    from the events already there; the sequence moves past them. ``analyze=False`` leaves
    the planner's statistics as they were (the bench's freshly-loaded figure). ``bulk``
    loads with the secondary indexes dropped and builds them afterwards (see the module's
    docstring); it needs the caller's transaction (autocommit is refused), which it leaves
    holding an exclusive lock on both tables. Returns where the time went.
    """
    first = int(connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM events").scalar()) + 1
    org_expression = f"'{org_id}'" if org_id else f"'org_' || mod(g, {orgs})"
    bounds = {"first": first, "last": first + rows - 1}
    loaded = Loaded()
    rebuilt: list[Index] = []
    before: dict[str, list[Any]] = {}
    if bulk:
        # Two statements of one transaction share its id; in autocommit each has its own,
        # and a failure after the drops would leave the tables without their indexes.
        xact = "SELECT pg_current_xact_id()::text"
        if connection.exec_driver_sql(xact).scalar() != connection.exec_driver_sql(xact).scalar():
            raise ValueError("a bulk load drops indexes: it needs the caller's transaction")
        before = schema_snapshot(connection)
        rebuilt = [index for index in indexes(connection) if index.name not in KEPT]
        for index in rebuilt:
            connection.exec_driver_sql(index.drop())
    started = time.perf_counter()
    connection.exec_driver_sql(INSERT_EVENTS.format(org_expression=org_expression, **bounds))
    connection.exec_driver_sql(INSERT_SUBJECTS.format(**bounds))
    loaded.inserts = time.perf_counter() - started
    if bulk:
        started = time.perf_counter()
        connection.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
        for index in rebuilt:
            connection.exec_driver_sql(index.create())
        loaded.indexes = time.perf_counter() - started
        loaded.rebuilt = [index.name for index in rebuilt]
        after = schema_snapshot(connection)
        if after != before:
            changed = {kind: after[kind] for kind in before if after[kind] != before[kind]}
            raise RuntimeError(f"the bulk load changed the schema: {changed}")
    if analyze:
        started = time.perf_counter()
        connection.exec_driver_sql("ANALYZE events")
        connection.exec_driver_sql("ANALYZE event_subjects")
        loaded.analyze = time.perf_counter() - started
    connection.exec_driver_sql(f"SELECT setval('events_id_seq', {bounds['last']})")
    return loaded
