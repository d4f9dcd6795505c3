"""Property-based: whatever the delivery order, the final state is the in-order state."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.catalog import RELATIONSHIPS
from tests.unit.test_diff_catalog import SENDER
from worker.derive import derive
from worker.diff import World

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


def replay(payloads: list[dict[str, Any]], world: World | None = None) -> tuple[World, int]:
    world = world or World()
    emitted = sum(len(derive(world, payload, SENDER)) for payload in payloads)
    return world, emitted


class TestConvergence:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(histories(), st.randoms(use_true_random=False))
    def test_every_delivery_order_reaches_the_in_order_state(self, history, rng):
        in_order = sorted(history, key=lambda p: p["occurred_at"])
        expected, _ = replay(in_order)
        shuffled = list(history)
        rng.shuffle(shuffled)
        reached, _ = replay(shuffled)
        assert final_state(reached) == final_state(expected)

    @settings(max_examples=200, deadline=None)
    @given(histories(), st.randoms(use_true_random=False))
    def test_redelivering_everything_emits_nothing(self, history, rng):
        world, _ = replay(history)
        again = list(history)
        rng.shuffle(again)
        _, emitted = replay(again, world)
        assert emitted == 0
