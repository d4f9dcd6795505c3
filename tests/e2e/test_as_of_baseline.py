"""``as_of`` around baselines: the rebuilt state is the state the record showed at that time.

A baseline emits no event, yet it changes state: its own record's properties and the
relationships it lists, and through those edges the records at their far ends. Each
sequence below is delivered one notification at a time; after each, the live state of
every record it involves is read. Once everything is processed, ``as_of`` at each
notification's instant must answer what the live state was then.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.factories import Tenant, make_tenant, notification, post_signed
from tests.integration.workload import history, population
from worker import processing


def at(hour: int) -> str:
    return f"2026-11-25T{hour:02d}:00:00Z"


def step(entity_type: str, entity_id: str, kind: str, hour: int, **fields: Any) -> dict[str, Any]:
    made = notification(entity_type, entity_id, kind=kind, occurred_at=at(hour), **fields)
    if kind == "delete":
        made.pop("properties", None)
    return made


SEQUENCES: dict[str, list[dict[str, Any]]] = {
    # The case: the baseline removes an edge the app had reported.
    "a baseline removes an edge reported from the far end": [
        step(
            "app", "A", "snapshot", 1, properties={"name": "Zoom"}, relationships={"persons": ["P"]}
        ),
        step("person", "P", "baseline", 2, properties={"name": "Ada"}, relationships={"apps": []}),
        step("person", "P", "patch", 3, properties={"title": "Engineer"}),
        step("app", "A", "patch", 4, properties={"name": "Zoom One"}),
    ],
    "a baseline adds an edge to a known record": [
        step("app", "A", "snapshot", 1, properties={"name": "Zoom"}),
        step(
            "person", "P", "baseline", 2, properties={"name": "Ada"}, relationships={"apps": ["A"]}
        ),
        step("app", "A", "patch", 3, relationships={"persons": {"remove": ["P"]}}),
        step("person", "P", "patch", 4, relationships={"apps": {"add": ["A"]}}),
    ],
    "a baseline keeps the relationships it does not list": [
        step(
            "app", "A", "snapshot", 1, properties={"name": "Zoom"}, relationships={"persons": ["P"]}
        ),
        step(
            "device",
            "D",
            "snapshot",
            2,
            properties={"name": "Mac"},
            relationships={"persons": ["P"]},
        ),
        step("person", "P", "baseline", 3, properties={"name": "Ada"}, relationships={"apps": []}),
        step("device", "D", "patch", 4, relationships={"persons": {"remove": ["P"]}}),
    ],
    "an app's baseline replaces a person's report": [
        step(
            "person",
            "P",
            "snapshot",
            1,
            properties={"name": "Ada"},
            relationships={"apps": ["A", "B"]},
        ),
        step(
            "app",
            "A",
            "baseline",
            2,
            properties={"name": "Zoom"},
            relationships={"persons": [], "org": True},
        ),
        step(
            "app",
            "B",
            "baseline",
            3,
            properties={"name": "Slack"},
            relationships={"persons": ["P", "Q"]},
        ),
        step("person", "Q", "snapshot", 4, properties={"name": "Bo"}, relationships={"apps": []}),
        step(
            "app", "A", "snapshot", 5, properties={"name": "Zoom"}, relationships={"persons": ["P"]}
        ),
    ],
    "properties change after a baseline": [
        step("person", "P", "baseline", 1, properties={"name": "Ada", "title": "Engineer"}),
        step("person", "P", "snapshot", 2, properties={"name": "Ada", "title": "Staff"}),
        step("person", "P", "patch", 3, properties={"title": None, "phone": "555"}),
        step("person", "P", "delete", 4),
    ],
    "a baseline at the same instant as the report it overrides": [
        step("app", "A", "snapshot", 1, properties={"name": "Zoom"}),
        step("app", "A", "patch", 2, sequence=1, relationships={"persons": {"add": ["P"]}}),
        step(
            "person",
            "P",
            "baseline",
            2,
            sequence=2,
            properties={"name": "Ada"},
            relationships={"apps": []},
        ),
        step("app", "A", "patch", 3, sequence=0, relationships={"persons": {"add": ["P"]}}),
    ],
}


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def with_baselines(seed: int) -> list[dict[str, Any]]:
    """A random history in clock order where many snapshots are baselines (first ones count).

    Deletes of records not seen yet are left out: they emit nothing and store no baseline,
    so no log can tell when they happened (the README says so of silent changes).
    """
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    steps = []
    for made in history(rng, 40, population(8)):
        record = (made["entity"]["type"], made["entity"]["id"])
        if made["kind"] == "delete" and record not in seen:
            continue
        seen.add(record)
        made["id"] = f"{seed}-{made['id']}"
        if made["kind"] == "snapshot" and rng.random() < 0.5:
            made["kind"] = "baseline"
        steps.append(made)
    return steps


def involved(steps: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Every record a sequence names: its subjects and the ids its relationships list."""
    found = set()
    for made in steps:
        found.add((made["entity"]["type"], made["entity"]["id"]))
        for name, value in (made.get("relationships") or {}).items():
            other = {"apps": "app", "persons": "person", "devices": "device"}.get(name)
            if other is None:
                continue
            ids = (
                value if isinstance(value, list) else value.get("add", []) + value.get("remove", [])
            )
            found.update((other, other_id) for other_id in ids)
    return found


def read(client: Any, tenant: Tenant, record: tuple[str, str], **query: str) -> Any:
    response = client.get(
        f"/v1/entities/{record[0]}/{record[1]}", query_string=query, headers=auth(tenant)
    )
    assert response.status_code in (200, 404), response.json
    return response.json if response.status_code == 200 else None


class TestAsOfAfterABaselineEqualsTheLiveStateThen:
    @pytest.mark.parametrize("name", list(SEQUENCES))
    def test_as_of_each_instant_equals_the_live_state_read_then(
        self, name, client, database, settings, publisher
    ):
        self.compare(client, database, settings, publisher, SEQUENCES[name])

    @pytest.mark.parametrize("seed", range(4))
    def test_the_same_holds_for_random_histories_with_baselines(
        self, seed, client, database, settings, publisher
    ):
        self.compare(client, database, settings, publisher, with_baselines(seed))

    def compare(self, client, database, settings, publisher, steps) -> None:
        tenant = make_tenant(database, settings)
        records = sorted(involved(steps))
        live: dict[str, dict[tuple[str, str], Any]] = {}
        for made in steps:
            response = post_signed(client, tenant, made)
            assert response.status_code == 202, response.json
            for message in publisher.messages:
                processing.process_notifications(database, message, max_attempts=1)
            publisher.messages.clear()
            # Several notifications at one instant: the state after the last of them.
            live[made["occurred_at"]] = {record: read(client, tenant, record) for record in records}

        for moment, states in live.items():
            for record, expected in states.items():
                assert read(client, tenant, record, as_of=moment) == expected, (moment, record)
