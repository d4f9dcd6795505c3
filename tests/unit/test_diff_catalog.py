"""Every event code of the catalog, seed and extensions, and every origin variant.

Each row: notifications that set the scene, the notification under test, and the exact
events it must derive (type, entity, targets, property, old value, new value). Every
event also carries the notification's actor, IP address and origin, checked for all rows.
"""

from __future__ import annotations

from typing import Any

import pytest

from storage.catalog import EVENT_TYPES
from worker.derive import Sender, derive
from worker.diff import World

SENDER = Sender("src_okta", "Okta sync")
ADMIN = {"type": "user", "id": "p-admin", "name": "Super Admin", "email": "admin@example.com"}


def note(kind: str, ref: str, second: int, **fields: Any) -> dict[str, Any]:
    entity_type, entity_id = ref.split(":")
    payload: dict[str, Any] = {
        "id": f"n-{ref}-{second}",
        "kind": kind,
        "entity": {"type": entity_type, "id": entity_id},
        "occurred_at": f"2026-11-25T10:00:{second:02d}Z",
        "sequence": 0,
        "origin": fields.pop("origin", "manual"),
        "actor": fields.pop("actor", ADMIN),
        "ip_address": fields.pop("ip_address", "203.0.113.7"),
    }
    if entity_type in ("license", "subscription"):
        payload["parent"] = {"type": "app", "id": fields.pop("parent", "a1")}
    payload.update(fields)
    return payload


def snap(ref: str, second: int, **fields: Any) -> dict[str, Any]:
    return note("snapshot", ref, second, **fields)


def patch(ref: str, second: int, **fields: Any) -> dict[str, Any]:
    return note("patch", ref, second, **fields)


def delete(ref: str, second: int, **fields: Any) -> dict[str, Any]:
    return note("delete", ref, second, **fields)


def action(ref: str, second: int, code: str, details: dict[str, Any]) -> dict[str, Any]:
    return note("event", ref, second, event={"type": code, "details": details})


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    entity = f"{event['entity']['type']}:{event['entity']['id']}"
    targets = [f"{t['type']}:{t['id']}" for t in event["targets"]]
    return (
        event["type"],
        entity,
        targets,
        event["property"],
        event["old_value"],
        event["new_value"],
    )


ZOOM = {"name": "Zoom"}
ANNUAL = {"plan": "annual"}
ADA = {"name": "Ada Lovelace", "title": "Engineer"}

