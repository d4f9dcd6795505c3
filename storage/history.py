"""A record's state at an instant, rebuilt from its baseline and the log (``?as_of=``).

The log holds every change that emitted an event: created events carry the initial
properties, property updates carry old and new values, relationship events open and close
edges, deleted events end existence. Replaying a record's events in time order, on top of
its baseline when it has one, gives its state at any instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from storage.catalog import (
    CREATED_CODES,
    DEFAULT_CREATED,
    DELETED_CODES,
    EDGE_EVENT_CODES,
    PARENTED_EVENT_PREFIXES,
    PROPERTY_EVENT_CODES,
    RELATIONSHIPS,
)
from storage.timefmt import from_micros

CREATED = frozenset(DEFAULT_CREATED.values()) | {
    code for variants in CREATED_CODES.values() for code in variants.values()
}
DELETED = frozenset(DELETED_CODES.values())


def subject_of(row: Any) -> tuple[str, str]:
    """The record whose own state an event changed (a license's, not its app's)."""
    if row.type.startswith(PARENTED_EVENT_PREFIXES) and row.targets:
        return (row.targets[0]["type"], row.targets[0]["id"])
    return (row.entity_type, row.entity_id)


def _edge_ends(row: Any, perspective: str) -> tuple[tuple[str, str], tuple[str, str] | None]:
    if perspective == "license":
        license_, person = row.targets[0], row.targets[1]
        return (license_["type"], license_["id"]), (person["type"], person["id"])
    other = row.targets[0] if row.targets else None
    return (row.entity_type, row.entity_id), (other["type"], other["id"]) if other else None


def _relationship_name(record_type: str, kind: str) -> str | None:
    for name, relationship in RELATIONSHIPS[record_type].items():
        if relationship.kind == kind:
            return name
    return None


def state_as_of(
    record: tuple[str, str], baseline: dict[str, Any] | None, log: Iterable[Any], as_of: datetime
) -> dict[str, Any] | None:
    """``{"properties", "relationships", "deleted", "updated_at"}``, or None if not yet known."""
    record_type = record[0]
    properties: dict[str, Any] = {}
    relationships: dict[str, Any] = {
        name: False if name == "org" else set() for name in RELATIONSHIPS[record_type]
    }
    known, deleted, updated_at = False, False, None

    if baseline is not None:
        moment = from_micros(baseline["clock"][0])
        if moment <= as_of:
            known, updated_at = True, moment
            properties = dict(baseline["properties"])
            for name, value in (baseline.get("relationships") or {}).items():
                relationships[name] = bool(value) if name == "org" else set(value)

    for row in log:
        if row.occurred_at > as_of:
            break
        if row.type in EDGE_EVENT_CODES:
            kind, perspective, present = EDGE_EVENT_CODES[row.type]
            near, far = _edge_ends(row, perspective)
            if record not in (near, far):
                continue
            if record == near:  # a change reported from this record's side
                updated_at = row.occurred_at
            name = _relationship_name(record_type, kind)
            if name is None:
                continue  # an edge this side does not list (a person's teams, licenses)
            if name == "org":
                relationships[name] = present
            else:
                other = far if record == near else near
                assert other is not None
                (relationships[name].add if present else relationships[name].discard)(other[1])
            continue
        if subject_of(row) != record:
            continue
        if row.type in CREATED:
            properties, known, deleted = dict(row.new_value or {}), True, False
        elif row.type in PROPERTY_EVENT_CODES:
            if row.new_value is None:
                properties.pop(row.property, None)
            else:
                properties[row.property] = row.new_value
        elif row.type in DELETED:
            known, deleted = True, True
        else:
            continue
        updated_at = row.occurred_at

    if not known:
        return None
    return {
        "properties": properties,
        "relationships": {
            name: value if name == "org" else sorted(value) for name, value in relationships.items()
        },
        "deleted": deleted,
        "updated_at": updated_at,
    }
