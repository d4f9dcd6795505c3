"""The recorder against real SQLite and PostgreSQL: events, state, edges, idempotency."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from storage.models import Edge, Entity, Event, EventSubject, Notification
from tests.factories import make_tenant, notification, post_signed
from worker import processing


@pytest.fixture
def tenant(database, settings):
    return make_tenant(database, settings)


def deliver(client, tenant, publisher, database, *documents) -> None:
    """Post each document as its own webhook request, then process every message."""
    for document in documents:
        assert post_signed(client, tenant, document).status_code == 202, document
    for message in publisher.messages:
        processing.process_notifications(database, message, max_attempts=1)
    publisher.messages.clear()


def events(database) -> list[Event]:
    with database.unit_of_work() as session:
        found = list(session.scalars(select(Event).order_by(Event.id)))
        session.expunge_all()
        return found


def entity(database, entity_type: str, entity_id: str) -> Entity:
    with database.unit_of_work() as session:
        row = session.get(Entity, (tenant_org(session), entity_type, entity_id))
        session.expunge_all()
        return row


def tenant_org(session) -> str:
    return session.scalar(select(Entity.org_id).limit(1))


class TestRecording:
    def test_a_property_update_is_recorded_with_everything_an_event_holds(
        self, client, tenant, publisher, database
    ):
        actor = {"type": "user", "id": "p-9", "name": "Super Admin", "email": "admin@example.com"}
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification("person", "p-1", properties={"name": "Ada", "title": "Engineer"}),
            notification(
                "person",
                "p-1",
                kind="patch",
                occurred_at="2026-11-25T11:00:00.250Z",
                properties={"title": "Staff Engineer"},
                actor=actor,
                ip_address="203.0.113.7",
                origin="manual",
                id="change-2",
            ),
        )
        created, updated = events(database)
        assert created.type == "person.created"
        assert created.new_value == {"name": "Ada", "title": "Engineer"}
        assert created.actor_type == "integration"
        assert created.actor_id == tenant.source_id
        assert (updated.type, updated.property, updated.old_value, updated.new_value) == (
            "person.property_updated",
            "title",
            "Engineer",
            "Staff Engineer",
        )
        assert (updated.entity_type, updated.entity_id, updated.entity_name) == (
            "person",
            "p-1",
            "Ada",
        )
        assert (updated.actor_id, updated.actor_name, updated.actor_email) == (
            "p-9",
            "Super Admin",
            "admin@example.com",
        )
        assert updated.ip_address == "203.0.113.7"
        assert updated.origin == "manual"
        assert updated.notification_id == "change-2"
        assert updated.occurred_at.isoformat() == "2026-11-25T11:00:00.250000+00:00"
        assert updated.id > created.id

        person = entity(database, "person", "p-1")
        assert person.properties == {"name": "Ada", "title": "Staff Engineer"}
        assert person.updated_at.isoformat() == "2026-11-25T11:00:00.250000+00:00"
        with database.unit_of_work() as session:
            statuses = set(session.scalars(select(Notification.status)))
        assert statuses == {"processed"}

    def test_a_batch_is_applied_in_clock_order_whatever_its_order_in_the_body(
        self, client, tenant, publisher, database
    ):
        later = notification(
            "person",
            "p-1",
            kind="patch",
            occurred_at="2026-11-25T12:00:00Z",
            properties={"title": "CTO"},
        )
        first = notification("person", "p-1", properties={"name": "Ada", "title": "Engineer"})
        deliver(client, tenant, publisher, database, {"notifications": [later, first]})
        assert [(e.type, e.new_value) for e in events(database)] == [
            ("person.created", {"name": "Ada", "title": "Engineer"}),
            ("person.property_updated", "CTO"),
        ]

    def test_edges_are_shared_and_every_concerned_record_indexes_the_event(
        self, client, tenant, publisher, database
    ):
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification("person", "p-1", relationships={"apps": ["zoom"]}),
            notification(
                "app", "zoom", properties={"name": "Zoom"}, relationships={"persons": ["p-1"]}
            ),
            notification(
                "license",
                "l-1",
                parent={"type": "app", "id": "zoom"},
                properties={"name": "Pro"},
                relationships={"assignees": ["p-1"]},
            ),
        )
        types = [e.type for e in events(database)]
        assert types == [
            "person.created",
            "person.app_relationship_created",
            "app.created",
            "app.license_created",
            "app.license_assigned",
        ]
        with database.unit_of_work() as session:
            edges = session.execute(select(Edge.kind, Edge.a_id, Edge.b_id, Edge.present)).all()
            assigned = session.scalar(select(Event).where(Event.type == "app.license_assigned"))
            concerned = session.execute(
                select(EventSubject.entity_type, EventSubject.entity_id).where(
                    EventSubject.event_id == assigned.id
                )
            ).all()
        assert sorted(edges) == [
            ("app_person", "zoom", "p-1", True),
            ("license_person", "l-1", "p-1", True),
        ]
        assert sorted(concerned) == [("app", "zoom"), ("license", "l-1"), ("person", "p-1")]
        assert assigned.entity_name == "Zoom"
        assert assigned.targets == [
            {"type": "license", "id": "l-1", "name": "Pro"},
            {"type": "person", "id": "p-1", "name": "Ada Lovelace"},
        ]

    def test_deleting_a_person_reaches_license_parents_through_the_database(
        self, client, tenant, publisher, database
    ):
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification("app", "zoom", properties={"name": "Zoom"}),
            notification(
                "license",
                "l-1",
                parent={"type": "app", "id": "zoom"},
                properties={"name": "Pro"},
                relationships={"assignees": ["p-1"]},
            ),
            notification(
                "team", "t-1", properties={"name": "Core"}, relationships={"persons": ["p-1"]}
            ),
            notification("person", "p-1"),
        )
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification("person", "p-1", kind="delete", occurred_at="2026-11-25T11:00:00Z"),
        )
        tail = [(e.type, e.entity_id, e.entity_name) for e in events(database)][-3:]
        assert tail == [
            ("team.person_relationship_removed", "t-1", "Core"),
            ("app.license_revoked", "zoom", "Zoom"),
            ("person.deleted", "p-1", "Ada Lovelace"),
        ]
        assert entity(database, "person", "p-1").deleted
        # The far ends were not locked, yet their updated_at moved with the closed edge.
        assert entity(database, "team", "t-1").updated_at.isoformat().startswith("2026-11-25T11:00")

    def test_processing_the_same_notifications_again_records_nothing_new(
        self, client, tenant, publisher, database
    ):
        deliver(
            client,
            tenant,
            publisher,
            database,
            {
                "notifications": [
                    notification("person", "p-1", relationships={"apps": ["a"]}),
                    notification("app", "a"),
                ]
            },
        )
        before = len(events(database))
        with database.unit_of_work(write=True) as session:
            # As if the status write had been lost: the clocks alone must prevent doubles.
            session.execute(update(Notification).values(status="queued"))
            pks = list(session.scalars(select(Notification.pk)))
            session.commit()
        processing.process_notifications(database, pks, max_attempts=1)
        assert len(events(database)) == before

    def test_event_ids_of_a_notification_follow_derivation_order(
        self, client, tenant, publisher, database
    ):
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification("person", "p-1", relationships={"apps": ["a", "b", "c"]}),
        )
        with database.unit_of_work() as session:
            rows = session.execute(select(Event.id, Event.position).order_by(Event.position)).all()
            distinct = session.scalar(select(func.count(func.distinct(Event.id))))
        assert [row.id for row in rows] == sorted(row.id for row in rows)
        assert distinct == 4
