"""The OpenAPI document states the rules the API enforces in code."""

from __future__ import annotations

import re

import pytest

# The document does not depend on the database: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def document(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


LOG_OPERATIONS = [
    "/v1/events",
    "/v1/entities/{entity_type}/{entity_id}/history",
    "/v1/actors/{actor_id}/activity",
]


class TestDocumentRules:
    def test_is_openapi_3_1(self, document):
        assert document["openapi"].startswith("3.1")

    @pytest.mark.parametrize("path", LOG_OPERATIONS)
    def test_log_filters_are_one_object_where_entity_id_needs_entity_type(self, document, path):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        filters = parameters["filters"]
        assert (filters["in"], filters["style"], filters["explode"]) == ("query", "form", True)
        assert filters["schema"]["dependentRequired"] == {"entity_id": ["entity_type"]}
        assert "entity_id" not in parameters and {"limit", "cursor"} <= set(parameters)

    def test_an_export_body_is_optional_and_says_entity_id_needs_entity_type(self, document):
        operation = document["paths"]["/v1/exports"]["post"]
        assert operation["requestBody"]["required"] is False
        schema = document["components"]["schemas"]["ExportRequest"]
        assert schema["dependentRequired"] == {"entity_id": ["entity_type"]}

    def test_a_download_takes_the_key_or_the_signed_token(self, document):
        operation = document["paths"]["/v1/exports/{export_id}/download"]["get"]
        assert operation["security"] == [{"bearerAuth": []}, {"downloadLink": []}]
        scheme = document["components"]["securitySchemes"]["downloadLink"]
        assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "query", "token")

    def test_event_type_and_ip_patterns_accept_exactly_what_the_api_does(self, document):
        parameters = document["paths"]["/v1/events"]["get"]["parameters"]
        properties = next(p for p in parameters if p["name"] == "filters")["schema"]["properties"]
        event_type = re.compile(properties["event_type"]["pattern"])
        ip = re.compile(properties["ip"]["pattern"])
        for value, accepted in [("person.*,app.created", True), ("p.*", False), ("nope", False)]:
            assert bool(event_type.fullmatch(value)) is accepted
        for value, accepted in [("10.0.0.0/8", True), ("2001:db8::/32", True), ("01.2.3.4", False)]:
            assert bool(ip.fullmatch(value)) is accepted

    def test_links_lead_from_an_export_to_its_file_and_from_events_to_their_records(self, document):
        created = document["paths"]["/v1/exports"]["post"]["responses"]["202"]["links"]
        assert created["download_export"]["parameters"] == {"export_id": "$response.body#/id"}
        page = document["paths"]["/v1/events"]["get"]["responses"]["200"]["links"]
        assert page["record_state"]["operationId"] == "record_state"
        ids = {
            op["operationId"]
            for ops in document["paths"].values()
            for op in ops.values()
            if isinstance(op, dict) and "operationId" in op
        }
        for links in (created, page):
            assert {link["operationId"] for link in links.values()} <= ids
