"""The read API through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import ipaddress
import random
from datetime import datetime
from typing import Any

import pytest

from storage.catalog import EVENT_TYPES
from tests.factories import Tenant, make_tenant, notification, post_signed
from tests.integration.workload import history, population
from worker import processing

ACTORS = [
    {"type": "user", "id": "p-admin", "name": "Super Admin", "email": "admin@example.com"},
    {"type": "workflow", "id": "wf-offboard"},
    None,
]
IPS = ["203.0.113.7", "203.0.113.200", "198.51.100.4", "2001:db8::1", "2001:db8:1::9", None]


def deliver(client, tenant: Tenant, publisher, database, payloads, batch: int = 200) -> None:
    for start in range(0, len(payloads), batch):
        body = {"notifications": payloads[start : start + batch]}
        response = post_signed(client, tenant, body)
        assert response.status_code == 202, response.json
    for message in publisher.messages:
        processing.process_notifications(database, message, max_attempts=1)
    publisher.messages.clear()


def decorated_history(rng: random.Random, count: int, prefix: str) -> list[dict[str, Any]]:
    payloads = history(rng, count, population(20))
    for payload in payloads:
        payload["id"] = f"{prefix}-{payload['id']}"
        actor = rng.choice(ACTORS)
        if actor:
            payload["actor"] = actor
        ip = rng.choice(IPS)
        if ip:
            payload["ip_address"] = ip
    return payloads


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def fetch_all(client, tenant: Tenant, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every event of a log endpoint, following cursors."""
    found: list[dict[str, Any]] = []
    params = {"limit": 500, **params}
    while True:
        response = client.get(path, query_string=params, headers=auth(tenant))
        assert response.status_code == 200, response.json
        found.extend(response.json["events"])
        if response.json["next_cursor"] is None:
            return found
        params["cursor"] = response.json["next_cursor"]


@pytest.fixture
def two_orgs(client, database, settings, publisher):
    """Two organisations whose notifications were interleaved, both fully processed."""
    rng = random.Random(4)
    first, second = make_tenant(database, settings), make_tenant(database, settings)
    a, b = decorated_history(rng, 300, "a"), decorated_history(rng, 300, "b")
    for start in range(0, 300, 100):
        deliver(client, first, publisher, database, a[start : start + 100])
        deliver(client, second, publisher, database, b[start : start + 100])
    return first, second


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def matches(event: dict[str, Any], params: dict[str, Any], scope: dict[str, Any]) -> bool:
    """A brute-force reading of the filters, independent of the SQL."""
    records = list(scope.get("records", []))
    if "entity_id" in params:
        records.append((params["entity_type"], params["entity_id"]))
    elif "entity_type" in params and event["entity"]["type"] != params["entity_type"]:
        return False
    concerned = {(event["entity"]["type"], event["entity"]["id"])} | {
        (t["type"], t["id"]) for t in event["targets"]
    }
    if any(record not in concerned for record in records):
        return False
    actors = list(scope.get("actors", [])) + ([params["actor_id"]] if "actor_id" in params else [])
    if any(event["actor"]["id"] != actor for actor in actors):
        return False
    if "event_type" in params:
        wanted = params["event_type"].split(",")
        if not any(
            event["type"].startswith(w[:-1]) if w.endswith(".*") else event["type"] == w
            for w in wanted
        ):
            return False
    if "ip" in params:
        if event["ip_address"] is None:
            return False
        network = ipaddress.ip_network(params["ip"], strict=False)
        address = ipaddress.ip_address(event["ip_address"])
        if address.version != network.version or address not in network:
            return False
    occurred = parse(event["occurred_at"])
    if "since" in params and occurred < parse(params["since"]):
        return False
    return not ("until" in params and occurred >= parse(params["until"]))


