"""The ordering and derivation rules beyond one code each: pure, nothing running."""

from __future__ import annotations

from tests.unit.test_diff_catalog import ADA, SENDER, ZOOM, action, brief, delete, patch, snap
from worker.derive import derive
from worker.diff import World


def replay(world: World, *payloads):
    return [brief(event) for payload in payloads for event in derive(world, payload, SENDER)]


class TestCreation:
    def test_a_created_event_is_followed_by_its_initial_edges(self):
        events = replay(
            World(), snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1", "a2"]})
        )
        assert [e[0] for e in events] == [
            "person.created",
            "person.app_relationship_created",
            "person.app_relationship_created",
        ]
        assert [e[2] for e in events[1:]] == [["app:a1"], ["app:a2"]]

    def test_initial_license_assignees_are_assigned(self):
        events = replay(
            World(),
            snap("license:l1", 1, properties={"name": "Pro"}, relationships={"assignees": ["p1"]}),
        )
        assert [e[0] for e in events] == ["app.license_created", "app.license_assigned"]

    def test_a_first_patch_creates_with_its_properties(self):
        events = replay(World(), patch("person:p1", 1, properties={"title": "CTO", "x": None}))
        assert events == [("person.created", "person:p1", [], None, None, {"title": "CTO"})]

    def test_a_baseline_stores_state_and_emits_nothing(self):
        world = World()
        assert replay(world, note_baseline()) == []
        person = world.entities[("person", "p1")]
        assert person.properties == ADA
        assert world.edges[("app_person", "a1", "p1")].present
        assert person.baseline is not None

    def test_a_baseline_of_a_known_record_is_a_snapshot(self):
        world = World()
        replay(world, note_baseline())
        later = snap("person:p1", 2, properties={"name": "Ada Lovelace"})
        later["kind"] = "baseline"
        assert replay(world, later) == [
            ("person.property_updated", "person:p1", [], "title", "Engineer", None)
        ]


def note_baseline():
    payload = snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1"]})
    payload["kind"] = "baseline"
    return payload


