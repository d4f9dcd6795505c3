"""Property-based: whatever the delivery order, the final state is the in-order state.

Each notification is applied to a World loaded afresh from a ``Store`` that keeps only what
the recorder writes (the dirty subjects' rows, through the recorder's own row mapping, and
the dirty edges): a clock changed in memory but never marked dirty is lost between
notifications here exactly as it would be between two transactions. ``HYPOTHESIS_PROFILE=slow``
(CI) runs thousands of examples.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.catalog import PARENTED_TYPES, RELATIONSHIPS
from storage.timefmt import from_micros
from tests.unit.test_diff_catalog import SENDER
from worker.derive import derive
from worker.diff import EdgeKey, EdgeState, EntityKey, World
from worker.recorder import entity_row, entity_state, far_ends, referenced_keys

ENTITIES = {
    "person": ["p1", "p2"],
    "app": ["a1", "a2"],
    "team": ["t1"],
    "device": ["d1"],
    "license": ["l1"],
}
KEYS = ["name", "title", "level"]
values = st.one_of(st.none(), st.integers(0, 3), st.sampled_from(["x", "y"]))


@st.composite
def notifications(draw: Any) -> dict[str, Any]:
    entity_type = draw(st.sampled_from(sorted(ENTITIES)))
    entity_id = draw(st.sampled_from(ENTITIES[entity_type]))
    kind = draw(st.sampled_from(["snapshot", "snapshot", "patch", "patch", "delete"]))
    payload: dict[str, Any] = {
        "kind": kind,
        "entity": {"type": entity_type, "id": entity_id},
        "origin": "sync",
    }
    if entity_type == "license":
        payload["parent"] = {"type": "app", "id": "a1"}
    if kind == "delete":
        return payload
    props = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=3))
    if kind == "snapshot":
        props = {k: v for k, v in props.items() if v is not None}
    payload["properties"] = props
    relationships: dict[str, Any] = {}
    for name, relationship in RELATIONSHIPS[entity_type].items():
        if not draw(st.booleans()):
            continue
        if relationship.other is None:
            relationships[name] = draw(st.booleans())
            continue
        pool = ENTITIES[relationship.other]
        if kind == "snapshot":
            relationships[name] = draw(st.lists(st.sampled_from(pool), unique=True))
        else:
            added = draw(st.lists(st.sampled_from(pool), unique=True))
            removed = [
                i for i in draw(st.lists(st.sampled_from(pool), unique=True)) if i not in added
            ]
            relationships[name] = {"add": added, "remove": removed}
    payload["relationships"] = relationships
    return payload


@st.composite
def histories(draw: Any) -> list[dict[str, Any]]:
    items = draw(st.lists(notifications(), min_size=1, max_size=14))
    seconds = draw(
        st.lists(st.integers(0, 10_000), min_size=len(items), max_size=len(items), unique=True)
    )
    for index, (item, second) in enumerate(zip(items, seconds, strict=True)):
        item["id"] = f"n{index}"
        item["occurred_at"] = (
            f"2026-11-25T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
        )
        item["sequence"] = 0
    return items


def final_state(world: World) -> dict[str, Any]:
    return {
        "entities": {
            key: (entity.properties, entity.deleted, entity.exists_clock is not None)
            for key, entity in sorted(world.entities.items())
            if entity.known
        },
        "edges": sorted(key for key, edge in world.edges.items() if edge.present),
    }


class Store:
    """The entity and edge rows between transactions, as the recorder reads and writes them."""

    def __init__(self) -> None:
        self.rows: dict[EntityKey, dict[str, Any]] = {}
        self.edges: dict[EdgeKey, EdgeState] = {}

    def _state(self, key: EntityKey) -> Any:
        row = self.rows[key]
        return entity_state(
            SimpleNamespace(entity_type=key[0], entity_id=key[1], **row)  # type: ignore[arg-type]
        )

    def load(self, payload: dict[str, Any]) -> tuple[World, EntityKey]:
        """What ``recorder.load_world`` loads for one notification: the records it names, the
        edges of its subject, then the far ends of those edges and license parents."""
        subject = (payload["entity"]["type"], payload["entity"]["id"])
        edges = [
            EdgeState(edge.kind, edge.a_id, edge.b_id, edge.present, edge.clock)
            for edge in self.edges.values()
            if subject in far_ends([edge])
        ]
        world = World([self._state(k) for k in referenced_keys(payload) if k in self.rows], edges)
        for _ in range(2):
            wanted = far_ends(edges) | {
                ("app", entity.parent_id)
                for entity in world.entities.values()
                if entity.type in PARENTED_TYPES and entity.parent_id
            }
            for key in wanted - set(world.entities):
                if key in self.rows:
                    world.entities[key] = self._state(key)
        return world, subject

    def save(self, world: World, subject: EntityKey) -> None:
        """Keep what the recorder writes: dirty subjects whole, other records' ``updated_at``."""
        for entity in world.entities.values():
            if not entity.dirty:
                continue
            updated = None if entity.updated_us is None else from_micros(entity.updated_us)
            if entity.key == subject:
                row = entity_row("org", entity, updated)
                stored = json.loads(json.dumps({k: v for k, v in row.items() if k != "updated_at"}))
                self.rows[entity.key] = {
                    **{k: v for k, v in stored.items() if not k.startswith("k_")},
                    "updated_at": updated,
                }
            elif updated is not None and entity.key in self.rows:
                current = self.rows[entity.key]["updated_at"]
                if current is None or current < updated:
                    self.rows[entity.key]["updated_at"] = updated
        for edge in world.edges.values():
            if edge.dirty:
                self.edges[edge.key] = EdgeState(
                    edge.kind, edge.a_id, edge.b_id, edge.present, edge.clock
                )

    def final_state(self) -> dict[str, Any]:
        states = [self._state(key) for key in self.rows]
        return final_state(World(states, self.edges.values()))