FILTERS: list[dict[str, Any]] = [
    {},
    {"entity_type": "person"},
    {"entity_type": "app"},
    {"entity_type": "person", "entity_id": "p3"},
    {"entity_type": "app", "entity_id": "a1"},
    {"actor_id": "p-admin"},
    {"actor_id": "wf-offboard"},
    {"event_type": "person.*"},
    {"event_type": "person.property_updated,app.created"},
    {"event_type": "app.person_relationship_created,team.*"},
    {"ip": "203.0.113.0/24"},
    {"ip": "203.0.113.7"},
    {"ip": "2001:db8::/32"},
    {"ip": "2001:db8:1::/48"},
    {"since": "2026-11-01T01:00:00Z"},
    {"until": "2026-11-01T01:00:00Z"},
    {"since": "2026-11-01T00:30:00Z", "until": "2026-11-01T01:10:00+00:00"},
    {"entity_type": "person", "actor_id": "p-admin", "ip": "2001:db8::/32"},
    {"event_type": "person.*", "since": "2026-11-01T00:20:00Z", "ip": "203.0.113.0/24"},
    {
        "entity_type": "person",
        "entity_id": "p1",
        "event_type": "person.*,app.*",
        "actor_id": "p-admin",
        "until": "2026-11-01T01:30:00Z",
    },
]


class TestFilters:
    def test_each_filter_equals_a_brute_force_filter_of_the_whole_log(self, client, two_orgs):
        tenant, _ = two_orgs
        universe = fetch_all(client, tenant, "/v1/events")
        assert len(universe) > 300
        for params in FILTERS:
            expected = [e["id"] for e in universe if matches(e, params, {})]
            found = [e["id"] for e in fetch_all(client, tenant, "/v1/events", **params)]
            assert found == expected, params
        # The filters are not vacuous: most select something, none selects everything.
        assert sum(1 for p in FILTERS[1:] if fetch_all(client, tenant, "/v1/events", **p)) > 15

    def test_history_and_activity_combine_with_the_filters(self, client, two_orgs):
        tenant, _ = two_orgs
        universe = fetch_all(client, tenant, "/v1/events")
        for params in [{}, {"event_type": "person.*"}, {"ip": "2001:db8::/32"}, FILTERS[-2]]:
            scope = {"records": [("app", "a2")]}
            expected = [e["id"] for e in universe if matches(e, params, scope)]
            history_path = "/v1/entities/app/a2/history"
            found = [e["id"] for e in fetch_all(client, tenant, history_path, **params)]
            assert found == expected, params
            expected = [e["id"] for e in universe if matches(e, params, {"actors": ["p-admin"]})]
            activity = fetch_all(client, tenant, "/v1/actors/p-admin/activity", **params)
            assert [e["id"] for e in activity] == expected, params

    def test_the_log_is_ordered_newest_first_then_by_id(self, client, two_orgs):
        tenant, _ = two_orgs
        universe = fetch_all(client, tenant, "/v1/events")
        keys = [(e["occurred_at"].replace("Z", ""), e["id"]) for e in universe]
        ordered = sorted(universe, key=lambda e: (parse(e["occurred_at"]), e["id"]), reverse=True)
        assert [e["id"] for e in universe] == [e["id"] for e in ordered]
        assert len(set(keys)) == len(keys)


class TestTenancy:
    def test_nothing_of_one_organisation_shows_in_another(self, client, two_orgs):
        first, second = two_orgs
        mine = {e["id"] for e in fetch_all(client, first, "/v1/events")}
        theirs = {e["id"] for e in fetch_all(client, second, "/v1/events")}
        assert mine and theirs and not mine & theirs
        for params in FILTERS:
            assert {e["id"] for e in fetch_all(client, second, "/v1/events", **params)} <= theirs
        assert {e["id"] for e in fetch_all(client, second, "/v1/entities/app/a1/history")} <= theirs
        activity = fetch_all(client, second, "/v1/actors/p-admin/activity")
        assert {e["id"] for e in activity} <= theirs

    def test_another_organisations_ids_answer_404(self, client, two_orgs):
        first, second = two_orgs
        an_event = fetch_all(client, first, "/v1/events", event_type="person.property_updated")[0]
        person = an_event["entity"]["id"]
        # The same ids exist in both organisations' data sets: use a record only `first` has.
        response = client.get("/v1/entities/person/only-first", headers=auth(second))
        assert response.status_code == 404
        path = f"/v1/sources/{first.source_id}/notifications/{an_event['notification_id']}"
        assert client.get(path, headers=auth(second)).status_code == 404
        assert client.get(path, headers=auth(first)).status_code == 200
        restore = client.post(
            f"/v1/entities/person/{person}/restore",
            json={"event_id": an_event["id"], "actor": ACTORS[0]},
            headers=auth(second),
        )
        assert restore.status_code in (404, 422)
        assert restore.json["error"]["code"] in ("not_found", "not_restorable")

    def test_a_cursor_of_one_organisation_is_refused_by_another(self, client, two_orgs):
        first, second = two_orgs
        cursor = client.get("/v1/events?limit=5", headers=auth(first)).json["next_cursor"]
        response = client.get("/v1/events", query_string={"cursor": cursor}, headers=auth(second))
        assert response.status_code == 422
        assert response.json["error"]["code"] == "invalid_cursor"

    def test_a_cursor_of_another_filter_or_altered_is_refused(self, client, two_orgs):
        first, _ = two_orgs
        cursor = client.get("/v1/events?limit=5", headers=auth(first)).json["next_cursor"]
        other = client.get(
            "/v1/events", query_string={"cursor": cursor, "entity_type": "app"}, headers=auth(first)
        )
        assert other.status_code == 422
        altered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
        bad = client.get("/v1/events", query_string={"cursor": altered}, headers=auth(first))
        assert bad.status_code == 422


