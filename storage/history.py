"""A record's state at an instant, rebuilt from its baseline and the log (``?as_of=``).

The log holds every change that emitted an event: created events carry the initial
properties, property updates carry old and new values, relationship events open and close
edges, deleted events end existence. A baseline emits nothing, yet it sets state at its
clock: its record's properties and existence, every edge of each relationship it lists,
and so those edges as the records at their far ends see them. Replaying, in clock order,
the record's events together with those baselines (its own, and the far ends' that set one
of its edges) gives its state at any instant: each entry sets what it covers, so an event
older than a baseline is overridden by it and a newer one applies on top of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class EdgeBaseline:
    """A far end's baseline that set one edge of the record, silently, at its clock.

    ``relationship`` is the name of that edge's relationship as the record sees it;
    ``present`` whether the baseline listed the record.
    """

    occurred_at: datetime
    sequence: int
    relationship: str
    other_id: str
    present: bool


@dataclass(frozen=True)
class _OwnBaseline:
    occurred_at: datetime
    sequence: int
    baseline: dict[str, Any]


def clock_key(entry: Any) -> tuple[datetime, int, int, int]:
    """Clock order; at one clock a baseline first: an event there means it won the tie."""
    if isinstance(entry, EdgeBaseline | _OwnBaseline):
        return (entry.occurred_at, entry.sequence, 0, 0)
    return (entry.occurred_at, entry.sequence, 1, entry.id)


def state_as_of(
    record: tuple[str, str], baseline: dict[str, Any] | None, log: Iterable[Any], as_of: datetime
) -> dict[str, Any] | None:
    """``{"properties", "relationships", "deleted", "updated_at"}``, or None if not yet known.

    ``log`` holds the record's events (rows with their notification's ``sequence``) and
    the far ends' ``EdgeBaseline`` entries, in any order; ``baseline`` is the record's own.
    """
    record_type = record[0]
    properties: dict[str, Any] = {}
    relationships: dict[str, Any] = {
        name: False if name == "org" else set() for name in RELATIONSHIPS[record_type]
    }
    known, deleted, updated_at = False, False, None

    def later(moment: datetime) -> datetime:
        return moment if updated_at is None or moment > updated_at else updated_at

    entries = list(log)
    if baseline is not None:
        clock = baseline["clock"]
        entries.append(_OwnBaseline(from_micros(clock[0]), int(clock[1]), baseline))
    entries.sort(key=clock_key)

    for row in entries:
        if row.occurred_at > as_of:
            break
        if isinstance(row, _OwnBaseline):
            # The state it stored, and every edge of the relationships it listed.
            known, deleted, updated_at = True, False, later(row.occurred_at)
            properties = dict(row.baseline["properties"])
            for name, value in (row.baseline.get("relationships") or {}).items():
                relationships[name] = bool(value) if name == "org" else set(value)
            continue
        if isinstance(row, EdgeBaseline):
            # Reported from the far end: the record's relationships, not its updated_at.
            present_ids = relationships[row.relationship]
            (present_ids.add if row.present else present_ids.discard)(row.other_id)
            continue
        if row.type in EDGE_EVENT_CODES:
            kind, perspective, present = EDGE_EVENT_CODES[row.type]
            near, far = _edge_ends(row, perspective)
            if record not in (near, far):
                continue
            if record == near:  # a change reported from this record's side
                updated_at = later(row.occurred_at)
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
        updated_at = later(row.occurred_at)

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
