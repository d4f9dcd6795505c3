"""The read side: filtered, keyset-paged reads of the log, and records as they stand.

Queries go to the tables directly (no domain model). Every query is scoped to one
organisation, and every filter is served by an index on PostgreSQL:

- no record filter: ``(org_id, occurred_at, id)`` and its siblings per column;
- a record's history: the primary key of ``event_subjects``, ``(org_id, entity_type,
  entity_id, occurred_at, event_id)``;
- an IP network: ``inet <<=``, which a btree on ``(org_id, ip_address, …)`` serves.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, Table, cast, exists, func, literal, select, tuple_
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from storage.catalog import RELATIONSHIPS, label_of
from storage.history import EdgeBaseline, clock_key
from storage.models import Edge, Entity, Event, EventSubject, LogLeaf, Notification
from storage.timefmt import from_micros, rfc3339

events: Table = Event.__table__  # type: ignore[assignment]
event_subjects: Table = EventSubject.__table__  # type: ignore[assignment]
edges: Table = Edge.__table__  # type: ignore[assignment]
entities: Table = Entity.__table__  # type: ignore[assignment]
notifications: Table = Notification.__table__  # type: ignore[assignment]
leaves: Table = LogLeaf.__table__  # type: ignore[assignment]

EVENT_ID_PREFIX = "evt_"
PUBLIC_EVENT_ID = re.compile(r"evt_[0-9a-f]{16}")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def public_event_id(pk: int) -> str:
    """Fixed-width hex, so that ids compare as strings the way they compare as numbers."""
    return f"{EVENT_ID_PREFIX}{pk:016x}"


def event_pk(public_id: str) -> int | None:
    """The key of a public event id, or None for anything that is not exactly one."""
    if not PUBLIC_EVENT_ID.fullmatch(public_id):
        return None
    pk = int(public_id[len(EVENT_ID_PREFIX) :], 16)
    return pk if pk < 2**63 else None  # beyond every BIGINT key


@dataclass(frozen=True)
class EventFilter:
    """What the three log endpoints and exports filter by; every part combines with AND.

    ``records`` are (type, id) pairs: events whose entity or a target is each of them.
    ``entity_type`` is the type of the event's entity. ``types`` is a set of exact codes.
    """

    records: tuple[tuple[str, str], ...] = ()
    entity_type: str | None = None
    actor_ids: tuple[str, ...] = ()
    types: frozenset[str] | None = None
    network: Network | None = None
    since: datetime | None = None
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "records": [list(record) for record in self.records],
            "entity_type": self.entity_type,
            "actor_ids": list(self.actor_ids),
            "types": sorted(self.types) if self.types is not None else None,
            "network": str(self.network) if self.network is not None else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> EventFilter:
        return cls(
            records=tuple((t, i) for t, i in stored["records"]),
            entity_type=stored["entity_type"],
            actor_ids=tuple(stored["actor_ids"]),
            types=frozenset(stored["types"]) if stored["types"] is not None else None,
            network=ipaddress.ip_network(stored["network"]) if stored["network"] else None,
            since=datetime.fromisoformat(stored["since"]) if stored["since"] else None,
            until=datetime.fromisoformat(stored["until"]) if stored["until"] else None,
        )


def _base(org_id: str, flt: EventFilter, dialect: str) -> tuple[Select[Any], Any, Any]:
    """The filtered select and the two columns it is ordered by."""
    if flt.records:
        first_type, first_id = flt.records[0]
        subject = event_subjects.alias("subject")
        statement = (
            select(events, leaves.c.seq)
            .select_from(
                subject.join(events, events.c.id == subject.c.event_id).outerjoin(
                    leaves, leaves.c.event_id == events.c.id
                )
            )
            .where(
                subject.c.org_id == org_id,
                subject.c.entity_type == first_type,
                subject.c.entity_id == first_id,
                events.c.org_id == org_id,
            )
        )
        time_column, id_column = subject.c.occurred_at, subject.c.event_id
        for other_type, other_id in flt.records[1:]:
            also = event_subjects.alias()
            statement = statement.where(
                exists().where(
                    also.c.org_id == org_id,
                    also.c.entity_type == other_type,
                    also.c.entity_id == other_id,
                    also.c.event_id == events.c.id,
                )
            )
    else:
        statement = (
            select(events, leaves.c.seq)
            .select_from(events.outerjoin(leaves, leaves.c.event_id == events.c.id))
            .where(events.c.org_id == org_id)
        )
        time_column, id_column = events.c.occurred_at, events.c.id

    if flt.entity_type is not None:
        statement = statement.where(events.c.entity_type == flt.entity_type)
    for actor_id in flt.actor_ids:
        statement = statement.where(events.c.actor_id == actor_id)
    if flt.types is not None:
        statement = statement.where(events.c.type.in_(sorted(flt.types)))
    if flt.network is not None:
        statement = statement.where(_in_network(flt.network, dialect))
    return _in_window(statement, flt, time_column), time_column, id_column


def _in_window(statement: Select[Any], flt: EventFilter, time_column: Any) -> Select[Any]:
    """``statement`` kept to the filter's ``since``/``until`` on ``time_column``."""
    if flt.since is not None:
        statement = statement.where(time_column >= flt.since)
    if flt.until is not None:
        statement = statement.where(time_column < flt.until)
    return statement


