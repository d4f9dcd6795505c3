"""Restore answers what it did: 201 with its event, 200 when already current, else an error.

A restore is a patch at the request's clock, so a change dated later than that clock wins
over it; and a record deleted between the view's checks and the write stays deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from storage.db import Database
from storage.models import Event, Notification
from tests.factories import Tenant, make_tenant, notification, post_signed
from worker import processing
from worker.restore import RecordDeleted, restore_property

ADMIN = {"type": "user", "id": "p-admin", "name": "Super Admin"}


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def deliver(client: Any, tenant: Tenant, publisher: Any, database: Database, *steps: Any) -> None:
    for made in steps:
        if made["kind"] == "delete":
            made.pop("properties", None)
        response = post_signed(client, tenant, made)
        assert response.status_code == 202, response.json
    for message in publisher.messages:
        processing.process_notifications(database, message, max_attempts=1)
    publisher.messages.clear()


def counts(database: Database) -> tuple[int, int]:
    """(notifications, events): what a refused restore must leave as it was."""
    with database.unit_of_work() as session:
        return (
            int(session.scalar(select(func.count()).select_from(Notification)) or 0),
            int(session.scalar(select(func.count()).select_from(Event)) or 0),
        )


def title_update(client: Any, tenant: Tenant, new_value: str) -> dict[str, Any]:
    response = client.get(
        "/v1/events",
        query_string={"event_type": "person.property_updated", "limit": 100},
        headers=auth(tenant),
    )
    return next(e for e in response.json["events"] if e["new_value"] == new_value)


def restore(client: Any, tenant: Tenant, record_id: str, event_id: str) -> Any:
    return client.post(
        f"/v1/entities/person/{record_id}/restore",
        json={"event_id": event_id, "actor": ADMIN},
        headers=auth(tenant),
    )


@pytest.fixture
def tenant(client, database, settings, publisher) -> Tenant:
    """p1 titled Engineer, then Intern: restoring that update puts Engineer back."""
    tenant = make_tenant(database, settings)
    deliver(
        client,
        tenant,
        publisher,
        database,
        notification("person", "p1", properties={"name": "Ada", "title": "Engineer"}),
        notification(
            "person",
            "p1",
            kind="patch",
            occurred_at="2026-11-25T11:00:00Z",
            properties={"title": "Intern"},
        ),
    )
    return tenant


class TestARestoreThatLosesToANewerChangeIsRefused:
    def test_a_change_dated_after_now_makes_the_restore_409_and_records_nothing(
        self, client, database, publisher, tenant
    ):
        update = title_update(client, tenant, "Intern")
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification(
                "person",
                "p1",
                kind="patch",
                occurred_at="2999-01-01T00:00:00Z",
                properties={"title": "Future"},
            ),
        )
        before = counts(database)
        response = restore(client, tenant, "p1", update["id"])
        assert response.status_code == 409, response.json
        assert response.json["error"]["code"] == "restore_superseded"
        assert counts(database) == before
        state = client.get("/v1/entities/person/p1", headers=auth(tenant)).json
        assert state["properties"]["title"] == "Future"

    def test_a_newer_change_to_the_same_value_answers_200_already_current(
        self, client, database, publisher, tenant
    ):
        update = title_update(client, tenant, "Intern")
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification(
                "person",
                "p1",
                kind="patch",
                occurred_at="2999-01-01T00:00:00Z",
                properties={"title": "Engineer"},
            ),
        )
        response = restore(client, tenant, "p1", update["id"])
        assert (response.status_code, response.json) == (200, {"event": None})


class TestARestoreNeverBringsADeletedRecordBack:
    def test_a_deleted_record_answers_422_record_deleted_and_records_nothing(
        self, client, database, publisher, tenant
    ):
        update = title_update(client, tenant, "Intern")
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification("person", "p1", kind="delete", occurred_at="2026-11-25T12:00:00Z"),
        )
        before = counts(database)
        response = restore(client, tenant, "p1", update["id"])
        assert response.status_code == 422, response.json
        assert response.json["error"]["code"] == "record_deleted"
        assert counts(database) == before

    def test_a_delete_committed_after_the_views_checks_is_seen_by_the_write(
        self, client, database, publisher, tenant
    ):
        """The view found p1 alive; the delete commits before the restore's transaction."""
        update = title_update(client, tenant, "Intern")
        deliver(
            client,
            tenant,
            publisher,
            database,
            notification("person", "p1", kind="delete", occurred_at="2026-11-25T12:00:00Z"),
        )
        before = counts(database)
        with pytest.raises(RecordDeleted):
            restore_property(
                database,
                org_id=tenant.org_id,
                record=("person", "p1"),
                parent_id=None,
                prop="title",
                value="Engineer",
                restored_from=update["id"],
                actor=ADMIN,
                ip_address=None,
                now=datetime.now(UTC),
            )
        assert counts(database) == before
        state = client.get("/v1/entities/person/p1", headers=auth(tenant)).json
        assert state["deleted"] is True
