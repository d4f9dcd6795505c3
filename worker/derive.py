"""From a stored notification to complete event records: the diff plus who, where and when.

Pure, like the diff: the recorder adds only the database keys and ``recorded_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.catalog import label_of
from storage.timefmt import to_micros
from worker.diff import Change, DerivedEvent, World, apply


@dataclass(frozen=True)
class Sender:
    """The webhook source a notification came through: the default actor."""

    source_id: str | None
    name: str | None


def change_of(payload: dict[str, Any]) -> Change:
    occurred_at = datetime.fromisoformat(payload["occurred_at"])
    parent = payload.get("parent")
    return Change(
        kind=payload["kind"],
        entity_type=payload["entity"]["type"],
        entity_id=payload["entity"]["id"],
        clock=(to_micros(occurred_at), int(payload.get("sequence", 0))),
        origin=payload.get("origin", "api"),
        parent_id=parent["id"] if parent else None,
        properties=payload.get("properties"),
        relationships=payload.get("relationships"),
        action=payload.get("event"),
        restored_from=payload.get("restored_from"),
        performed_by=payload.get("performed_by"),
    )


def actor_of(payload: dict[str, Any], sender: Sender) -> dict[str, Any]:
    actor = payload.get("actor")
    if not actor:
        assert sender.source_id is not None, "changes made through the API name their actor"
        return {"type": "integration", "id": sender.source_id, "name": sender.name, "email": None}
    return {
        "type": actor["type"],
        "id": actor["id"],
        "name": actor.get("name"),
        "email": actor.get("email"),
    }


def event_record(derived: DerivedEvent, payload: dict[str, Any], sender: Sender) -> dict[str, Any]:
    """The public event object, less ``id`` and ``recorded_at``."""
    entity_type, entity_id = derived.entity
    return {
        "type": derived.type,
        "label": label_of(derived.type),
        "occurred_at": datetime.fromisoformat(payload["occurred_at"]),
        "entity": {"type": entity_type, "id": entity_id, "name": derived.entity_name},
        "targets": [
            {"type": target_type, "id": target_id, "name": name}
            for (target_type, target_id), name in zip(
                derived.targets, derived.target_names, strict=True
            )
        ],
        "property": derived.property,
        "old_value": derived.old_value,
        "new_value": derived.new_value,
        "actor": actor_of(payload, sender),
        "ip_address": payload.get("ip_address"),
        "origin": payload.get("origin", "api"),
        "source_id": sender.source_id,
        "notification_id": payload.get("id"),
        "details": derived.details,
    }


def derive(world: World, payload: dict[str, Any], sender: Sender) -> list[dict[str, Any]]:
    """Apply one stored notification to ``world``; return its events, in derivation order."""
    return [event_record(event, payload, sender) for event in apply(world, change_of(payload))]