def _in_network(network: Network, dialect: str) -> Any:
    if dialect == "postgresql":
        return events.c.ip_address.op("<<=")(cast(literal(str(network)), postgresql.INET()))
    # SQLite: a Python function registered on each connection (storage.db); a full scan,
    # correct for both families, which the embedded default can afford.
    return func.auditlog_ip_in(events.c.ip_address, str(network)) == 1


def events_page_statement(
    dialect: str,
    org_id: str,
    flt: EventFilter,
    limit: int | None,
    after: tuple[datetime, int] | None = None,
    max_event_id: int | None = None,
    max_seq: int | None = None,
) -> Select[Any]:
    """The page query; ``limit=None`` reads every matching event (exports).

    ``max_seq`` keeps the events of the log's first ``max_seq`` leaves (an export's tree
    size): events not sequenced yet have no seq and are left out too. ``max_event_id`` is
    the bound exports used before the log had seqs (kept for callers that still pass it).
    """
    if limit is not None and _keys_first(dialect, flt, max_event_id, max_seq):
        return _network_page(org_id, flt, limit, after)
    statement, time_column, id_column = _base(org_id, flt, dialect)
    if after is not None:
        statement = statement.where(tuple_(time_column, id_column) < tuple_(*after))
    statement = _bounded(statement, org_id, id_column, max_event_id, max_seq)
    return statement.order_by(time_column.desc(), id_column.desc()).limit(limit)


def _keys_first(
    dialect: str, flt: EventFilter, max_event_id: int | None, max_seq: int | None
) -> bool:
    """Whether a page is a network filter (with a time window at most) that the index on
    (org, ip, time, id) answers alone: on PostgreSQL, a page, nothing else filtered."""
    return (
        dialect == "postgresql"
        and flt.network is not None
        and max_event_id is None
        and max_seq is None
        and not (flt.records or flt.entity_type or flt.actor_ids or flt.types is not None)
    )


def _network_page(
    org_id: str, flt: EventFilter, limit: int, after: tuple[datetime, int] | None
) -> Select[Any]:
    """The page's keys from an index-only scan of ``ix_events_org_ip``, then their rows.

    Read whole, a /16 of ten million events was thousands of heap rows fetched before the
    sort kept fifty; the index holds every column this filter and the order need, so only
    the page's own rows are read.
    """
    assert flt.network is not None
    keys = _in_window(
        select(events.c.occurred_at, events.c.id).where(
            events.c.org_id == org_id, _in_network(flt.network, "postgresql")
        ),
        flt,
        events.c.occurred_at,
    )
    if after is not None:
        keys = keys.where(tuple_(events.c.occurred_at, events.c.id) < tuple_(*after))
    page = (
        keys.order_by(events.c.occurred_at.desc(), events.c.id.desc()).limit(limit).subquery("page")
    )
    return (
        select(events, leaves.c.seq)
        .select_from(
            page.join(events, events.c.id == page.c.id).outerjoin(
                leaves, leaves.c.event_id == events.c.id
            )
        )
        .order_by(page.c.occurred_at.desc(), page.c.id.desc())
    )