class TestAuth:
    def test_missing_wrong_and_revoked_keys_are_401(self, client, database, settings):
        tenant = make_tenant(database, settings)
        assert client.get("/v1/events").status_code == 401
        wrong = {"Authorization": "Bearer alk_wrong"}
        assert client.get("/v1/events", headers=wrong).json["error"]["code"] == "unauthorized"
        assert client.get("/v1/events", headers=auth(tenant)).status_code == 200
        from sqlalchemy import update

        from storage.models import ApiKey

        with database.unit_of_work(write=True) as session:
            session.execute(update(ApiKey).values(revoked_at=datetime.now().astimezone()))
            session.commit()
        assert client.get("/v1/events", headers=auth(tenant)).status_code == 401

    def test_the_openapi_document_needs_no_key(self, client):
        response = client.get("/v1/openapi.json")
        assert response.status_code == 200
        paths = response.json["paths"]
        assert "/v1/webhooks/{source_id}" in paths
        assert "/v1/entities/{entity_type}/{entity_id}/restore" in paths


class TestParameters:
    @pytest.fixture
    def tenant(self, database, settings):
        return make_tenant(database, settings)

    @pytest.mark.parametrize("query", ["colour=red", "limit=5&pagesize=3"])
    def test_an_unknown_parameter_is_400(self, client, tenant, query):
        response = client.get(f"/v1/events?{query}", headers=auth(tenant))
        assert response.status_code == 400
        assert response.json["error"]["code"] == "unknown_parameter"

    @pytest.mark.parametrize(
        "query",
        [
            "entity_type=robot",
            "entity_id=p1",
            "event_type=person.exploded",
            "event_type=nothing.*",
            "event_type=",
            "ip=300.1.1.1",
            "ip=10.0.0.0/33",
            "since=yesterday",
            "until=2026-11-25",
            "limit=0",
            "limit=501",
            "limit=ten",
            "cursor=garbage",
        ],
    )
    def test_a_malformed_value_is_422(self, client, tenant, query):
        response = client.get(f"/v1/events?{query}", headers=auth(tenant))
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"]

    def test_the_catalog(self, client, tenant):
        response = client.get("/v1/event-types", headers=auth(tenant))
        assert response.status_code == 200
        assert len(response.json) == len(EVENT_TYPES)
        assert {
            "type": "app.org_relationship_removed",
            "label": "App/Org Relationship Removed",
            "entity_type": "app",
            "extension": True,
        } in response.json


class TestPaging:
    def test_paging_a_thousand_events_by_seven_while_events_arrive(
        self, client, database, settings, publisher
    ):
        tenant = make_tenant(database, settings)
        seeds = [
            notification(
                "person", f"p{i}", occurred_at=f"2026-11-25T10:{i // 60:02d}:{i % 60:02d}Z"
            )
            for i in range(1000)
        ]
        deliver(client, tenant, publisher, database, seeds, batch=500)
        original = {e["id"] for e in fetch_all(client, tenant, "/v1/events")}
        assert len(original) == 1000

        seen: list[str] = []
        params: dict[str, Any] = {"limit": 7}
        rng = random.Random(1)
        pages = 0
        while True:
            response = client.get("/v1/events", query_string=params, headers=auth(tenant))
            seen.extend(e["id"] for e in response.json["events"])
            pages += 1
            if pages % 10 == 0:
                minute = rng.randint(0, 16)
                late = notification(
                    "person", f"late{pages}", occurred_at=f"2026-11-25T10:{minute:02d}:30.5Z"
                )
                deliver(client, tenant, publisher, database, [late])
            if response.json["next_cursor"] is None:
                break
            params["cursor"] = response.json["next_cursor"]
        assert len(seen) == len(set(seen)), "an event was repeated"
        assert original <= set(seen), "an event was skipped"


