"""The diff: given the stored state and a notification, what events and what new state?

Pure code over plain data (README: How changes become events): no session, no Flask, no Celery.
``apply`` mutates the in-memory ``World`` it is given and returns the derived events; the
recorder loads a World from the database, applies a batch, and writes back what is dirty.

Every property and edge carries the clock ``(occurred_at µs, sequence)`` of its last
change, and a change applies only when it is newer than everything that already touched
that property or edge. A snapshot touches every property (``snapshot_clock``) and every
edge of each relationship it lists (``rel_clocks``); a delete touches every edge of the
entity (``delete_clock``), except a device's, whose edges are kept. Those three clocks
stand in for tombstones that were never written as rows, so the final state is the same
whatever order the notifications arrive in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from storage.catalog import (
    CREATED_CODES,
    DEFAULT_CREATED,
    DELETED_CODES,
    EDGE_CODES,
    EDGE_ENDS,
    ORG_EDGE_ID,
    RELATIONSHIPS,
    UPDATED_CODES,
)

Clock = tuple[int, int]
EntityKey = tuple[str, str]
EdgeKey = tuple[str, str, str]

NEVER: Clock = (-(2**63), -1)

#: Entity types whose delete closes their edges (a device is archived with its edges kept).
CLOSES_EDGES_ON_DELETE = {"app", "person", "team", "license"}


@dataclass
class EntityState:
    type: str
    id: str
    parent_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    prop_clocks: dict[str, Clock] = field(default_factory=dict)
    snapshot_clock: Clock | None = None
    rel_clocks: dict[str, Clock] = field(default_factory=dict)
    exists_clock: Clock | None = None
    delete_clock: Clock | None = None
    baseline: dict[str, Any] | None = None
    updated_us: int | None = None
    dirty: bool = False

    @property
    def key(self) -> EntityKey:
        return (self.type, self.id)

    @property
    def known(self) -> bool:
        return self.exists_clock is not None or self.delete_clock is not None

    @property
    def deleted(self) -> bool:
        if self.delete_clock is None:
            return False
        return self.exists_clock is None or self.delete_clock > self.exists_clock

    @property
    def name(self) -> str | None:
        value = self.properties.get("name") if self.exists_clock is not None else None
        if value is None or isinstance(value, dict | list):
            return None
        return value if isinstance(value, str) else str(value)

    def touch(self, clock: Clock) -> None:
        self.dirty = True
        if self.updated_us is None or clock[0] > self.updated_us:
            self.updated_us = clock[0]


@dataclass
class EdgeState:
    kind: str
    a_id: str
    b_id: str
    present: bool
    clock: Clock
    dirty: bool = False

    @property
    def key(self) -> EdgeKey:
        return (self.kind, self.a_id, self.b_id)


@dataclass(frozen=True)
class Change:
    """A notification as the diff sees it (already validated by ingest)."""

    kind: str
    entity_type: str
    entity_id: str
    clock: Clock
    origin: str = "api"
    parent_id: str | None = None
    properties: dict[str, Any] | None = None
    relationships: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    #: Set on a restore: the id of the event whose old value this change puts back.
    restored_from: str | None = None
    #: Set on a restore made through the API: the key that made it (``key_id``, ``key_name``).
    performed_by: dict[str, Any] | None = None


@dataclass
class DerivedEvent:
    type: str
    entity: EntityKey
    targets: list[EntityKey] = field(default_factory=list)
    property: str | None = None
    old_value: Any = None
    new_value: Any = None
    details: dict[str, Any] = field(default_factory=dict)
    entity_name: str | None = None
    target_names: list[str | None] = field(default_factory=list)
    #: For a relationship event, the record whose side reported it.
    perspective: EntityKey | None = None


class World:
    """The slice of state a batch touches. Entities and edges not loaded are unknown."""

    def __init__(
        self, entities: Iterable[EntityState] = (), edges: Iterable[EdgeState] = ()
    ) -> None:
        self.entities: dict[EntityKey, EntityState] = {}
        self.edges: dict[EdgeKey, EdgeState] = {}
        self._by_end: dict[tuple[str, str, str], set[EdgeKey]] = {}
        for entity in entities:
            self.entities[entity.key] = entity
        for edge in edges:
            self._index(edge)

    def entity(self, entity_type: str, entity_id: str) -> EntityState:
        key = (entity_type, entity_id)
        found = self.entities.get(key)
        if found is None:
            found = self.entities[key] = EntityState(entity_type, entity_id)
        return found

    def edge(self, key: EdgeKey) -> EdgeState | None:
        return self.edges.get(key)

    def _index(self, edge: EdgeState) -> None:
        self.edges[edge.key] = edge
        self._by_end.setdefault((edge.kind, "a", edge.a_id), set()).add(edge.key)
        self._by_end.setdefault((edge.kind, "b", edge.b_id), set()).add(edge.key)

    def put_edge(self, edge: EdgeState) -> None:
        self._index(edge)

    def edges_at(self, kind: str, side: str, entity_id: str) -> list[EdgeState]:
        keys = self._by_end.get((kind, side, entity_id), ())
        return [self.edges[key] for key in sorted(keys)]

    def edges_of(self, entity: EntityState) -> list[EdgeState]:
        """Every loaded edge with ``entity`` at one end, in a stable order."""
        found = []
        for kind, (a_type, b_type) in EDGE_ENDS.items():
            if a_type == entity.type:
                found.extend(self.edges_at(kind, "a", entity.id))
            if b_type == entity.type:
                found.extend(self.edges_at(kind, "b", entity.id))
        return found


def same_json(left: Any, right: Any) -> bool:
    """Equality as JSON sees it: ``0`` is not ``false``, ``1`` and ``1.0`` are one number."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    return bool(left == right)