def _bounded(
    statement: Select[Any],
    org_id: str,
    id_column: Any,
    max_event_id: int | None,
    max_seq: int | None,
) -> Select[Any]:
    if max_event_id is not None:
        statement = statement.where(id_column <= max_event_id)
    if max_seq is not None:
        # An event's leaf is in its own organisation's log: saying so lets the leaves be
        # read as one range of their key (org_id, seq). With ``seq`` alone, PostgreSQL read
        # every organisation's first leaves, all of log_leaves, for an export of 30,000
        # rows next to a 1,000,000-event organisation (160 ms of the COPY's 220).
        statement = statement.where(leaves.c.org_id == org_id, leaves.c.seq <= max_seq)
    return statement


def events_page(
    session: Session,
    org_id: str,
    flt: EventFilter,
    limit: int,
    after: tuple[datetime, int] | None = None,
    max_event_id: int | None = None,
) -> list[Row[Any]]:
    """Up to ``limit`` matching events, newest first, strictly after the ``after`` position.

    ``max_event_id`` bounds the read to events recorded before some moment (exports).
    """
    dialect = session.get_bind().dialect.name
    statement = events_page_statement(dialect, org_id, flt, limit, after, max_event_id)
    return list(session.execute(statement).all())


def count_events(
    session: Session,
    org_id: str,
    flt: EventFilter,
    max_event_id: int | None = None,
    max_seq: int | None = None,
) -> int:
    statement, _, id_column = _base(org_id, flt, session.get_bind().dialect.name)
    statement = _bounded(statement, org_id, id_column, max_event_id, max_seq)
    return int(session.scalar(select(func.count()).select_from(statement.subquery())) or 0)


def latest_event_id(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0)


#: Integers a double holds exactly; JSON numbers are doubles (I-JSON, RFC 8785).
EXACT_INTEGER = 2**53 - 1


