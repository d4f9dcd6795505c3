"""Bad input at the webhook: always a clear 4xx, never a 5xx, and nothing stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from storage.models import Notification
from tests.factories import make_tenant, notification, post_signed
from tests.unit.test_signature import raw_signed_headers


@pytest.fixture
def tenant(database, settings):
    return make_tenant(database, settings)


def stored(database) -> int:
    with database.unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(Notification)) or 0)


MIB = 1024 * 1024

BAD_BODIES: dict[str, Any] = {
    "kind as a number": notification(kind=3),
    "entity as a string": notification(entity="person:p1"),
    "occurred_at as a number": notification(occurred_at=1732528800),
    "sequence as a string": notification(sequence="1"),
    "properties as a list": notification(properties=["a"]),
    "relationships as a string": notification(relationships="apps"),
    "actor as a list": notification(actor=["user"]),
    "a 1 MiB id": notification(id="x" * MIB),
    "a 1 MiB entity id": notification(entity={"type": "person", "id": "p" * MIB}),
    "a 1 MiB property value": notification(properties={"bio": "b" * MIB}),
    "10,000 properties": notification(properties={f"k{i}": i for i in range(10_000)}),
    "an invalid IPv4": notification(ip_address="256.0.0.1"),
    "an invalid IPv6": notification(ip_address="2001:db8::g"),
    "an IP with a prefix": notification(ip_address="10.0.0.0/8"),
    "an IPv6 zone index": notification(ip_address="fe80::1%eth0"),
    "an IPv4-mapped IPv6 with a zone index": notification(ip_address="::ffff:10.0.0.1%2"),
    "an unknown entity type": notification(entity={"type": "robot", "id": "r1"}),
    "an unknown kind": notification(kind="upsert"),
    "a NUL in a key": notification(properties={"a\u0000": 1}),
    "a batch with one bad item": {"notifications": [notification(), notification(kind=None)]},
}


class TestKnownBadBodies:
    @pytest.mark.parametrize("name", list(BAD_BODIES))
    def test_a_clear_4xx_and_nothing_stored(self, client, tenant, database, name):
        response = post_signed(client, tenant, BAD_BODIES[name])
        assert response.status_code in (400, 413, 422), response.json
        assert response.json["error"]["message"]
        assert stored(database) == 0

    @pytest.mark.parametrize(
        "body",
        [
            b'{"kind": "snapshot", "kind": "delete"}',
            b'{"kind": "snap\xffshot"}',
            b'\xef\xbb\xbf{"kind": "snapshot"' + b"]" * 3,
            b'{"a": NaN}',
        ],
    )
    def test_raw_bodies_signed_correctly_are_still_refused(self, client, tenant, database, body):
        headers = raw_signed_headers(tenant.secret, body)
        response = client.post(f"/v1/webhooks/{tenant.source_id}", data=body, headers=headers)
        assert response.status_code == 400, response.json
        assert stored(database) == 0

    @pytest.mark.parametrize(
        "literal",
        ['"\\ud800"', '"a\\udc00b"', "9007199254740992", "-" + "7" * 5000, "1e999", "-2E+400"],
    )
    def test_values_no_store_can_hold_are_422_and_nothing_stored(
        self, client, tenant, database, literal
    ):
        text = json.dumps(notification(properties={"v": "@"})).replace('"@"', literal)
        response = post_signed(client, tenant, text.encode())
        assert response.status_code == 422, response.json
        assert list(response.json["error"]["details"]) == ["properties"]
        assert stored(database) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "id",
    "kind",
    "entity",
    "parent",
    "occurred_at",
    "sequence",
    "origin",
    "actor",
    "ip_address",
    "properties",
    "relationships",
    "event",
    "extra",
]


class TestFuzzedBodies:
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(document=json_values)
    def test_any_json_document_is_answered_without_a_5xx(self, client, tenant, database, document):
        before = stored(database)
        response = post_signed(client, tenant, json.dumps(document).encode())
        assert response.status_code < 500
        if response.status_code != 202:
            assert stored(database) == before

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        field=st.sampled_from(FIELDS),
        value=json_values,
        kind=st.sampled_from(["snapshot", "patch", "delete", "event", "baseline"]),
    )
    def test_one_field_replaced_by_anything_is_accepted_or_refused_cleanly(
        self, client, tenant, database, field, value, kind
    ):
        document = notification("person", kind=kind)
        if kind in ("delete", "event"):
            document.pop("properties", None)
        document[field] = value
        before = stored(database)
        response = post_signed(client, tenant, document)
        assert response.status_code in (202, 400, 422), response.json
        if response.status_code != 202:
            assert response.json["error"]["code"]
            assert stored(database) == before