# (id, scene, notification under test, expected events)
# fmt: off
CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any], list[tuple[Any, ...]]]] = [
    ("app.created", [], snap("app:a1", 1, properties=ZOOM),
     [("app.created", "app:a1", [], None, None, ZOOM)]),
    ("app.property_updated", [snap("app:a1", 1, properties={"name": "Zoom", "tier": "free"})],
     snap("app:a1", 2, properties={"name": "Zoom", "tier": "pro"}),
     [("app.property_updated", "app:a1", [], "tier", "free", "pro")]),
    ("app.file_uploaded", [], action("app:a1", 1, "app.file_uploaded", {"file": "contract.pdf"}),
     [("app.file_uploaded", "app:a1", [], None, None, None)]),
    ("app.org_relationship_created", [snap("app:a1", 1, properties=ZOOM)],
     patch("app:a1", 2, relationships={"org": True}),
     [("app.org_relationship_created", "app:a1", [], None, None, None)]),
    ("app.org_relationship_removed",
     [snap("app:a1", 1, properties=ZOOM, relationships={"org": True})],
     snap("app:a1", 2, properties=ZOOM, relationships={"org": False}),
     [("app.org_relationship_removed", "app:a1", [], None, None, None)]),
    ("app.person_relationship_created", [snap("app:a1", 1, properties=ZOOM)],
     patch("app:a1", 2, relationships={"persons": {"add": ["p1"]}}),
     [("app.person_relationship_created", "app:a1", ["person:p1"], None, None, None)]),
    ("app.person_relationship_removed",
     [snap("app:a1", 1, properties=ZOOM, relationships={"persons": ["p1", "p2"]})],
     snap("app:a1", 2, properties=ZOOM, relationships={"persons": ["p2"]}),
     [("app.person_relationship_removed", "app:a1", ["person:p1"], None, None, None)]),
    ("app.team_relationship_created", [snap("app:a1", 1, properties=ZOOM)],
     patch("app:a1", 2, relationships={"teams": {"add": ["t1"]}}),
     [("app.team_relationship_created", "app:a1", ["team:t1"], None, None, None)]),
    ("app.team_relationship_removed",
     [snap("app:a1", 1, properties=ZOOM, relationships={"teams": ["t1"]})],
     patch("app:a1", 2, relationships={"teams": {"remove": ["t1"]}}),
     [("app.team_relationship_removed", "app:a1", ["team:t1"], None, None, None)]),
    ("app.license_created", [snap("app:a1", 1, properties=ZOOM)],
     snap("license:l1", 2, properties={"name": "Pro seat"}),
     [("app.license_created", "app:a1", ["license:l1"], None, None, {"name": "Pro seat"})]),
    ("app.license_detected (sync)", [],
     snap("license:l1", 2, origin="sync", properties={"name": "Pro seat"}),
     [("app.license_detected", "app:a1", ["license:l1"], None, None, {"name": "Pro seat"})]),
    ("app.license_detected (discovery)", [],
     snap("license:l1", 2, origin="discovery", properties={"name": "Pro seat"}),
     [("app.license_detected", "app:a1", ["license:l1"], None, None, {"name": "Pro seat"})]),
    ("app.license_updated", [snap("license:l1", 1, properties={"name": "Pro", "seats": 10})],
     patch("license:l1", 2, properties={"seats": 12}),
     [("app.license_updated", "app:a1", ["license:l1"], "seats", 10, 12)]),
    ("app.license_deleted", [snap("license:l1", 1, properties={"name": "Pro"})],
     delete("license:l1", 2),
     [("app.license_deleted", "app:a1", ["license:l1"], None, None, None)]),
    ("app.license_assigned", [snap("license:l1", 1, properties={"name": "Pro"})],
     patch("license:l1", 2, relationships={"assignees": {"add": ["p1"]}}),
     [("app.license_assigned", "app:a1", ["license:l1", "person:p1"], None, None, None)]),
    ("app.license_revoked",
     [snap("license:l1", 1, properties={"name": "Pro"}, relationships={"assignees": ["p1"]})],
     snap("license:l1", 2, properties={"name": "Pro"}, relationships={"assignees": []}),
     [("app.license_revoked", "app:a1", ["license:l1", "person:p1"], None, None, None)]),
    ("license delete revokes assignees first",
     [snap("license:l1", 1, properties={"name": "Pro"}, relationships={"assignees": ["p1", "p2"]})],
     delete("license:l1", 2),
     [("app.license_revoked", "app:a1", ["license:l1", "person:p1"], None, None, None),
      ("app.license_revoked", "app:a1", ["license:l1", "person:p2"], None, None, None),
      ("app.license_deleted", "app:a1", ["license:l1"], None, None, None)]),
    ("app.subscription_created", [],
     snap("subscription:s1", 1, properties={"plan": "annual"}),
     [("app.subscription_created", "app:a1", ["subscription:s1"], None, None, ANNUAL)]),
    ("app.subscription_detected (sync)", [],
     snap("subscription:s1", 1, origin="sync", properties={"plan": "annual"}),
     [("app.subscription_detected", "app:a1", ["subscription:s1"], None, None, ANNUAL)]),
    ("app.subscription_detected (discovery)", [],
     snap("subscription:s1", 1, origin="discovery", properties={"plan": "annual"}),
     [("app.subscription_detected", "app:a1", ["subscription:s1"], None, None, ANNUAL)]),
    ("app.subscription_updated", [snap("subscription:s1", 1, properties={"plan": "annual"})],
     snap("subscription:s1", 2, properties={"plan": "monthly"}),
     [("app.subscription_updated", "app:a1", ["subscription:s1"], "plan", "annual", "monthly")]),
    ("app.subscription_archived", [snap("subscription:s1", 1, properties={"plan": "annual"})],
     delete("subscription:s1", 2),
     [("app.subscription_archived", "app:a1", ["subscription:s1"], None, None, None)]),
    ("app.deleted closes every edge first",
     [snap("app:a1", 1, properties=ZOOM,
           relationships={"persons": ["p1"], "teams": ["t1"], "org": True}),
      snap("license:l1", 1, properties={"name": "Pro"})],
     delete("app:a1", 2),
     [("app.person_relationship_removed", "app:a1", ["person:p1"], None, None, None),
      ("app.team_relationship_removed", "app:a1", ["team:t1"], None, None, None),
      ("app.org_relationship_removed", "app:a1", [], None, None, None),
      ("app.deleted", "app:a1", [], None, None, None)]),
    ("person.created", [], snap("person:p1", 1, properties=ADA),
     [("person.created", "person:p1", [], None, None, ADA)]),
    ("person.created_google", [], snap("person:p1", 1, origin="google", properties=ADA),
     [("person.created_google", "person:p1", [], None, None, ADA)]),
    ("person.created_csv", [], snap("person:p1", 1, origin="csv", properties=ADA),
     [("person.created_csv", "person:p1", [], None, None, ADA)]),
    ("person.workflow_launched", [],
     action("person:p1", 1, "person.workflow_launched", {"workflow": "Offboarding"}),
     [("person.workflow_launched", "person:p1", [], None, None, None)]),
    ("person.property_updated", [snap("person:p1", 1, properties=ADA)],
     patch("person:p1", 2, properties={"title": "Staff Engineer"}),
     [("person.property_updated", "person:p1", [], "title", "Engineer", "Staff Engineer")]),
    ("person.property_updated (removed)", [snap("person:p1", 1, properties=ADA)],
     patch("person:p1", 2, properties={"title": None}),
     [("person.property_updated", "person:p1", [], "title", "Engineer", None)]),
    ("person.app_relationship_created", [snap("person:p1", 1, properties=ADA)],
     patch("person:p1", 2, relationships={"apps": {"add": ["a1"]}}),
     [("person.app_relationship_created", "person:p1", ["app:a1"], None, None, None)]),
    ("person.app_relationship_removed",
     [snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1"]})],
     patch("person:p1", 2, relationships={"apps": {"remove": ["a1"]}}),
     [("person.app_relationship_removed", "person:p1", ["app:a1"], None, None, None)]),
    ("person.device_relationship_created", [snap("person:p1", 1, properties=ADA)],
     patch("person:p1", 2, relationships={"devices": {"add": ["d1"]}}),
     [("person.device_relationship_created", "person:p1", ["device:d1"], None, None, None)]),
    ("person.device_relationship_removed",
     [snap("person:p1", 1, properties=ADA, relationships={"devices": ["d1"]})],
     snap("person:p1", 2, properties=ADA, relationships={"devices": []}),
     [("person.device_relationship_removed", "person:p1", ["device:d1"], None, None, None)]),
    ("person.deleted closes every edge, from the other side where needed",
     [snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1"], "devices": ["d1"]}),
      snap("team:t1", 1, properties={"name": "Core"}, relationships={"persons": ["p1"]}),
      snap("license:l1", 1, properties={"name": "Pro"}, relationships={"assignees": ["p1"]})],
     delete("person:p1", 2),
     [("person.app_relationship_removed", "person:p1", ["app:a1"], None, None, None),
      ("team.person_relationship_removed", "team:t1", ["person:p1"], None, None, None),
      ("person.device_relationship_removed", "person:p1", ["device:d1"], None, None, None),
      ("app.license_revoked", "app:a1", ["license:l1", "person:p1"], None, None, None),
      ("person.deleted", "person:p1", [], None, None, None)]),
    ("team.created", [], snap("team:t1", 1, properties={"name": "Core"}),
     [("team.created", "team:t1", [], None, None, {"name": "Core"})]),
    ("team.created_sync", [], snap("team:t1", 1, origin="sync", properties={"name": "Core"}),
     [("team.created_sync", "team:t1", [], None, None, {"name": "Core"})]),
    ("team.created_csv", [], snap("team:t1", 1, origin="csv", properties={"name": "Core"}),
     [("team.created_csv", "team:t1", [], None, None, {"name": "Core"})]),
    ("team.property_updated", [snap("team:t1", 1, properties={"name": "Core"})],
     snap("team:t1", 2, properties={"name": "Platform"}),
     [("team.property_updated", "team:t1", [], "name", "Core", "Platform")]),
    ("team.app_relationship_created", [snap("team:t1", 1, properties={"name": "Core"})],
     patch("team:t1", 2, relationships={"apps": {"add": ["a1"]}}),
     [("team.app_relationship_created", "team:t1", ["app:a1"], None, None, None)]),
    ("team.app_relationship_removed",
     [snap("team:t1", 1, properties={"name": "Core"}, relationships={"apps": ["a1"]})],
     patch("team:t1", 2, relationships={"apps": {"remove": ["a1"]}}),
     [("team.app_relationship_removed", "team:t1", ["app:a1"], None, None, None)]),
    ("team.person_relationship_created", [snap("team:t1", 1, properties={"name": "Core"})],
     patch("team:t1", 2, relationships={"persons": {"add": ["p1"]}}),
     [("team.person_relationship_created", "team:t1", ["person:p1"], None, None, None)]),
    ("team.person_relationship_created_csv", [snap("team:t1", 1, properties={"name": "Core"})],
     patch("team:t1", 2, origin="csv", relationships={"persons": {"add": ["p1"]}}),
     [("team.person_relationship_created_csv", "team:t1", ["person:p1"], None, None, None)]),
    ("team.person_relationship_removed",
     [snap("team:t1", 1, properties={"name": "Core"}, relationships={"persons": ["p1"]})],
     snap("team:t1", 2, properties={"name": "Core"}, relationships={"persons": []}),
     [("team.person_relationship_removed", "team:t1", ["person:p1"], None, None, None)]),
    ("team.deleted",
     [snap("team:t1", 1, properties={"name": "Core"},
           relationships={"persons": ["p1"], "apps": ["a1"]})],
     delete("team:t1", 2),
     [("team.app_relationship_removed", "team:t1", ["app:a1"], None, None, None),
      ("team.person_relationship_removed", "team:t1", ["person:p1"], None, None, None),
      ("team.deleted", "team:t1", [], None, None, None)]),
    ("device.created", [], snap("device:d1", 1, properties={"name": "MacBook"}),
     [("device.created", "device:d1", [], None, None, {"name": "MacBook"})]),
    ("device.created_csv", [], snap("device:d1", 1, origin="csv", properties={"name": "MacBook"}),
     [("device.created_csv", "device:d1", [], None, None, {"name": "MacBook"})]),
    ("device.property_updated", [snap("device:d1", 1, properties={"name": "MacBook"})],
     patch("device:d1", 2, properties={"serial": "C02X"}),
     [("device.property_updated", "device:d1", [], "serial", None, "C02X")]),
    ("device.status_updated",
     [snap("device:d1", 1, properties={"name": "MacBook", "status": "active"})],
     patch("device:d1", 2, properties={"status": "lost"}),
     [("device.status_updated", "device:d1", [], "status", "active", "lost")]),
    ("device.archived keeps its edges",
     [snap("device:d1", 1, properties={"name": "MacBook"}, relationships={"persons": ["p1"]})],
     delete("device:d1", 2),
     [("device.archived", "device:d1", [], None, None, None)]),
    ("device.person_relationship_created", [snap("device:d1", 1, properties={"name": "Mac"})],
     patch("device:d1", 2, relationships={"persons": {"add": ["p1"]}}),
     [("device.person_relationship_created", "device:d1", ["person:p1"], None, None, None)]),
    ("device.person_relationship_removed",
     [snap("device:d1", 1, properties={"name": "Mac"}, relationships={"persons": ["p1"]})],
     patch("device:d1", 2, relationships={"persons": {"remove": ["p1"]}}),
     [("device.person_relationship_removed", "device:d1", ["person:p1"], None, None, None)]),
]
# fmt: on


def run(scene: list[dict[str, Any]], under_test: dict[str, Any]) -> list[dict[str, Any]]:
    world = World()
    for payload in scene:
        derive(world, payload, SENDER)
    return derive(world, under_test, SENDER)


class TestCatalog:
    @pytest.mark.parametrize(
        "scene, under_test, expected", [case[1:] for case in CASES], ids=[c[0] for c in CASES]
    )
    def test_each_code_derives_exactly_its_events(self, scene, under_test, expected):
        events = run(scene, under_test)
        assert [brief(event) for event in events] == expected
        for event in events:
            assert event["actor"] == ADMIN
            assert event["ip_address"] == under_test["ip_address"]
            assert event["origin"] == under_test["origin"]
            assert event["notification_id"] == under_test["id"]
            assert event["source_id"] == SENDER.source_id

    def test_every_code_of_the_catalog_has_a_row(self):
        covered = {row[0] for case in CASES for row in case[3]}
        assert covered == {event_type.code for event_type in EVENT_TYPES}

    def test_the_action_details_are_stored_as_given(self):
        [event] = run([], action("app:a1", 1, "app.file_uploaded", {"file": "a.pdf", "n": [1]}))
        assert event["details"] == {"file": "a.pdf", "n": [1]}
        assert event["label"] == "App File Upload"

    def test_without_an_actor_the_source_is_the_integration_actor(self):
        payload = snap("person:p1", 1, properties=ADA)
        del payload["actor"]
        [event] = run([], payload)
        assert event["actor"] == {
            "type": "integration",
            "id": "src_okta",
            "name": "Okta sync",
            "email": None,
        }
