"""Every response's X-Request-ID, and who may speak for the client through X-Forwarded-*."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import pytest
from flask import url_for

from api.app import create_app
from storage.logformat import current_request_id
from tests.e2e.test_restore_truth import ADMIN, auth, deliver, title_update
from tests.factories import make_tenant, notification, post_signed

GENERATED = re.compile(r"[0-9a-f]{32}")


class RecordingRequestIds:
    """A publisher that notes which request id was current when each message was sent."""

    def __init__(self) -> None:
        self.request_ids: list[str | None] = []

    def __call__(self, pks: Sequence[int]) -> None:
        self.request_ids.append(current_request_id.get())


class TestRequestIds:
    @pytest.mark.parametrize(
        "path", ["/healthz", "/v1/openapi.json", "/no/such/page", "/v1/events", "/console/"]
    )
    def test_a_sent_request_id_is_echoed_on_every_kind_of_response(self, client, path):
        response = client.get(path, headers={"X-Request-ID": "trace-1234 abc"})
        assert response.headers["X-Request-ID"] == "trace-1234 abc"

    def test_one_is_made_when_none_is_sent_a_new_one_each_time(self, client):
        first = client.get("/healthz").headers["X-Request-ID"]
        second = client.get("/healthz").headers["X-Request-ID"]
        assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second)
        assert first != second

    def test_two_hundred_characters_are_kept_two_hundred_and_one_are_not(self, client):
        kept = "r" * 200
        assert (
            client.get("/healthz", headers={"X-Request-ID": kept}).headers["X-Request-ID"] == kept
        )
        too_long = client.get("/healthz", headers={"X-Request-ID": "r" * 201})
        assert GENERATED.fullmatch(too_long.headers["X-Request-ID"])

    @pytest.mark.parametrize("sent", ["tab\there", "del\x7f", "caf\u00e9", ""])
    def test_a_request_id_with_a_character_that_is_not_printable_ascii_is_replaced(
        self, client, sent
    ):
        environ = {"HTTP_X_REQUEST_ID": sent}
        response = client.get("/healthz", environ_overrides=environ)
        assert GENERATED.fullmatch(response.headers["X-Request-ID"])

    def test_webhook_errors_and_acceptances_carry_it_and_the_queue_message_is_sent_under_it(
        self, settings, database
    ):
        publisher = RecordingRequestIds()
        client = create_app(settings, database=database, publish=publisher).test_client()
        tenant = make_tenant(database, settings)
        accepted = post_signed(client, tenant, notification(), **{"X-Request-ID": "hook-1"})
        assert (accepted.status_code, accepted.headers["X-Request-ID"]) == (202, "hook-1")
        assert publisher.request_ids == ["hook-1"]
        unsigned = client.post(
            f"/v1/webhooks/{tenant.source_id}", json={}, headers={"X-Request-ID": "hook-2"}
        )
        assert (unsigned.status_code, unsigned.headers["X-Request-ID"]) == (401, "hook-2")
        assert current_request_id.get() is None  # nothing leaks past the request


def restored_ip(client, tenant, peer: str) -> str | None:
    """The address a restore sent with FORWARDED headers from ``peer`` records."""
    update = title_update(client, tenant, "Intern")
    response = client.post(
        "/v1/entities/person/p1/restore",
        json={"event_id": update["id"], "actor": ADMIN},
        headers={**auth(tenant), **FORWARDED},
        environ_base={"REMOTE_ADDR": peer},
    )
    assert response.status_code == 201, response.json
    return response.json["event"]["ip_address"]


FORWARDED = {
    "X-Forwarded-For": "198.51.100.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "audit.example.com",
}


@pytest.fixture
def proxied(settings, database, publisher):
    """An app that trusts 10.0.0.0/8, and a tenant whose p1 can be restored."""
    trusted = dataclasses.replace(settings, forwarded_allow_ips=("10.0.0.0/8",))
    client = create_app(trusted, database=database, publish=publisher).test_client()
    tenant = make_tenant(database, trusted)
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
    return client, tenant


def console_link(client, tenant, peer: str) -> str:
    response = client.post(
        "/v1/console-sessions",
        headers={**auth(tenant), **FORWARDED},
        environ_base={"REMOTE_ADDR": peer},
    )
    assert response.status_code == 201, response.json
    return str(response.json["url"])


class TestForwardedHeaders:
    def test_a_trusted_proxy_gives_the_clients_address_and_the_https_links(self, proxied):
        client, tenant = proxied
        ip = restored_ip(client, tenant, "10.1.2.3")
        assert ip == "198.51.100.7"
        link = console_link(client, tenant, "10.1.2.3")
        assert link.startswith("https://audit.example.com/console/enter/")

    def test_a_peer_outside_the_list_is_not_believed(self, proxied):
        client, tenant = proxied
        ip = restored_ip(client, tenant, "203.0.113.9")
        assert ip == "203.0.113.9"
        assert console_link(client, tenant, "203.0.113.9").startswith("http://localhost/")

    def test_by_default_nobody_is_trusted_not_even_loopback(self, client, database, settings):
        tenant = make_tenant(database, settings)
        assert console_link(client, tenant, "127.0.0.1").startswith("http://localhost/")


class TestPublicUrl:
    def test_it_wins_for_links_whatever_host_the_request_came_by(self, settings, database):
        public = dataclasses.replace(
            settings, public_url="https://audit.example.com/audit", forwarded_allow_ips=("*",)
        )
        app = create_app(public, database=database)
        with app.test_request_context("/", base_url="http://10.0.0.5:8000/"):
            assert url_for("health.healthz", _external=True) == (
                "https://audit.example.com/audit/healthz"
            )
        plain = create_app(settings, database=database)
        with plain.test_request_context("/", base_url="http://10.0.0.5:8000/"):
            assert url_for("health.healthz", _external=True) == "http://10.0.0.5:8000/healthz"
