"""U+0000 in a JSON body of the API is a 422 naming the field, never a 5xx."""

from __future__ import annotations

import pytest

from tests.factories import make_tenant


@pytest.fixture
def headers(database, settings):
    tenant = make_tenant(database, settings)
    return {"Authorization": f"Bearer {tenant.api_key}"}


class TestNulInBodies:
    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            ("/v1/console-sessions", {"viewer": {"id": "p\u00001"}}, "viewer"),
            ("/v1/exports", {"entity_type": "person", "entity_id": "p\u00001"}, "entity_id"),
            ("/v1/exports", {"actor_id": "a", "\u0000": 1}, "\u0000"),
            (
                "/v1/entities/person/p-1/restore",
                {"event_id": "evt_\u0000", "actor": {"type": "user", "id": "p-9"}},
                "event_id",
            ),
        ],
    )
    def test_is_refused_with_the_field_named(self, client, headers, path, body, field):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 422, response.get_json()
        error = response.get_json()["error"]
        assert error["code"] == "validation_failed"
        assert error["details"] == {field: ["U+0000 is not allowed."]}

    def test_an_escaped_backslash_before_u0000_is_no_nul(self, client, headers):
        body = b'{"entity_type": "person", "entity_id": "p\\\\u0000"}'
        response = client.post(
            "/v1/exports", data=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 202, response.get_json()
        assert response.get_json()["filters"]["entity_id"] == "p\\u0000"