def as_json_number(value: Any) -> Any:
    """``value`` with integers beyond a double's exact range turned back into floats.

    Ingest refuses such integers, but PostgreSQL's jsonb rewrites an accepted float such
    as ``1e16`` as ``10000000000000000``, which reads back as a Python int: as a float it is
    the number that was sent, and it has a canonical form.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return float(value) if abs(value) > EXACT_INTEGER else value
    if isinstance(value, dict):
        return {key: as_json_number(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json_number(item) for item in value]
    return value


def event_document(row: Any, seq: int | None = None) -> dict[str, Any]:
    """The public event object of an ``events`` row.

    ``seq`` is the event's place in its organisation's log: given, or the row's own ``seq``
    column when the query joined ``log_leaves``; ``None`` until the event is sequenced.
    """
    if seq is None:
        seq = getattr(row, "seq", None)
    return {
        "id": public_event_id(row.id),
        "type": row.type,
        "label": label_of(row.type),
        "occurred_at": rfc3339(row.occurred_at),
        "recorded_at": rfc3339(row.recorded_at),
        "entity": {"type": row.entity_type, "id": row.entity_id, "name": row.entity_name},
        "targets": row.targets,
        "property": row.property,
        "old_value": as_json_number(row.old_value),
        "new_value": as_json_number(row.new_value),
        "actor": {
            "type": row.actor_type,
            "id": row.actor_id,
            "name": row.actor_name,
            "email": row.actor_email,
        },
        "ip_address": row.ip_address,
        "origin": row.origin,
        "source_id": row.source_id,
        "notification_id": row.notification_id,
        "details": as_json_number(row.details or {}),
        "seq": None if seq is None else int(seq),
    }


def find_event(session: Session, org_id: str, pk: int) -> Row[Any] | None:
    return session.execute(
        select(events, leaves.c.seq)
        .select_from(events.outerjoin(leaves, leaves.c.event_id == events.c.id))
        .where(events.c.org_id == org_id, events.c.id == pk)
    ).first()


def find_entity(session: Session, org_id: str, entity_type: str, entity_id: str) -> Entity | None:
    return session.get(Entity, (org_id, entity_type, entity_id))


def names_of(
    session: Session, org_id: str, entity_type: str, entity_ids: Sequence[str]
) -> dict[str, str]:
    """Display names of records of one type, for the ids that have one."""
    if not entity_ids:
        return {}
    rows = session.execute(
        select(entities.c.entity_id, entities.c.properties).where(
            entities.c.org_id == org_id,
            entities.c.entity_type == entity_type,
            entities.c.entity_id.in_(list(entity_ids)),
        )
    )
    found = {}
    for entity_id, properties in rows:
        name = (properties or {}).get("name")
        if isinstance(name, str) and name:
            found[entity_id] = name
    return found


def relationships_of(
    session: Session, org_id: str, entity_type: str, entity_id: str
) -> dict[str, Any]:
    """Present edges by relationship name (``org`` a boolean), as the record sees them."""
    result: dict[str, Any] = {}
    for name, relationship in RELATIONSHIPS[entity_type].items():
        column = edges.c.a_id if relationship.side == "a" else edges.c.b_id
        other = edges.c.b_id if relationship.side == "a" else edges.c.a_id
        ids = list(
            session.scalars(
                select(other)
                .where(
                    edges.c.org_id == org_id,
                    edges.c.kind == relationship.kind,
                    column == entity_id,
                    edges.c.present.is_(True),
                )
                .order_by(other)
            )
        )
        result[name] = bool(ids) if name == "org" else ids
    return result


def record_log(
    session: Session, org_id: str, entity_type: str, entity_id: str, until: datetime
) -> list[Any]:
    """What rebuilds a record up to ``until`` (``storage.history.state_as_of``), in clock order.

    Every event concerning the record with ``occurred_at <= until``, each with its
    notification's ``sequence`` (the second half of its clock), and the baselines of the
    records at the far ends of its edges that set one of those edges without an event.
    """
    flt = EventFilter(records=((entity_type, entity_id),))
    statement, time_column, id_column = _base(org_id, flt, session.get_bind().dialect.name)
    sequence = (
        select(notifications.c.sequence)
        .where(notifications.c.pk == events.c.notification_pk)
        .scalar_subquery()
    )
    statement = (
        statement.add_columns(func.coalesce(sequence, 0).label("sequence"))
        .where(time_column <= until)
        .order_by(time_column, id_column)
    )
    entries: list[Any] = list(session.execute(statement).all())
    entries.extend(edge_baselines(session, org_id, entity_type, entity_id, until))
    return sorted(entries, key=clock_key)


def edge_baselines(
    session: Session, org_id: str, entity_type: str, entity_id: str, until: datetime
) -> list[EdgeBaseline]:
    """The far ends' baselines, no later than ``until``, that listed a relationship to the record.

    A baseline sets every edge of a relationship it lists (present if it lists the record,
    absent if not) and emits nothing; an edge it set has a row, so the far ends of the
    record's edge rows (tombstones included) are the candidates.
    """
    # A record without a baseline holds SQL NULL or, once written back, JSON null.
    json_type = "jsonb_typeof" if session.get_bind().dialect.name == "postgresql" else "json_type"
    has_baseline = getattr(func, json_type)(entities.c.baseline) == "object"
    found: list[EdgeBaseline] = []
    for name, relationship in RELATIONSHIPS[entity_type].items():
        if relationship.other is None:
            continue
        far_name = next(
            (
                far
                for far, seen_from in RELATIONSHIPS[relationship.other].items()
                if seen_from.kind == relationship.kind
            ),
            None,
        )
        if far_name is None:
            continue  # the far type does not list this edge (a person's teams)
        near_column = edges.c.a_id if relationship.side == "a" else edges.c.b_id
        far_column = edges.c.b_id if relationship.side == "a" else edges.c.a_id
        rows = session.execute(
            select(entities.c.entity_id, entities.c.baseline)
            .select_from(
                edges.join(
                    entities,
                    (entities.c.org_id == edges.c.org_id)
                    & (entities.c.entity_type == relationship.other)
                    & (entities.c.entity_id == far_column),
                )
            )
            .where(
                edges.c.org_id == org_id,
                edges.c.kind == relationship.kind,
                near_column == entity_id,
                has_baseline,
            )
        ).all()
        for far_id, baseline in rows:
            listed = (baseline.get("relationships") or {}).get(far_name)
            moment = from_micros(int(baseline["clock"][0]))
            if listed is None or moment > until:
                continue
            found.append(
                EdgeBaseline(moment, int(baseline["clock"][1]), name, far_id, entity_id in listed)
            )
    return found


def _neutralised(column: str) -> str:
    """A free-text cell, empty already NULL: formula starts get a leading quote."""
    return (
        f"CASE WHEN left({column}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') "
        f"THEN '''' || {column} ELSE {column} END"
    )


def _json_text(column: str) -> str:
    # Scalars are cheap; only objects and arrays need the (recursive) compact renderer.
    return (
        f"CASE jsonb_typeof({column}) WHEN 'string' THEN {column} #>> '{{}}' "
        f"WHEN 'number' THEN {column}::text WHEN 'boolean' THEN {column}::text "
        f"WHEN 'object' THEN auditlog_json_text({column}) "
        f"WHEN 'array' THEN auditlog_json_text({column}) END"
    )


def _labels() -> str:
    """Each event type's label (``label_of``), looked up in one constant ``jsonb`` object;
    NULL for a type the catalog does not hold (every stored type is in it). A ``CASE`` of
    the 47 codes compared each row's type one code after another: the export ran 7%
    slower with it."""
    from storage.catalog import EVENT_TYPES

    labels = json.dumps({t.code: t.label for t in EVENT_TYPES}, ensure_ascii=False)
    return "('" + labels.replace("'", "''") + "'::jsonb ->> e.type)"


#: Free-text columns: rendered once in the inner query, neutralised in the outer one.
FREE_TEXT = {
    "entity_id": "e.entity_id",
    "entity_name": "e.entity_name",
    "targets": (
        "CASE WHEN e.targets = '[]'::jsonb THEN NULL ELSE (SELECT string_agg((t->>'type') "
        "|| ':' || (t->>'id') || coalesce(' (' || (t->>'name') || ')', ''), '; ' ORDER BY o) "
        "FROM jsonb_array_elements(e.targets) WITH ORDINALITY AS x(t, o)) END"
    ),
    "property": "e.property",
    "old_value": _json_text("e.old_value"),
    "new_value": _json_text("e.new_value"),
    "actor_id": "e.actor_id",
    "actor_name": "e.actor_name",
    "actor_email": "e.actor_email",
}


def csv_copy_query(
    session: Session,
    org_id: str,
    flt: EventFilter,
    max_event_id: int | None = None,
    max_seq: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: ``COPY (…) TO STDOUT WITH CSV`` writing the export's CSV cells itself.

    The same filtered, ordered page query as the API, wrapped in two projections: the
    inner renders each cell once (``OFFSET 0`` keeps the planner from copying those
    expressions into the outer one), the outer neutralises formula starts. The result is
    what ``worker.exports.csv_row`` writes (the export tests compare the two).
    """
    inner = events_page_statement(
        "postgresql", org_id, flt, None, max_event_id=max_event_id, max_seq=max_seq
    )
    compiled = inner.compile(
        dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True}
    )
    rendered = ", ".join(
        [
            "e.id",
            "e.occurred_at",
            "to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS stamp",
            "e.type",
            f"{_labels()} AS label",
            "e.entity_type",
            "e.actor_type",
            "host(e.ip_address) AS ip",
            "e.origin",
        ]
        + [f"NULLIF({expression}, '') AS {name}" for name, expression in FREE_TEXT.items()]
    )
    stamp = (
        "CASE WHEN right(c.stamp, 6) = '000000' THEN left(c.stamp, 19) "
        "WHEN right(c.stamp, 3) = '000' THEN left(c.stamp, 23) ELSE c.stamp END || 'Z'"
    )
    cells = [
        stamp,
        "c.type",
        "c.label",
        "c.entity_type",
        _neutralised("c.entity_id"),
        _neutralised("c.entity_name"),
        _neutralised("c.targets"),
        _neutralised("c.property"),
        _neutralised("c.old_value"),
        _neutralised("c.new_value"),
        "c.actor_type",
        _neutralised("c.actor_id"),
        _neutralised("c.actor_name"),
        _neutralised("c.actor_email"),
        "c.ip",
        "c.origin",
        "'evt_' || lpad(to_hex(c.id), 16, '0')",
    ]
    query = (
        # The order is fixed inside the fence; the outer projection only passes rows on.
        f"COPY (SELECT {', '.join(cells)} FROM (SELECT {rendered} FROM ({compiled}) AS e "
        "ORDER BY e.occurred_at DESC, e.id DESC OFFSET 0) AS c) TO STDOUT WITH (FORMAT csv)"
    )
    return query, dict(compiled.params)
