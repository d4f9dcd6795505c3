"""A faster load of valid notifications; ``ingest.schemas`` stays the schema of record.

``NotificationSchema.load`` spends most of a batch's validation time in marshmallow's
machinery (nested schemas, hooks, error bookkeeping) rather than in the checks. For a
notification that passes every check, ``load_valid`` builds the same result directly: the
same field rules, the same schema-level validator (``check_fits_kind``) and the same
normalisation (``normalise``), called on the schema itself. At the first doubt it answers
None and the caller loads the notification with marshmallow, which also writes the error
messages. ``tests/unit/test_fastload.py`` checks, over generated notifications valid and
invalid, that whatever this returns equals what marshmallow returns.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from ingest.schemas import (
    MAX_ID,
    MAX_SEQUENCE,
    NotificationSchema,
    Rfc3339DateTime,
    UnscopedIP,
)
from storage.catalog import ACTIONS, ACTOR_TYPES, ENTITY_TYPES, KINDS, ORIGINS

_FIELDS = frozenset(NotificationSchema._declared_fields)
_TIMESTAMP = Rfc3339DateTime()
_IP = UnscopedIP()


def _identifier(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_ID


def _reference(value: Any, types: Any) -> dict[str, str] | None:
    if (
        type(value) is not dict
        or len(value) != 2
        or not _one_of(value.get("type"), types)
        or not _identifier(value.get("id"))
    ):
        return None
    return {"type": value["type"], "id": value["id"]}


def _optional_text(value: Any, longest: int) -> bool:
    return value is None or (type(value) is str and len(value) <= longest)


def _one_of(value: Any, choices: Any) -> bool:
    return type(value) is str and value in choices


def _actor(value: Any) -> dict[str, Any] | None:
    if type(value) is not dict or not value.keys() <= {"type", "id", "name", "email"}:
        return None
    if not _one_of(value.get("type"), ACTOR_TYPES) or not _identifier(value.get("id")):
        return None
    if not _optional_text(value.get("name"), 200) or not _optional_text(value.get("email"), 320):
        return None
    # In the schema's order of fields, as marshmallow returns it.
    return {name: value[name] for name in ("type", "id", "name", "email") if name in value}


def _action(value: Any) -> dict[str, Any] | None:
    if type(value) is not dict or not value.keys() <= {"type", "details"}:
        return None
    if not _one_of(value.get("type"), ACTIONS):
        return None
    details = value.get("details", {})
    if type(details) is not dict:
        return None
    return {"type": value["type"], "details": dict(details)}


def load_valid(schema: NotificationSchema, item: dict[str, Any]) -> dict[str, Any] | None:
    """What ``schema.load(item)`` returns, or None when it may not load (or this cannot tell)."""
    if not item.keys() <= _FIELDS:
        return None
    data: dict[str, Any] = {}
    if "id" in item:
        if not _identifier(item["id"]):
            return None
        data["id"] = item["id"]
    if not _one_of(item.get("kind"), KINDS):
        return None
    data["kind"] = item["kind"]
    entity = _reference(item.get("entity"), ENTITY_TYPES)
    if entity is None:
        return None
    data["entity"] = entity
    if "parent" in item:
        parent = _reference(item["parent"], ("app",))
        if parent is None:
            return None
        data["parent"] = parent
    occurred_at = item.get("occurred_at")
    if type(occurred_at) is not str:
        return None
    try:
        data["occurred_at"] = _TIMESTAMP.deserialize(occurred_at)
    except ValidationError:
        return None
    sequence = item.get("sequence", 0)
    if type(sequence) is not int or not 0 <= sequence <= MAX_SEQUENCE:
        return None
    data["sequence"] = sequence
    origin = item.get("origin", "api")
    if not _one_of(origin, ORIGINS):
        return None
    data["origin"] = origin
    if "actor" in item:
        actor = _actor(item["actor"])
        if actor is None:
            return None
        data["actor"] = actor
    if "ip_address" in item:
        if type(item["ip_address"]) is not str:
            return None
        try:
            data["ip_address"] = _IP.deserialize(item["ip_address"])
        except ValidationError:
            return None
    for name in ("properties", "relationships"):
        if name in item:
            if type(item[name]) is not dict:
                return None
            data[name] = dict(item[name])
    if "event" in item:
        action = _action(item["event"])
        if action is None:
            return None
        data["event"] = action
    try:
        schema.check_fits_kind(data)
    except ValidationError:
        return None
    return schema.normalise(data)
