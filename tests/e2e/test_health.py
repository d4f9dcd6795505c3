"""``/healthz``, ``/readyz`` and ``/metrics``: no key, no rate limit, figures that follow the
database, and a request counter labelled by URL rule rather than by path."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from api.app import create_app
from storage.models import Export
from tests.factories import make_tenant, notification, post_signed
from worker import processing, sequencer

METRIC_SAMPLES = {
    "auditlog_notifications",
    "auditlog_oldest_queued_seconds",
    "auditlog_http_requests_total",
    "auditlog_events_recorded_total",
    "auditlog_exports",
}


def scrape(client) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of ``/metrics``, by sample name."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name: str, **labels: str) -> float:
    found = [v for found_labels, v in samples[name] if found_labels == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


class TestProbes:
    def test_healthz_answers_ok_without_a_key(self, client):
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json == {"status": "ok"}

    def test_readyz_is_ready_with_the_database_and_the_filesystem_broker(self, client):
        response = client.get("/readyz")
        assert response.status_code == 200, response.json
        assert response.json == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}

    def test_readyz_names_a_missing_broker_folder(self, client, settings):
        shutil.rmtree(settings.var_dir / "broker")
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json["status"] == "unavailable"
        assert response.json["checks"]["database"] == "ok"
        assert response.json["checks"]["broker"] == "error: broker folder missing"

    def test_probes_are_not_in_the_openapi_document(self, client):
        paths = client.get("/v1/openapi.json").json["paths"]
        assert not {"/healthz", "/readyz", "/metrics"} & set(paths)

    def test_no_endpoint_here_is_rate_limited(self, settings, database, publisher):
        tight = dataclasses.replace(
            settings, api_rate_limit="1/minute", webhook_rate_limit="1/minute"
        )
        client = create_app(tight, database=database, publish=publisher).test_client()
        tenant = make_tenant(database, tight)
        headers = {"Authorization": f"Bearer {tenant.api_key}"}
        assert client.get("/v1/events", headers=headers).status_code == 200
        assert client.get("/v1/events", headers=headers).status_code == 429
        for path in ("/healthz", "/readyz", "/metrics") * 3:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.status_code)
            assert "X-RateLimit-Limit" not in response.headers


class TestMetrics:
    def test_every_metric_is_exposed_without_a_key(self, client):
        samples = scrape(client)
        assert METRIC_SAMPLES <= set(samples)
        assert value(samples, "auditlog_database_up") == 1
        for status in ("queued", "processed", "failed"):
            assert value(samples, "auditlog_notifications", status=status) == 0
        for status in ("queued", "running", "succeeded", "failed", "expired"):
            assert value(samples, "auditlog_exports", status=status) == 0
        assert value(samples, "auditlog_oldest_queued_seconds") == 0
        assert value(samples, "auditlog_events_recorded_total") == 0

    def test_the_gauges_follow_notifications_events_and_exports(
        self, client, database, settings, publisher
    ):
        tenant = make_tenant(database, settings)
        batch = {"notifications": [notification(), notification(), notification()]}
        assert post_signed(client, tenant, batch).status_code == 202
        samples = scrape(client)
        assert value(samples, "auditlog_notifications", status="queued") == 3
        assert value(samples, "auditlog_notifications", status="processed") == 0
        assert value(samples, "auditlog_oldest_queued_seconds") > 0

        for message in publisher.messages:
            processing.process_notifications(database, message, 1)
        samples = scrape(client)
        assert value(samples, "auditlog_notifications", status="queued") == 0
        assert value(samples, "auditlog_notifications", status="processed") == 3
        assert value(samples, "auditlog_oldest_queued_seconds") == 0
        # Recorded, not yet numbered: the sequencer lags, and the counter waits for it.
        assert value(samples, "auditlog_events_recorded_total") == 0
        assert value(samples, "auditlog_sequencing_lag_seconds") > 0

        numbered = sequencer.sequence_pending(database, settings).events
        assert numbered >= 3
        samples = scrape(client)
        assert value(samples, "auditlog_events_recorded_total") == numbered
        assert value(samples, "auditlog_sequencing_lag_seconds") == 0

        headers = {"Authorization": f"Bearer {tenant.api_key}"}
        assert client.post("/v1/exports", json={}, headers=headers).status_code == 202
        assert value(scrape(client), "auditlog_exports", status="queued") == 1
        # Succeeded and past expires_at: expired, as the API shows it, before beat says so.
        with database.unit_of_work(write=True) as session:
            session.execute(
                update(Export).values(
                    status="succeeded", expires_at=datetime.now(UTC) - timedelta(seconds=1)
                )
            )
            session.commit()
        samples = scrape(client)
        assert value(samples, "auditlog_exports", status="succeeded") == 0
        assert value(samples, "auditlog_exports", status="expired") == 1

    def test_requests_are_counted_by_url_rule_not_by_path(self, client, database, settings):
        tenant = make_tenant(database, settings)
        route = "/v1/webhooks/<source_id>"
        before = scrape(client)["auditlog_http_requests_total"]

        def count(samples, **labels: str) -> float:
            return sum(v for found, v in samples if found == labels)

        assert post_signed(client, tenant, notification()).status_code == 202
        assert client.post("/v1/webhooks/src_nope", data=b"{}").status_code in (404, 415)
        assert client.get(f"/nowhere/{tenant.source_id}").status_code == 404
        assert client.open("/nowhere", method="BREW").status_code in (404, 405)
        response = client.get("/metrics")
        text = response.get_data(as_text=True)
        assert tenant.source_id not in text and "src_nope" not in text

        after = scrape(client)["auditlog_http_requests_total"]
        labels = {"method": "POST", "route": route, "status": "202"}
        assert count(after, **labels) == count(before, **labels) + 1
        unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
        assert count(after, **unmatched) == count(before, **unmatched) + 1
        assert any(found["method"] == "other" for found, _ in after)
        assert {found["route"] for found, _ in after} >= {route, "/metrics", "unmatched"}