class TestSharedEdges:
    def test_an_edge_reported_from_the_other_side_emits_once(self):
        world = World()
        first = replay(world, patch("person:p1", 1, relationships={"apps": {"add": ["a1"]}}))
        assert [e[0] for e in first] == ["person.created", "person.app_relationship_created"]
        other_side = replay(
            world, snap("app:a1", 2, properties=ZOOM, relationships={"persons": ["p1"]})
        )
        assert other_side == [("app.created", "app:a1", [], None, None, ZOOM)]

    def test_removing_it_from_the_other_side_emits_from_that_side(self):
        world = World()
        replay(world, snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1"]}))
        events = replay(world, patch("app:a1", 2, relationships={"persons": {"remove": ["p1"]}}))
        assert events[-1] == (
            "app.person_relationship_removed",
            "app:a1",
            ["person:p1"],
            None,
            None,
            None,
        )

    def test_a_snapshot_list_refuses_an_older_add_of_an_unlisted_id(self):
        world = World()
        replay(world, snap("app:a1", 5, properties=ZOOM, relationships={"persons": []}))
        assert replay(world, patch("person:p1", 3, relationships={"apps": {"add": ["a1"]}})) == [
            ("person.created", "person:p1", [], None, None, {})
        ]
        assert ("app_person", "a1", "p1") not in world.edges or not world.edges[
            ("app_person", "a1", "p1")
        ].present

    def test_a_relationship_left_out_of_a_snapshot_is_unchanged(self):
        world = World()
        replay(world, snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1"]}))
        assert replay(world, snap("person:p1", 2, properties=ADA)) == []
        assert world.edges[("app_person", "a1", "p1")].present


class TestOrdering:
    def test_a_stale_patch_never_rolls_back_a_property(self):
        world = World()
        replay(
            world,
            snap("person:p1", 1, properties=ADA),
            patch("person:p1", 5, properties={"title": "CTO"}),
        )
        assert replay(world, patch("person:p1", 3, properties={"title": "Intern"})) == []
        assert world.entities[("person", "p1")].properties["title"] == "CTO"

    def test_a_stale_patch_still_sets_a_key_nobody_touched_since(self):
        world = World()
        replay(
            world,
            snap("person:p1", 1, properties=ADA),
            patch("person:p1", 5, properties={"title": "CTO"}),
        )
        events = replay(world, patch("person:p1", 3, properties={"phone": "555"}))
        assert events == [("person.property_updated", "person:p1", [], "phone", None, "555")]

    def test_a_snapshot_removes_unlisted_keys_and_an_older_patch_cannot_restore_them(self):
        world = World()
        replay(world, snap("person:p1", 1, properties=ADA))
        assert replay(world, snap("person:p1", 4, properties={"name": "Ada Lovelace"})) == [
            ("person.property_updated", "person:p1", [], "title", "Engineer", None)
        ]
        assert replay(world, patch("person:p1", 3, properties={"title": "Engineer"})) == []

    def test_an_equal_clock_is_a_no_op_and_sequence_breaks_ties(self):
        world = World()
        replay(world, snap("person:p1", 1, properties=ADA))
        assert replay(world, patch("person:p1", 1, properties={"title": "CTO"})) == []
        tie_broken = patch("person:p1", 1, properties={"title": "CTO"}, sequence=1)
        assert [e[0] for e in replay(world, tie_broken)] == ["person.property_updated"]

    def test_redelivery_emits_nothing(self):
        world = World()
        payloads = [
            snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1"]}),
            patch("person:p1", 2, properties={"title": "CTO"}),
            delete("person:p1", 3),
        ]
        assert replay(world, *payloads)
        assert replay(world, *payloads) == []

    def test_json_types_are_compared_as_json(self):
        world = World()
        replay(world, snap("app:a1", 1, properties={"name": "Zoom", "seats": 0, "price": 1}))
        events = replay(
            world, snap("app:a1", 2, properties={"name": "Zoom", "seats": False, "price": 1.0})
        )
        assert events == [("app.property_updated", "app:a1", [], "seats", 0, False)]


class TestDeletion:
    def test_an_older_delete_keeps_the_record_but_closes_older_edges(self):
        world = World()
        replay(
            world,
            snap("person:p1", 1, properties=ADA, relationships={"apps": ["a1"]}),
            patch("person:p1", 3, relationships={"devices": {"add": ["d1"]}}),
            patch("person:p1", 5, properties={"title": "CTO"}),
        )
        events = replay(world, delete("person:p1", 2))
        assert events == [
            ("person.app_relationship_removed", "person:p1", ["app:a1"], None, None, None)
        ]
        person = world.entities[("person", "p1")]
        assert not person.deleted
        assert world.edges[("device_person", "d1", "p1")].present

    def test_an_edge_change_older_than_a_delete_of_either_end_is_ignored(self):
        world = World()
        replay(world, snap("app:a1", 1, properties=ZOOM), delete("app:a1", 5))
        assert replay(
            world, snap("person:p1", 3, properties=ADA, relationships={"apps": ["a1"]})
        ) == [("person.created", "person:p1", [], None, None, ADA)]
        newer = replay(world, patch("person:p1", 6, relationships={"apps": {"add": ["a1"]}}))
        assert newer == [
            ("person.app_relationship_created", "person:p1", ["app:a1"], None, None, None)
        ]

    def test_a_newer_patch_brings_a_deleted_record_back(self):
        world = World()
        replay(world, snap("person:p1", 1, properties=ADA), delete("person:p1", 2))
        events = replay(world, patch("person:p1", 3, properties={"title": "CTO"}))
        assert events == [
            (
                "person.created",
                "person:p1",
                [],
                None,
                None,
                {"name": "Ada Lovelace", "title": "CTO"},
            )
        ]
        assert not world.entities[("person", "p1")].deleted

    def test_a_change_older_than_the_deletion_is_applied_silently(self):
        world = World()
        replay(world, snap("person:p1", 1, properties=ADA), delete("person:p1", 5))
        assert replay(world, patch("person:p1", 3, properties={"title": "CTO"})) == []
        person = world.entities[("person", "p1")]
        assert person.deleted
        assert person.properties["title"] == "CTO"

    def test_a_delete_of_a_record_never_seen_emits_nothing_and_older_state_does_not_create_it(self):
        world = World()
        assert replay(world, delete("person:p1", 5)) == []
        assert replay(world, snap("person:p1", 3, properties=ADA)) == []
        assert world.entities[("person", "p1")].deleted
        assert [e[0] for e in replay(world, snap("person:p1", 6, properties=ADA))] == [
            "person.created"
        ]

    def test_deleting_twice_emits_the_deleted_event_once(self):
        world = World()
        replay(world, snap("team:t1", 1, properties={"name": "Core"}), delete("team:t1", 2))
        assert replay(world, delete("team:t1", 3)) == []

    def test_an_apps_licenses_are_not_deleted_with_it(self):
        world = World()
        replay(
            world,
            snap("license:l1", 1, properties={"name": "Pro"}),
            snap("app:a1", 1, properties=ZOOM),
        )
        replay(world, delete("app:a1", 2))
        assert not world.entities[("license", "l1")].deleted

    def test_a_deleted_record_keeps_its_last_properties(self):
        world = World()
        replay(world, snap("person:p1", 1, properties=ADA), delete("person:p1", 2))
        assert world.entities[("person", "p1")].properties == ADA


class TestActions:
    def test_an_action_neither_creates_nor_revives(self):
        world = World()
        events = replay(world, action("person:p1", 1, "person.workflow_launched", {}))
        assert [e[0] for e in events] == ["person.workflow_launched"]
        assert not world.entities[("person", "p1")].known
        replay(world, snap("person:p2", 1, properties=ADA), delete("person:p2", 2))
        replay(world, action("person:p2", 3, "person.workflow_launched", {}))
        assert world.entities[("person", "p2")].deleted


class TestNames:
    def test_names_are_those_known_right_after_the_notification(self):
        world = World()
        derive(world, snap("app:a1", 1, properties=ZOOM), SENDER)
        [updated, added] = derive(
            world,
            patch(
                "person:p1",
                2,
                properties={"name": "Ada"},
                relationships={"apps": {"add": ["a1", "a9"]}},
            ),
            SENDER,
        )[0:2]
        assert updated["entity"]["name"] == "Ada"
        assert added["targets"] == [{"type": "app", "id": "a1", "name": "Zoom"}]
        unknown = derive(
            world, patch("person:p1", 3, relationships={"apps": {"add": ["a7"]}}), SENDER
        )
        assert unknown[0]["targets"] == [{"type": "app", "id": "a7", "name": None}]

    def test_license_events_name_their_parent_app(self):
        world = World()
        derive(world, snap("app:a1", 1, properties=ZOOM), SENDER)
        [event] = derive(world, snap("license:l1", 2, properties={"name": "Pro"}), SENDER)
        assert event["entity"] == {"type": "app", "id": "a1", "name": "Zoom"}
        assert event["targets"] == [{"type": "license", "id": "l1", "name": "Pro"}]
