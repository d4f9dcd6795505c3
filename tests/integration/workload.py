"""Random but reproducible histories of notifications, and the states to compare them by."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import func, select

from storage import inbox
from storage.catalog import RELATIONSHIPS
from storage.db import Database
from storage.models import Edge, Entity, Event, Notification
from worker.derive import Sender, derive
from worker.diff import World

KEYS = ["name", "title", "level", "status"]


def population(size: int) -> dict[str, list[str]]:
    """``size`` records spread over persons, apps, teams and devices."""
    persons = max(1, size * 6 // 10)
    apps = max(1, size * 2 // 10)
    teams = max(1, size // 10)
    devices = max(1, size - persons - apps - teams)
    return {
        "person": [f"p{i}" for i in range(persons)],
        "app": [f"a{i}" for i in range(apps)],
        "team": [f"t{i}" for i in range(teams)],
        "device": [f"d{i}" for i in range(devices)],
    }


def random_notification(rng: random.Random, entities: dict[str, list[str]]) -> dict[str, Any]:
    entity_type = rng.choice(sorted(entities))
    entity_id = rng.choice(entities[entity_type])
    kind = rng.choices(["snapshot", "patch", "delete"], weights=[5, 5, 1])[0]
    payload: dict[str, Any] = {
        "kind": kind,
        "entity": {"type": entity_type, "id": entity_id},
        "origin": rng.choice(["sync", "api", "csv"]),
    }
    if kind == "delete":
        return payload
    properties = {
        key: rng.choice([None, 0, 1, "x", "y"]) for key in rng.sample(KEYS, rng.randint(0, 3))
    }
    if kind == "snapshot":
        properties = {k: v for k, v in properties.items() if v is not None}
    payload["properties"] = properties
    relationships: dict[str, Any] = {}
    for name, relationship in RELATIONSHIPS[entity_type].items():
        if rng.random() < 0.5:
            continue
        if relationship.other is None:
            relationships[name] = rng.random() < 0.5
            continue
        pool = entities[relationship.other]
        if kind == "snapshot":
            relationships[name] = rng.sample(pool, rng.randint(0, min(3, len(pool))))
        else:
            added = rng.sample(pool, rng.randint(0, min(2, len(pool))))
            removed = [
                i for i in rng.sample(pool, rng.randint(0, min(2, len(pool)))) if i not in added
            ]
            relationships[name] = {"add": added, "remove": removed}
    payload["relationships"] = relationships
    return payload


def history(rng: random.Random, count: int, entities: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``count`` notifications with distinct clocks, in clock order."""
    seconds = rng.sample(range(count * 20), count)
    items = []
    for index, second in enumerate(sorted(seconds)):
        payload = random_notification(rng, entities)
        payload["id"] = f"n{index:06d}"
        payload["occurred_at"] = (
            f"2026-11-{1 + second // 86400:02d}T{second // 3600 % 24:02d}:"
            f"{second // 60 % 60:02d}:{second % 60:02d}Z"
        )
        items.append(payload)
    return items


def replayed_state(database: Database, org_id: str) -> dict[str, Any]:
    """The state an in-order replay of every stored notification of ``org_id`` reaches."""
    with database.unit_of_work() as session:
        rows = session.execute(
            select(Notification.payload, Notification.external_id)
            .where(Notification.org_id == org_id)
            .order_by(Notification.occurred_at, Notification.sequence)
        ).all()
    world = World()
    for payload, external_id in rows:
        derive(world, {**payload, "id": external_id}, Sender("src", "src"))
    return {
        "entities": {
            key: (entity.properties, entity.deleted)
            for key, entity in world.entities.items()
            if entity.known
        },
        "edges": sorted(key for key, edge in world.edges.items() if edge.present),
    }


def stored_state(database: Database, org_id: str) -> dict[str, Any]:
    with database.unit_of_work() as session:
        entities = session.execute(
            select(
                Entity.entity_type,
                Entity.entity_id,
                Entity.properties,
                Entity.deleted,
                Entity.clocks,
            ).where(Entity.org_id == org_id)
        ).all()
        edges = session.execute(
            select(Edge.kind, Edge.a_id, Edge.b_id).where(Edge.org_id == org_id, Edge.present)
        ).all()
    return {
        "entities": {
            (row.entity_type, row.entity_id): (row.properties, row.deleted)
            for row in entities
            if row.clocks.get("exists") or row.clocks.get("deleted")
        },
        "edges": sorted(tuple(row) for row in edges),
    }


def status_counts(database: Database) -> dict[str, int]:
    """Notifications by status."""
    with database.unit_of_work() as session:
        return inbox.count_by_status(session)


def doubled_events(database: Database) -> int:
    """Events recorded more than once for one notification (the unique index forbids it)."""
    with database.unit_of_work() as session:
        per_position = (
            select(Event.notification_pk, Event.position)
            .group_by(Event.notification_pk, Event.position)
            .having(func.count() > 1)
        )
        return len(session.execute(per_position).all())