def _clock_of(value: Clock | None) -> Clock:
    return NEVER if value is None else value


def _later(current: Clock | None, clock: Clock) -> Clock:
    return clock if current is None or clock > current else current


# --- the diff --------------------------------------------------------------------------


class Diff:
    """Applies one change to a World; collects what it derives."""

    def __init__(self, world: World, change: Change) -> None:
        self.world = world
        self.change = change
        self.clock = change.clock
        self.subject = world.entity(change.entity_type, change.entity_id)
        self.events: list[DerivedEvent] = []
        self.silent = False

    # Who an event is about, from an entity's point of view.
    def event_entity(self, entity: EntityState) -> EntityKey:
        if entity.type in ("license", "subscription"):
            return ("app", entity.parent_id or "")
        return entity.key

    def emit(self, event: DerivedEvent) -> None:
        if not self.silent:
            self.events.append(event)

    def run(self) -> list[DerivedEvent]:
        kind = self.change.kind
        if kind == "event":
            self.record_action()
        elif kind == "delete":
            self.delete()
        else:
            self.upsert()
        for event in self.events:
            self.name(event)
        return self.events

    def name(self, event: DerivedEvent) -> None:
        entities = self.world.entities
        entity = entities.get(event.entity)
        event.entity_name = entity.name if entity else None
        event.target_names = [
            target.name if (target := entities.get(key)) else None for key in event.targets
        ]

    # -- kind: event --------------------------------------------------------------------

    def record_action(self) -> None:
        assert self.change.action is not None
        self.emit(
            DerivedEvent(
                type=self.change.action["type"],
                entity=self.subject.key,
                details=dict(self.change.action.get("details") or {}),
            )
        )

    # -- kind: delete -------------------------------------------------------------------

    def delete(self) -> None:
        subject, clock = self.subject, self.clock
        if clock <= _clock_of(subject.delete_clock):
            return  # a later delete already did everything this one would
        existed = subject.exists_clock is not None and not subject.deleted
        if self.change.parent_id and subject.parent_id is None:
            subject.parent_id = self.change.parent_id
        subject.delete_clock = clock
        subject.touch(clock)
        if subject.type in CLOSES_EDGES_ON_DELETE:
            for edge in self.world.edges_of(subject):
                if edge.present and edge.clock < clock:
                    self.set_presence(edge, False, perspective=subject)
        if existed and subject.deleted:
            self.emit(
                DerivedEvent(
                    DELETED_CODES[subject.type],
                    self.event_entity(subject),
                    targets=[subject.key] if subject.type in ("license", "subscription") else [],
                )
            )

    # -- kind: snapshot, patch, baseline ------------------------------------------------

    def upsert(self) -> None:
        subject, clock, change = self.subject, self.clock, self.change
        first_sight = not subject.known
        baseline_first = change.kind == "baseline" and first_sight
        full = change.kind in ("snapshot", "baseline")
        was_alive = subject.exists_clock is not None and not subject.deleted

        if subject.exists_clock is None or clock > subject.exists_clock:
            subject.exists_clock = clock
            if change.parent_id:
                subject.parent_id = change.parent_id
            subject.dirty = True
        alive = not subject.deleted
        created = alive and not was_alive
        # Older than the deletion, or a first baseline: state is applied, nothing is emitted.
        self.silent = not alive or baseline_first

        changed = self.apply_properties(full)
        if created:
            self.emit(
                DerivedEvent(
                    CREATED_CODES[subject.type].get(change.origin, DEFAULT_CREATED[subject.type]),
                    self.event_entity(subject),
                    targets=[subject.key] if subject.type in ("license", "subscription") else [],
                    new_value=dict(subject.properties),
                )
            )
            subject.touch(clock)
        else:
            for key, old, new in changed:
                self.emit(self.property_event(key, old, new))
        if baseline_first:
            subject.baseline = {
                "clock": list(clock),
                "properties": dict(subject.properties),
                "relationships": change.relationships or {},
            }
        self.apply_relationships(full)

    def property_event(self, key: str, old: Any, new: Any) -> DerivedEvent:
        subject = self.subject
        code = UPDATED_CODES[subject.type]
        if subject.type == "device" and key == "status":
            code = "device.status_updated"
        return DerivedEvent(
            code,
            self.event_entity(subject),
            targets=[subject.key] if subject.type in ("license", "subscription") else [],
            property=key,
            old_value=old,
            new_value=new,
            details=self.restore_details(),
        )

    def restore_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.change.restored_from:
            details["restored_from"] = self.change.restored_from
            if self.change.performed_by:
                details["performed_by"] = self.change.performed_by
        return details

    def apply_properties(self, full: bool) -> list[tuple[str, Any, Any]]:
        """Apply the change's properties under the clock rules; return (key, old, new)."""
        given = self.change.properties
        if given is None:
            return []
        subject, clock = self.subject, self.clock
        floor = _clock_of(subject.snapshot_clock)
        if full:
            keys = list(given) + sorted(set(subject.properties) - set(given))
            keys += sorted(set(subject.prop_clocks) - set(keys))
        else:
            keys = list(given)
        changed = []
        for key in keys:
            if clock <= max(subject.prop_clocks.get(key, NEVER), floor):
                continue
            new = given.get(key)
            old = subject.properties.get(key)
            if new is None:
                subject.properties.pop(key, None)
            else:
                subject.properties[key] = new
            subject.prop_clocks[key] = clock
            subject.dirty = True
            if not same_json(old, new):
                changed.append((key, old, new))
                subject.touch(clock)
        if full and clock > floor:
            # A clock that moves must be stored even when no value changed: it is what keeps
            # an older patch, arriving in a later transaction, from applying.
            subject.snapshot_clock = clock
            subject.dirty = True
            # Tombstones older than the snapshot are implied by it.
            for key in [k for k, c in subject.prop_clocks.items() if c < clock]:
                if key not in subject.properties:
                    del subject.prop_clocks[key]
        return changed

    # -- relationships ------------------------------------------------------------------

    def apply_relationships(self, full: bool) -> None:
        given = self.change.relationships
        if not given:
            return
        subject, clock = self.subject, self.clock
        for name, value in given.items():
            relationship = RELATIONSHIPS[subject.type][name]
            if name == "org":
                self.set_edge(relationship.kind, subject.id, ORG_EDGE_ID, bool(value))
                continue
            if full:
                listed = list(value)
                for other_id in listed:
                    self.set_edge(*self.ends(relationship, other_id), True)
                keep = set(listed)
                for edge in self.world.edges_at(relationship.kind, relationship.side, subject.id):
                    other_id = edge.b_id if relationship.side == "a" else edge.a_id
                    if edge.present and other_id not in keep:
                        self.set_edge(edge.kind, edge.a_id, edge.b_id, False)
                if clock > subject.rel_clocks.get(name, NEVER):
                    subject.rel_clocks[name] = clock
                    subject.dirty = True
            else:
                for other_id in value.get("add", []):
                    self.set_edge(*self.ends(relationship, other_id), True)
                for other_id in value.get("remove", []):
                    self.set_edge(*self.ends(relationship, other_id), False)

    def ends(self, relationship: Any, other_id: str) -> tuple[str, str, str]:
        if relationship.side == "a":
            return (relationship.kind, self.subject.id, other_id)
        return (relationship.kind, other_id, self.subject.id)

    def edge_floor(self, kind: str, a_id: str, b_id: str) -> Clock:
        """The newest change that already touched this edge without being stored on it."""
        a_type, b_type = EDGE_ENDS[kind]
        floor = NEVER
        ends = [(a_type, a_id)]
        if b_type is not None:
            ends.append((b_type, b_id))
        for end_type, end_id in ends:
            end = self.world.entities.get((end_type, end_id))
            if end is None:
                continue
            for name, relationship in RELATIONSHIPS[end_type].items():
                if relationship.kind == kind:
                    floor = max(floor, end.rel_clocks.get(name, NEVER))
            if end_type in CLOSES_EDGES_ON_DELETE:
                floor = max(floor, _clock_of(end.delete_clock))
        return floor

    def set_edge(self, kind: str, a_id: str, b_id: str, present: bool) -> None:
        clock = self.clock
        edge = self.world.edge((kind, a_id, b_id))
        current = edge.clock if edge else NEVER
        if clock <= max(current, self.edge_floor(kind, a_id, b_id)):
            return
        if edge is None:
            edge = EdgeState(kind, a_id, b_id, present=False, clock=clock)
            self.world.put_edge(edge)
            edge.dirty = True
            if not present:
                return  # a tombstone, so that an older add stays refused
        self.set_presence(edge, present, perspective=self.subject)

    def set_presence(self, edge: EdgeState, present: bool, perspective: EntityState) -> None:
        """Move an edge to ``present`` at this change's clock, emitting if it flips."""
        flipped = edge.present != present
        edge.present = present
        edge.clock = self.clock
        edge.dirty = True
        if not flipped:
            return
        a_type, b_type = EDGE_ENDS[edge.kind]
        a = self.world.entity(a_type, edge.a_id)
        b = self.world.entity(b_type, edge.b_id) if b_type else None
        event = self.edge_event(edge, present, perspective, a, b)
        # The change belongs to the side it is reported from (the event's own record).
        (a if event.perspective == a.key else b or a).touch(self.clock)
        self.emit(event)

    def edge_event(
        self,
        edge: EdgeState,
        present: bool,
        perspective: EntityState,
        a: EntityState,
        b: EntityState | None,
    ) -> DerivedEvent:
        # From the perspective entity's side where that side has a code, else the other's.
        if (edge.kind, perspective.type) not in EDGE_CODES:
            perspective = a if perspective is b else b  # type: ignore[assignment]
        created, removed = EDGE_CODES[(edge.kind, perspective.type)]
        reported_from = perspective.key
        code = created if present else removed
        if code == "team.person_relationship_created" and self.change.origin == "csv":
            code = "team.person_relationship_created_csv"
        other = b if perspective is a else a
        targets: list[EntityKey] = []
        if perspective.type == "license":
            targets.append(perspective.key)
        if other is not None:
            targets.append(other.key)
        return DerivedEvent(
            code, self.event_entity(perspective), targets=targets, perspective=reported_from
        )


def apply(world: World, change: Change) -> list[DerivedEvent]:
    """Apply one change to ``world`` and return the events it derives, in order."""
    return Diff(world, change).run()