class TestRecordState:
    def test_as_of_each_change_equals_the_state_then(self, client, database, settings, publisher):
        tenant = make_tenant(database, settings)
        steps = [
            notification(
                "app", "zoom", occurred_at="2026-11-25T08:00:00Z", properties={"name": "Zoom"}
            ),
            notification(
                "person",
                "p1",
                occurred_at="2026-11-25T09:00:00Z",
                properties={"name": "Ada", "title": "Engineer"},
                relationships={"apps": ["zoom"]},
            ),
            notification(
                "person",
                "p1",
                kind="patch",
                occurred_at="2026-11-25T10:00:00Z",
                properties={"title": "Staff Engineer", "phone": "555"},
            ),
            notification(
                "app",
                "zoom",
                kind="patch",
                occurred_at="2026-11-25T11:00:00Z",
                relationships={"persons": {"remove": ["p1"]}, "org": True},
            ),
            notification(
                "person",
                "p1",
                kind="patch",
                occurred_at="2026-11-25T12:00:00Z",
                properties={"phone": None},
                relationships={"devices": {"add": ["d1"]}},
            ),
            notification(
                "license",
                "l1",
                occurred_at="2026-11-25T12:30:00Z",
                parent={"type": "app", "id": "zoom"},
                properties={"name": "Pro", "seats": 5},
                relationships={"assignees": ["p1"]},
            ),
            notification(
                "license",
                "l1",
                kind="patch",
                occurred_at="2026-11-25T12:45:00Z",
                properties={"seats": 6},
            ),
            notification("person", "p1", kind="delete", occurred_at="2026-11-25T13:00:00Z"),
            notification(
                "person",
                "p1",
                kind="patch",
                occurred_at="2026-11-25T14:00:00Z",
                properties={"title": "CTO"},
            ),
        ]
        for step in steps:
            if step["kind"] == "delete":
                step.pop("properties", None)
        records = [("person", "p1"), ("app", "zoom"), ("license", "l1")]
        snapshots: list[tuple[str, dict[str, Any]]] = []
        for step in steps:
            deliver(client, tenant, publisher, database, [step])
            states = {}
            for record_type, record_id in records:
                response = client.get(
                    f"/v1/entities/{record_type}/{record_id}", headers=auth(tenant)
                )
                states[(record_type, record_id)] = (
                    response.json if response.status_code == 200 else None
                )
            snapshots.append((step["occurred_at"], states))

        for moment, states in snapshots:
            for (record_type, record_id), expected in states.items():
                response = client.get(
                    f"/v1/entities/{record_type}/{record_id}",
                    query_string={"as_of": moment},
                    headers=auth(tenant),
                )
                if expected is None:
                    assert response.status_code == 404, (moment, record_type)
                else:
                    assert response.status_code == 200
                    assert response.json == expected, (moment, record_type)

        before = client.get(
            "/v1/entities/person/p1",
            query_string={"as_of": "2026-11-25T08:59:59Z"},
            headers=auth(tenant),
        )
        assert before.status_code == 404

    def test_a_record_deleted_before_it_was_seen_answers_deleted(
        self, client, database, settings, publisher
    ):
        tenant = make_tenant(database, settings)
        gone = notification("device", "d9", kind="delete")
        gone.pop("properties", None)
        deliver(client, tenant, publisher, database, [gone])
        response = client.get("/v1/entities/device/d9", headers=auth(tenant))
        assert response.status_code == 200
        assert response.json["deleted"] is True
        assert client.get("/v1/entities/device/never", headers=auth(tenant)).status_code == 404
        assert client.get("/v1/entities/robot/x", headers=auth(tenant)).status_code == 404


