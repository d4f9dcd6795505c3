"""Every endpoint that takes a JSON body, fuzzed with what no store can hold.

The webhook, ``POST /v1/exports`` and restore all read their body with ingest.body's decoder:
400 for a body that is not JSON (nesting bombs included), 422 with the field's path for
numbers that are not I-JSON and lone surrogates; never a 5xx, nothing stored, and a good
notification sent right after is accepted. On SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ingest.body import (
    MAX_DEPTH,
    NOT_A_FINITE_NUMBER,
    NOT_AN_EXACT_INTEGER,
    NOT_UNICODE,
    NOT_UNICODE_KEY,
)
from storage.models import ConsoleLink, Event, Export, Notification
from tests.factories import Tenant, make_tenant, notification
from tests.unit.test_signature import raw_signed_headers

MARKER = "@refused"

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def tenant(database, settings) -> Tenant:
    return make_tenant(database, settings)


def stored(database) -> tuple[int, ...]:
    """Rows of notifications, exports, events and console links: what any of these
    endpoints may write."""
    with database.unit_of_work() as session:
        return tuple(
            int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Notification, Export, Event, ConsoleLink)
        )


@dataclass(frozen=True)
class Endpoint:
    """One JSON-taking endpoint: how to send it a body, and documents to hide a value in.

    Each template is a document with ``MARKER`` at ``path`` (``key=True``: as a key there),
    and the path its 422 reports (a batch by index, as every 422 of a batch).
    """

    name: str
    send: Callable[[Any, Tenant, bytes], Any]
    templates: list[tuple[Callable[[], Any], tuple[str, ...], bool]]
    envelope: str | None = None


def send_webhook(client, tenant: Tenant, body: bytes) -> Any:
    headers = raw_signed_headers(tenant.secret, body)
    return client.post(f"/v1/webhooks/{tenant.source_id}", data=body, headers=headers)


def api_sender(path: str) -> Callable[[Any, Tenant, bytes], Any]:
    def send(client, tenant: Tenant, body: bytes) -> Any:
        headers = {"Authorization": f"Bearer {tenant.api_key}", "Content-Type": "application/json"}
        return client.post(path, data=body, headers=headers)

    return send


ENDPOINTS = [
    Endpoint(
        "webhook",
        send_webhook,
        [
            (lambda: notification(properties={"name": MARKER}), ("properties", "name"), False),
            (lambda: notification(properties={MARKER: 1}), ("properties",), True),
            (lambda: notification(sequence=MARKER), ("sequence",), False),
            (
                lambda: notification(entity={"type": "person", "id": MARKER}),
                ("entity", "id"),
                False,
            ),
            (
                lambda: notification(relationships={"apps": ["a1", MARKER]}),
                ("relationships", "apps", "1"),
                False,
            ),
            (
                lambda: notification(actor={"type": "user", "id": "p1", "name": MARKER}),
                ("actor", "name"),
                False,
            ),
            (lambda: notification(colour=MARKER), ("colour",), False),
            (
                lambda: {"notifications": [notification(), notification(properties={"x": MARKER})]},
                ("notifications", "1", "properties", "x"),
                False,
            ),
        ],
        envelope="notifications",
    ),
    Endpoint(
        "export",
        api_sender("/v1/exports"),
        [
            (lambda: {"since": MARKER}, ("since",), False),
            (lambda: {"entity_type": "person", "entity_id": MARKER}, ("entity_id",), False),
            (lambda: {"event_type": ["person.*", MARKER]}, ("event_type", "1"), False),
            (lambda: {"ip": MARKER}, ("ip",), False),
            (lambda: {MARKER: "x"}, (), True),
            (lambda: {"limit": MARKER}, ("limit",), False),
        ],
    ),
    Endpoint(
        "restore",
        api_sender("/v1/entities/person/p1/restore"),
        [
            (
                lambda: {"event_id": MARKER, "actor": {"type": "user", "id": "p1"}},
                ("event_id",),
                False,
            ),
            (
                lambda: {
                    "event_id": "evt_1",
                    "actor": {"type": "user", "id": "p1", "name": MARKER},
                },
                ("actor", "name"),
                False,
            ),
            (lambda: {"event_id": "evt_1", "actor": {MARKER: "p1"}}, ("actor",), True),
        ],
    ),
    Endpoint(
        "console-session",
        api_sender("/v1/console-sessions"),
        [
            (lambda: {"scope": {"actor_id": MARKER}}, ("scope", "actor_id"), False),
            (
                lambda: {"scope": {"entity": {"type": "person", "id": MARKER}}},
                ("scope", "entity", "id"),
                False,
            ),
            (lambda: {"permissions": ["export", MARKER]}, ("permissions", "1"), False),
            (lambda: {"viewer": {"id": "p1", "name": MARKER}}, ("viewer", "name"), False),
            (lambda: {"viewer": {MARKER: "p1"}}, ("viewer",), True),
        ],
    ),
]

#: (raw JSON, the message its 422 gives): every kind of value no store can hold.
refused_values = st.one_of(
    st.integers(min_value=2**53).map(lambda n: (str(n), NOT_AN_EXACT_INTEGER)),
    st.integers(max_value=-(2**53)).map(lambda n: (str(n), NOT_AN_EXACT_INTEGER)),
    # Past Python's int-string digit limit (4300): never converted, so never a ValueError.
    st.integers(4_000, 20_000).map(lambda n: ("9" * n, NOT_AN_EXACT_INTEGER)),
    st.integers(309, 10**6).map(lambda e: (f"1e{e}", NOT_A_FINITE_NUMBER)),
    st.sampled_from(["1e999", "-1E+400", "1.8e308", "-" + "9" * 400 + ".5"]).map(
        lambda text: (text, NOT_A_FINITE_NUMBER)
    ),
    st.integers(0xD800, 0xDFFF).map(lambda c: (f'"x\\u{c:04x}"', NOT_UNICODE)),
)

#: Lone surrogate keys: the only refused value that can be a key.
refused_keys = st.integers(0xD800, 0xDFFF).map(lambda c: f"k\\u{c:04x}")

#: Bodies that are not JSON this service reads: a 400 on every endpoint.
malformed_bodies = st.one_of(
    st.integers(MAX_DEPTH + 1, 300_000).map(lambda n: b"[" * n),
    st.integers(MAX_DEPTH + 1, 100_000).map(lambda n: b'{"a":' * n),
    st.integers(MAX_DEPTH + 1, 2_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(MAX_DEPTH + 1, 5_000).map(lambda n: b"[" * n + b"9" * 5000 + b"]" * n),
    st.sampled_from(
        [
            b'{"a": 1, "a": 2}',
            b'{"a": NaN}',
            b"[-Infinity]",
            b'{"since": ',
            b'{"since": "\xff"}',
            b"\xfe\xff",
            b"   ",
            b"'single'",
        ]
    ),
)


#: Text of any code points, lone surrogates often (json.dumps writes them as escapes).
any_text = st.text(st.characters(codec=None), max_size=8) | st.text(
    st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=4
)


WEBHOOK_400_CODES = {"invalid_json", "nesting_too_deep", "duplicate_key"}


def good_notification_is_accepted(client, tenant: Tenant) -> None:
    response = send_webhook(client, tenant, json.dumps(notification()).encode())
    assert response.status_code == 202, response.json


def messages_at(details: dict[str, Any], path: tuple[str, ...]) -> Any:
    found: Any = details
    for key in path:
        assert isinstance(found, dict) and key in found, (details, path)
        found = found[key]
    return found


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[endpoint.name for endpoint in ENDPOINTS])
class TestEveryJsonBody:
    @FUZZ
    @given(data=st.data())
    def test_a_value_no_store_can_hold_is_422_at_its_path_and_nothing_is_stored(
        self, client, tenant, database, endpoint, data
    ):
        template, path, as_key = data.draw(st.sampled_from(endpoint.templates))
        if as_key:
            literal = data.draw(refused_keys)
            # The answer writes the key with its surrogate escaped, as the body did.
            path, message = (*path, literal), NOT_UNICODE_KEY
            raw = json.dumps(template()).replace(f'"{MARKER}"', f'"{literal}"')
        else:
            literal, message = data.draw(refused_values)
            raw = json.dumps(template()).replace(f'"{MARKER}"', literal)
        if endpoint.envelope and path[:1] == (endpoint.envelope,):
            path = path[1:]
        before = stored(database)

        response = endpoint.send(client, tenant, raw.encode())

        assert response.status_code == 422, response.json
        assert response.json["error"]["code"] == "validation_failed"
        assert messages_at(response.json["error"]["details"], path) == [message]
        assert stored(database) == before
        good_notification_is_accepted(client, tenant)

    @FUZZ
    @given(body=malformed_bodies)
    def test_a_body_that_is_not_json_is_400_and_nothing_is_stored(
        self, client, tenant, database, endpoint, body
    ):
        before = stored(database)

        response = endpoint.send(client, tenant, body)

        assert response.status_code == 400, response.json
        assert set(response.json["error"]) == {"code", "message", "details"}
        # The webhook names the reason in its code; the API says invalid_json for all.
        codes = WEBHOOK_400_CODES if endpoint.name == "webhook" else {"invalid_json"}
        assert response.json["error"]["code"] in codes
        assert stored(database) == before
        good_notification_is_accepted(client, tenant)

    @FUZZ
    @given(
        document=st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | any_text,
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
            ),
            max_leaves=10,
        )
    )
    def test_any_document_is_answered_without_a_5xx(
        self, client, tenant, database, endpoint, document
    ):
        before = stored(database)

        response = endpoint.send(client, tenant, json.dumps(document).encode())

        assert response.status_code < 500, response.json
        if response.status_code >= 400:
            assert response.json["error"]["code"]
            assert stored(database) == before
        good_notification_is_accepted(client, tenant)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[endpoint.name for endpoint in ENDPOINTS])
class TestTheReportedBodies:
    """The two bodies that were a 500 on ``POST /v1/exports``, on every endpoint."""

    def test_a_5000_digit_integer_is_422(self, client, tenant, database, endpoint):
        template, path, _ = endpoint.templates[0]
        raw = json.dumps(template()).replace(f'"{MARKER}"', "1" * 5000)
        if endpoint.envelope and path[:1] == (endpoint.envelope,):
            path = path[1:]
        before = stored(database)
        response = endpoint.send(client, tenant, raw.encode())
        assert response.status_code == 422, response.json
        assert messages_at(response.json["error"]["details"], path) == [NOT_AN_EXACT_INTEGER]
        assert stored(database) == before

    def test_200000_nested_brackets_are_400(self, client, tenant, database, endpoint):
        before = stored(database)
        response = endpoint.send(client, tenant, b"[" * 200_000)
        assert response.status_code == 400, response.json
        assert stored(database) == before
        good_notification_is_accepted(client, tenant)


class TestZoneIndexes:
    """An IPv6 zone index (``fe80::1%eth0``) is a 422 wherever an address is taken."""

    def auth(self, tenant: Tenant) -> dict[str, str]:
        return {"Authorization": f"Bearer {tenant.api_key}"}

    @pytest.mark.parametrize("ip", ["fe80::1%eth0", "fe80::%1/64", "::ffff:10.0.0.1%2"])
    def test_the_ip_query_filter_refuses_one(self, client, tenant, ip):
        response = client.get("/v1/events", query_string={"ip": ip}, headers=self.auth(tenant))
        assert response.status_code == 422, response.json
        assert list(response.json["error"]["details"]) == ["ip"]

    def test_an_export_filter_refuses_one(self, client, tenant, database):
        response = client.post(
            "/v1/exports", json={"ip": "fe80::1%eth0"}, headers=self.auth(tenant)
        )
        assert response.status_code == 422, response.json
        assert list(response.json["error"]["details"]) == ["ip"]
        assert stored(database)[1] == 0

    def test_an_address_without_a_zone_is_still_a_filter(self, client, tenant):
        for ip in ("fe80::1", "fe80::/10", "10.0.0.1"):
            response = client.get("/v1/events", query_string={"ip": ip}, headers=self.auth(tenant))
            assert response.status_code == 200, response.json
