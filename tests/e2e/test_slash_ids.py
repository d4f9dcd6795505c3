"""Ids holding ``/`` (LDAP names, paths) on every path that takes one, encoded or not.

The rule: a path of a record ending in ``/history`` is that record's history (GET), one
ending in ``/restore`` its restore (POST); whatever comes before the suffix is the id. So the
history of the record ``x/history`` is ``…/x/history/history``, and a GET of ``…/x/restore``
is the state of the record ``x/restore``.
"""

from __future__ import annotations

from typing import Any

import pytest

from storage.db import Database
from tests.factories import Tenant, make_tenant, notification, post_signed
from worker import processing

ADMIN = {"type": "user", "id": "ldap/cn=admin,ou=people", "name": "Super Admin"}


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def deliver(client: Any, tenant: Tenant, publisher: Any, database: Database, *steps: Any) -> None:
    response = post_signed(client, tenant, {"notifications": list(steps)})
    assert response.status_code == 202, response.json
    for message in publisher.messages:
        processing.process_notifications(database, message, max_attempts=1)
    publisher.messages.clear()


def titled(record_id: str) -> list[dict[str, Any]]:
    """A person titled Engineer, then Intern by an administrator whose id has slashes."""
    return [
        notification("person", record_id, properties={"name": "Ada", "title": "Engineer"}),
        notification(
            "person",
            record_id,
            kind="patch",
            occurred_at="2026-11-25T11:00:00Z",
            properties={"title": "Intern"},
            actor=ADMIN,
        ),
    ]


def get(client: Any, tenant: Tenant, path: str) -> Any:
    return client.get(path, headers=auth(tenant))


def history_of(client: Any, tenant: Tenant, path: str) -> list[tuple[str, str]]:
    response = get(client, tenant, path)
    assert response.status_code == 200, (path, response.json)
    return [(e["type"], e["entity"]["id"]) for e in response.json["events"]]


@pytest.fixture
def tenant(client, database, settings) -> Tenant:
    return make_tenant(database, settings)


class TestAnIdWithSlashesIsReachableOnEveryPath:
    @pytest.mark.parametrize("record_id", ["cn=a/ou=b", "a/b/c", "a//b", "a/b/"])
    def test_state_history_and_restore(self, client, database, publisher, tenant, record_id):
        deliver(client, tenant, publisher, database, *titled(record_id))
        state = get(client, tenant, f"/v1/entities/person/{record_id}")
        assert state.status_code == 200, state.json
        assert (state.json["entity"]["id"], state.json["properties"]["title"]) == (
            record_id,
            "Intern",
        )
        events = history_of(client, tenant, f"/v1/entities/person/{record_id}/history")
        assert events == [("person.property_updated", record_id), ("person.created", record_id)]
        update = get(client, tenant, f"/v1/entities/person/{record_id}/history").json["events"][0]
        restored = client.post(
            f"/v1/entities/person/{record_id}/restore",
            json={"event_id": update["id"], "actor": ADMIN},
            headers=auth(tenant),
        )
        assert restored.status_code == 201, restored.json
        assert restored.json["event"]["entity"]["id"] == record_id

    def test_an_encoded_slash_reaches_the_same_record(self, client, database, publisher, tenant):
        deliver(client, tenant, publisher, database, *titled("cn=a/ou=b"))
        plain = get(client, tenant, "/v1/entities/person/cn=a/ou=b")
        encoded = get(client, tenant, "/v1/entities/person/cn=a%2Fou=b")
        assert (encoded.status_code, encoded.json) == (200, plain.json)
        assert history_of(client, tenant, "/v1/entities/person/cn%3Da%2Fou%3Db/history") == (
            history_of(client, tenant, "/v1/entities/person/cn=a/ou=b/history")
        )

    def test_the_activity_of_an_actor_whose_id_has_slashes(
        self, client, database, publisher, tenant
    ):
        deliver(client, tenant, publisher, database, *titled("p1"))
        expected = [("person.property_updated", "p1")]
        assert history_of(client, tenant, f"/v1/actors/{ADMIN['id']}/activity") == expected
        encoded = ADMIN["id"].replace("/", "%2F")
        assert history_of(client, tenant, f"/v1/actors/{encoded}/activity") == expected


class TestATrailingHistoryOrRestoreNamesTheEndpoint:
    def test_history_after_an_id_is_that_ids_history(self, client, database, publisher, tenant):
        deliver(client, tenant, publisher, database, *titled("x"), *titled("x/history"))
        assert {i for _, i in history_of(client, tenant, "/v1/entities/person/x/history")} == {"x"}
        assert {
            i for _, i in history_of(client, tenant, "/v1/entities/person/x/history/history")
        } == {"x/history"}

    def test_a_get_of_restore_is_the_state_of_an_id_ending_in_restore(
        self, client, database, publisher, tenant
    ):
        deliver(client, tenant, publisher, database, *titled("x"), *titled("x/restore"))
        state = get(client, tenant, "/v1/entities/person/x/restore")
        assert (state.status_code, state.json["entity"]["id"]) == (200, "x/restore")
        events = get(client, tenant, "/v1/entities/person/x/restore/history").json["events"]
        restored = client.post(
            "/v1/entities/person/x/restore/restore",
            json={"event_id": events[0]["id"], "actor": ADMIN},
            headers=auth(tenant),
        )
        assert restored.status_code == 201, restored.json
        assert restored.json["event"]["entity"]["id"] == "x/restore"

    def test_the_openapi_document_still_generates(self, client):
        response = client.get("/v1/openapi.json")
        assert response.status_code == 200
        paths = response.json["paths"]
        assert {
            "/v1/entities/{entity_type}/{entity_id}",
            "/v1/entities/{entity_type}/{entity_id}/history",
            "/v1/entities/{entity_type}/{entity_id}/restore",
            "/v1/actors/{actor_id}/activity",
        } <= set(paths)
