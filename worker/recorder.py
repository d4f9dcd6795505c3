"""Recording a batch of notifications: lock, load, diff, write — a few statements per batch.

1. Lock the entity rows every notification names (subjects, parents, relationship ids),
   creating empty rows for records never seen, in a stable order.
2. Lock every edge of the subjects; read the far ends and license parents for names.
3. Apply the notifications in clock order to that in-memory World (``worker.diff``).
4. Write the dirty entities and edges, the events and their subjects, and the
   notifications' status — all in the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from storage import state
from storage.catalog import EDGE_ENDS, PARENTED_TYPES, RELATIONSHIPS
from storage.inbox import PROCESSED
from storage.models import Notification, Source
from storage.timefmt import from_micros, to_micros
from worker.derive import Sender, derive
from worker.diff import Clock, EdgeState, EntityKey, EntityState, World


def _clock(value: Any) -> Clock | None:
    return None if value is None else (int(value[0]), int(value[1]))


def entity_state(row: Row[Any]) -> EntityState:
    clocks = row.clocks or {}
    return EntityState(
        type=row.entity_type,
        id=row.entity_id,
        parent_id=row.parent_id,
        properties=dict(row.properties or {}),
        prop_clocks={key: (int(c[0]), int(c[1])) for key, c in clocks.get("props", {}).items()},
        snapshot_clock=_clock(clocks.get("snapshot")),
        rel_clocks={key: (int(c[0]), int(c[1])) for key, c in clocks.get("rels", {}).items()},
        exists_clock=_clock(clocks.get("exists")),
        delete_clock=_clock(clocks.get("deleted")),
        baseline=row.baseline,
        updated_us=None if row.updated_at is None else to_micros(row.updated_at),
    )


def entity_row(org_id: str, entity: EntityState, updated_at: datetime | None) -> dict[str, Any]:
    def pair(clock: Clock | None) -> list[int] | None:
        return None if clock is None else [clock[0], clock[1]]

    return {
        "k_org_id": org_id,
        "k_entity_type": entity.type,
        "k_entity_id": entity.id,
        "parent_id": entity.parent_id,
        "properties": entity.properties,
        "clocks": {
            "props": {key: [c[0], c[1]] for key, c in entity.prop_clocks.items()},
            "snapshot": pair(entity.snapshot_clock),
            "rels": {key: [c[0], c[1]] for key, c in entity.rel_clocks.items()},
            "exists": pair(entity.exists_clock),
            "deleted": pair(entity.delete_clock),
        },
        "deleted": entity.deleted,
        "baseline": entity.baseline,
        "updated_at": updated_at,
    }


def referenced_keys(payload: dict[str, Any]) -> set[EntityKey]:
    """Every record a notification names: its subject, its parent, its relationship ids."""
    entity_type = payload["entity"]["type"]
    keys = {(entity_type, payload["entity"]["id"])}
    if payload.get("parent"):
        keys.add(("app", payload["parent"]["id"]))
    for name, value in (payload.get("relationships") or {}).items():
        other = RELATIONSHIPS[entity_type][name].other
        if other is None:
            continue
        ids = value if isinstance(value, list) else value.get("add", []) + value.get("remove", [])
        keys.update((other, other_id) for other_id in ids)
    return keys


def far_ends(edges: Iterable[EdgeState]) -> set[EntityKey]:
    keys: set[EntityKey] = set()
    for edge in edges:
        a_type, b_type = EDGE_ENDS[edge.kind]
        keys.add((a_type, edge.a_id))
        if b_type is not None:
            keys.add((b_type, edge.b_id))
    return keys


def load_world(
    session: Session, org_id: str, payloads: Sequence[dict[str, Any]]
) -> tuple[World, set[EntityKey]]:
    """The state a batch touches, and the subjects, whose rows this transaction may write.

    Subjects are locked exclusively; the records they only point at (relationship ids,
    parents) are locked shared: their clocks must not move under the diff, but the batch
    never writes them.
    """
    referenced: set[EntityKey] = set()
    subjects: set[EntityKey] = set()
    for payload in payloads:
        referenced |= referenced_keys(payload)
        subjects.add((payload["entity"]["type"], payload["entity"]["id"]))
    rows = state.lock_entities(session, org_id, subjects, referenced - subjects)
    edge_rows = state.lock_edges_of(session, org_id, subjects)
    edges = [
        EdgeState(r.kind, r.a_id, r.b_id, r.present, (r.clock_us, r.clock_seq)) for r in edge_rows
    ]
    world = World((entity_state(row) for row in rows), edges)

    # Far ends of existing edges, then the parents of licenses among them: names only.
    for _ in range(2):
        wanted = far_ends(edges) | {
            ("app", entity.parent_id)
            for entity in world.entities.values()
            if entity.type in PARENTED_TYPES and entity.parent_id
        }
        missing = wanted - set(world.entities)
        if not missing:
            break
        for row in state.load_entities(session, org_id, missing):
            world.entities[(row.entity_type, row.entity_id)] = entity_state(row)
    return world, subjects


def record_notifications(session: Session, notifications: Sequence[Any], now: datetime) -> None:
    """Diff the notifications (already locked, in clock order) and write everything."""
    by_org: dict[str, list[Any]] = defaultdict(list)
    for notification in notifications:
        by_org[notification.org_id].append(notification)
    source_ids = {n.source_id for n in notifications if n.source_id is not None}
    senders: dict[str | None, Sender] = {None: Sender(None, None)}
    senders.update(
        (row.id, Sender(row.id, row.name))
        for row in session.execute(select(Source.id, Source.name).where(Source.id.in_(source_ids)))
    )
    # In a fixed order: a batch holding several organisations (the sweeper's, the catch-up
    # pass's) locks their records in the same order as any other such batch.
    for org_id in sorted(by_org):
        _record_org_batch(session, org_id, by_org[org_id], senders, now)
    state.mark_processed(session, [notification.pk for notification in notifications], now)
    for notification in notifications:
        if isinstance(notification, Notification):
            # The UPDATE went past the ORM: keep a loaded object (a restore's) true to it.
            for name, value in (("status", PROCESSED), ("processed_at", now), ("error", None)):
                set_committed_value(notification, name, value)


def _record_org_batch(
    session: Session,
    org_id: str,
    batch: Sequence[Any],
    senders: dict[str | None, Sender],
    now: datetime,
) -> None:
    payloads = [{**notification.payload, "id": notification.external_id} for notification in batch]
    world, subjects = load_world(session, org_id, payloads)

    derived: list[tuple[Any, list[dict[str, Any]]]] = []
    for notification, payload in zip(batch, payloads, strict=True):
        derived.append((notification, derive(world, payload, senders[notification.source_id])))

    entity_rows, bumps = [], defaultdict(set)
    for entity in world.entities.values():
        if not entity.dirty:
            continue
        updated = from_micros(entity.updated_us) if entity.updated_us is not None else None
        if entity.key in subjects:
            entity_rows.append(entity_row(org_id, entity, updated))
        elif updated is not None:
            bumps[updated].add(entity.key)
    state.save_entities(session, entity_rows)
    for moment, keys in bumps.items():
        state.bump_updated_at(session, org_id, keys, moment)
    state.save_edges(
        session,
        [
            {
                "org_id": org_id,
                "kind": edge.kind,
                "a_id": edge.a_id,
                "b_id": edge.b_id,
                "present": edge.present,
                "clock_us": edge.clock[0],
                "clock_seq": edge.clock[1],
            }
            for edge in world.edges.values()
            if edge.dirty
        ],
    )

    total = sum(len(records) for _, records in derived)
    ids = iter(state.allocate_event_ids(session, total))
    event_rows: list[dict[str, Any]] = []
    subject_rows: list[dict[str, Any]] = []
    for notification, records in derived:
        for position, record in enumerate(records):
            event_id = next(ids)
            event_rows.append(_event_row(org_id, event_id, notification, position, record, now))
            concerned = {(record["entity"]["type"], record["entity"]["id"])}
            concerned.update((target["type"], target["id"]) for target in record["targets"])
            subject_rows.extend(
                {
                    "org_id": org_id,
                    "entity_type": entity_type,
                    "entity_id": entity_id,
                    "occurred_at": record["occurred_at"],
                    "event_id": event_id,
                }
                for entity_type, entity_id in sorted(concerned)
            )
    state.insert_events(session, event_rows, subject_rows)


def _event_row(
    org_id: str,
    event_id: int,
    notification: Any,
    position: int,
    record: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    actor = record["actor"]
    return {
        "id": event_id,
        "org_id": org_id,
        "type": record["type"],
        "occurred_at": record["occurred_at"],
        "recorded_at": now,
        "entity_type": record["entity"]["type"],
        "entity_id": record["entity"]["id"],
        "entity_name": record["entity"]["name"],
        "targets": record["targets"],
        "property": record["property"],
        "old_value": record["old_value"],
        "new_value": record["new_value"],
        "actor_type": actor["type"],
        "actor_id": actor["id"],
        "actor_name": actor["name"],
        "actor_email": actor["email"],
        "ip_address": record["ip_address"],
        "origin": record["origin"],
        "source_id": record["source_id"],
        "notification_id": notification.external_id,
        "notification_pk": notification.pk,
        "position": position,
        "details": record["details"],
    }