def replay(payloads: list[dict[str, Any]], store: Store | None = None) -> tuple[Store, int]:
    """Apply each notification in its own load-diff-save round, as separate requests would."""
    store = store or Store()
    emitted = 0
    for payload in payloads:
        world, subject = store.load(payload)
        emitted += len(derive(world, payload, SENDER))
        store.save(world, subject)
    return store, emitted


def in_memory(payloads: list[dict[str, Any]]) -> World:
    """All notifications on one World, as inside one batch."""
    world = World()
    for payload in payloads:
        derive(world, payload, SENDER)
    return world


class TestConvergence:
    @settings(deadline=None)
    @given(histories(), st.randoms(use_true_random=False))
    def test_every_delivery_order_reaches_the_in_order_state(self, history, rng):
        in_order = sorted(history, key=lambda p: p["occurred_at"])
        expected, _ = replay(in_order)
        shuffled = list(history)
        rng.shuffle(shuffled)
        reached, _ = replay(shuffled)
        assert reached.final_state() == expected.final_state()

    @settings(deadline=None)
    @given(histories(), st.randoms(use_true_random=False))
    def test_one_batch_reaches_the_state_of_separate_requests(self, history, rng):
        shuffled = list(history)
        rng.shuffle(shuffled)
        separate, _ = replay(shuffled)
        assert final_state(in_memory(shuffled)) == separate.final_state()

    # Re-delivery does not depend on clocks surviving a reload; a few hundred suffice.
    @settings(max_examples=300, deadline=None)
    @given(histories(), st.randoms(use_true_random=False))
    def test_redelivering_everything_emits_nothing(self, history, rng):
        store, _ = replay(history)
        again = list(history)
        rng.shuffle(again)
        _, emitted = replay(again, store)
        assert emitted == 0


class TestClocksSurviveBetweenRequests:
    """Each clock change is stored even when it changes no value (found by the property)."""

    def test_a_stale_empty_snapshot_still_guards_older_patches(self):
        def at(second: int, kind: str, **fields: Any) -> dict[str, Any]:
            return {
                "id": f"n{second}",
                "kind": kind,
                "entity": {"type": "person", "id": "p1"},
                "occurred_at": f"2026-11-25T10:00:{second:02d}Z",
                "sequence": 0,
                **fields,
            }

        newest_first = [
            at(5, "patch", properties={"a": 1}),
            at(3, "snapshot", properties={}),
            at(2, "patch", properties={"b": 7}),
        ]
        reached, _ = replay(newest_first)
        expected, _ = replay(list(reversed(newest_first)))
        assert reached.final_state() == expected.final_state()
        assert reached.rows[("person", "p1")]["properties"] == {"a": 1}