class TestRestore:
    @pytest.fixture
    def tenant(self, client, database, settings, publisher):
        tenant = make_tenant(database, settings)
        deliver(
            client,
            tenant,
            publisher,
            database,
            [
                notification(
                    "person",
                    "p1",
                    properties={"name": "Ada", "title": "Engineer"},
                    relationships={"apps": ["a1"]},
                ),
                notification(
                    "person",
                    "p1",
                    kind="patch",
                    occurred_at="2026-11-25T11:00:00Z",
                    properties={"title": "Intern"},
                ),
                notification(
                    "license",
                    "l1",
                    parent={"type": "app", "id": "a1"},
                    properties={"name": "Pro", "seats": 5},
                ),
                notification(
                    "license",
                    "l1",
                    kind="patch",
                    occurred_at="2026-11-25T11:00:00Z",
                    properties={"seats": 2},
                ),
            ],
        )
        return tenant

    def find(self, client, tenant, **params):
        return fetch_all(client, tenant, "/v1/events", **params)[0]

    def restore(self, client, tenant, path: str, event_id: str):
        return client.post(
            path,
            json={
                "event_id": event_id,
                "actor": {"type": "user", "id": "p-admin", "name": "Super Admin"},
            },
            headers=auth(tenant),
        )

    def test_restore_puts_the_old_value_back_then_answers_200_null(self, client, tenant):
        update = self.find(client, tenant, event_type="person.property_updated")
        first = self.restore(client, tenant, "/v1/entities/person/p1/restore", update["id"])
        assert first.status_code == 201, first.json
        event = first.json["event"]
        assert (event["type"], event["property"], event["old_value"], event["new_value"]) == (
            "person.property_updated",
            "title",
            "Intern",
            "Engineer",
        )
        assert event["details"]["restored_from"] == update["id"]
        # The key that made it, besides the actor given (the organisation's first key).
        performer = event["details"]["performed_by"]
        assert set(performer) == {"key_id", "key_name"} and performer["key_name"] == "default"
        assert performer["key_id"].startswith("key_")
        assert event["origin"] == "manual"
        assert event["ip_address"] == "127.0.0.1"  # the test client's address
        assert event["actor"]["id"] == "p-admin"
        state = client.get("/v1/entities/person/p1", headers=auth(tenant)).json
        assert state["properties"]["title"] == "Engineer"
        again = self.restore(client, tenant, "/v1/entities/person/p1/restore", update["id"])
        assert (again.status_code, again.json) == (200, {"event": None})

    def test_a_license_property_is_restored_on_the_license(self, client, tenant):
        update = self.find(client, tenant, event_type="app.license_updated")
        wrong_record = self.restore(client, tenant, "/v1/entities/app/a1/restore", update["id"])
        assert wrong_record.status_code in (404, 422)
        response = self.restore(client, tenant, "/v1/entities/license/l1/restore", update["id"])
        assert response.status_code == 201
        assert response.json["event"]["type"] == "app.license_updated"
        assert (
            client.get("/v1/entities/license/l1", headers=auth(tenant)).json["properties"]["seats"]
            == 5
        )

    @pytest.mark.parametrize("event_type", ["person.app_relationship_created", "person.created"])
    def test_restoring_anything_but_a_property_update_is_422(self, client, tenant, event_type):
        event = self.find(client, tenant, event_type=event_type)
        response = self.restore(client, tenant, "/v1/entities/person/p1/restore", event["id"])
        assert response.status_code == 422
        assert response.json["error"]["code"] == "not_restorable"

    def test_an_unknown_event_id_is_422(self, client, tenant):
        response = self.restore(client, tenant, "/v1/entities/person/p1/restore", "evt_nope")
        assert response.status_code == 422


class TestNotificationStatus:
    def test_queued_then_processed_with_its_event_ids(self, client, database, settings, publisher):
        tenant = make_tenant(database, settings)
        document = notification("person", "p1", id="change-1", relationships={"apps": ["a1"]})
        post_signed(client, tenant, document)
        path = f"/v1/sources/{tenant.source_id}/notifications/change-1"
        queued = client.get(path, headers=auth(tenant)).json
        assert queued == {
            "id": "change-1",
            "status": "queued",
            "attempts": 0,
            "error": None,
            "event_ids": [],
        }
        processing.process_notifications(database, publisher.messages[0], 1)
        processed = client.get(path, headers=auth(tenant)).json
        assert processed["status"] == "processed"
        log = fetch_all(client, tenant, "/v1/events")
        assert processed["event_ids"] == [e["id"] for e in reversed(log)]
