"""schemathesis against /v1/openapi.json with a valid key: no 5xx, no response off the schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import make_tenant, notification, post_signed
from worker import processing


@pytest.fixture
def tenant(app, client, database, settings, publisher):
    tenant = make_tenant(database, settings)
    batch = [
        notification("person", "p1", relationships={"apps": ["a1"]}, ip_address="2001:db8::1"),
        notification(
            "person",
            "p1",
            kind="patch",
            occurred_at="2026-11-25T11:00:00Z",
            properties={"title": "CTO"},
        ),
        notification(
            "license", "l1", parent={"type": "app", "id": "a1"}, relationships={"assignees": ["p1"]}
        ),
    ]
    post_signed(client, tenant, {"notifications": batch})
    for message in publisher.messages:
        processing.process_notifications(database, message, 1)
    return tenant


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_no_server_error_and_every_response_fits_the_schema(app, tenant):
    # Driven by hand rather than by schemathesis' pytest plugin, which the pytest in use
    # here does not load: each operation's strategy is run through hypothesis directly.
    api_schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 21

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def exercise(case):
            if case.path == "/v1/feed" and isinstance(case.query, dict) and "wait" in case.query:
                case.query["wait"] = 0  # a valid long-poll holds the request up to 30 s
            case.call_and_validate(headers=headers, checks=CHECKS)

        exercise()
