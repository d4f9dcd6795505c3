"""``GET /v1/exports/<id>/evidence``: what proves an export file against its checkpoint."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.app import create_app
from storage import merkle, notes
from storage.canonical import event_leaf
from tests.factories import console_story, make_tenant, notification, record_now
from worker.exports import COLUMNS, build_export, event_cells
from worker.logcheck import Frontier


@pytest.fixture
def app(settings, database, publisher):
    return create_app(
        settings, database=database, publish=publisher, start_export=lambda export_id: None
    )


@pytest.fixture
def tenant(client, database, settings):
    tenant = make_tenant(database, settings)
    record_now(client, tenant, database, *console_story())
    return tenant


def auth(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def exported(client, tenant, database, settings, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/exports", json=body, headers=auth(tenant))
    assert response.status_code == 202, response.get_json()
    export_id = response.get_json()["id"]
    status = build_export(
        database, export_id, settings.export_dir, settings.export_ttl_seconds, settings=settings
    )
    assert status == "succeeded"
    return client.get(f"/v1/exports/{export_id}", headers=auth(tenant)).get_json()


def evidence_of(client, tenant, export_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/exports/{export_id}/evidence", headers=auth(tenant))
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == "application/json"
    return json.loads(response.data)


def file_of(client, tenant, export_id: str) -> bytes:
    with client.get(f"/v1/exports/{export_id}/download", headers=auth(tenant)) as response:
        assert response.status_code == 200
        return response.data


def signed(client, checkpoint: str) -> tuple[str, int, bytes]:
    keys = client.get("/v1/log/keys").get_json()["keys"]
    text = notes.open_note(checkpoint, [notes.NoteVerifier(key["vkey"]) for key in keys])
    return notes.parse_checkpoint(text)


def leaf_of(event: dict[str, Any]) -> bytes:
    return merkle.leaf_hash(event_leaf(event))


class TestEvidence:
    def test_a_complete_export_lists_every_leaf_of_its_signed_tree(
        self, client, tenant, database, settings
    ):
        export = exported(client, tenant, database, settings, {"format": "jsonl"})
        evidence = evidence_of(client, tenant, export["id"])
        origin, size, root = signed(client, export["checkpoint"])
        assert origin == f"{settings.log_origin}/{tenant.org_id}"
        assert size == export["tree_size"] == evidence["tree_size"]
        assert {k: evidence[k] for k in ("format", "export_id", "export_format", "org_id")} == {
            "format": "auditlog-evidence/1",
            "export_id": export["id"],
            "export_format": "jsonl",
            "org_id": tenant.org_id,
        }
        assert (evidence["complete"], evidence["filters"], evidence["checkpoint"]) == (
            True,
            {},
            export["checkpoint"],
        )
        frontier = Frontier()
        for digest in evidence["leaf_hashes"]:
            frontier.append(base64.b64decode(digest))
        assert frontier.size == size and frontier.root() == root
        lines = [json.loads(line) for line in file_of(client, tenant, export["id"]).splitlines()]
        by_seq = {event["seq"]: event for event in lines}
        assert sorted(by_seq) == list(range(1, size + 1))
        assert [base64.b64encode(leaf_of(by_seq[s])).decode() for s in sorted(by_seq)] == (
            evidence["leaf_hashes"]
        )

    def test_a_filtered_export_proves_each_row_in_file_order(
        self, client, tenant, database, settings
    ):
        export = exported(
            client, tenant, database, settings, {"entity_type": "person", "format": "jsonl"}
        )
        evidence = evidence_of(client, tenant, export["id"])
        _, size, root = signed(client, export["checkpoint"])
        lines = [json.loads(line) for line in file_of(client, tenant, export["id"]).splitlines()]
        assert evidence["complete"] is False and evidence["filters"] == {"entity_type": "person"}
        assert "leaf_hashes" not in evidence and "events" not in evidence
        assert [(row["line"], row["seq"]) for row in evidence["rows"]] == [
            (number, event["seq"]) for number, event in enumerate(lines, start=1)
        ]
        for row, event in zip(evidence["rows"], lines, strict=True):
            proof = [base64.b64decode(h) for h in row["proof"]]
            assert merkle.verify_inclusion(row["seq"] - 1, size, leaf_of(event), proof, root)

    def test_a_csv_export_carries_each_rows_event_object(self, client, tenant, database, settings):
        export = exported(client, tenant, database, settings, {"event_type": "person.*"})
        evidence = evidence_of(client, tenant, export["id"])
        text = file_of(client, tenant, export["id"]).decode("utf-8")[1:]
        records = list(csv.reader(io.StringIO(text, newline="")))
        assert records[0] == COLUMNS
        assert [event_cells(event) for event in evidence["events"]] == records[1:]
        api = client.get(
            "/v1/events?event_type=person.*&limit=500", headers=auth(tenant)
        ).get_json()["events"]
        assert evidence["events"] == api
        assert [row["seq"] for row in evidence["rows"]] == [e["seq"] for e in api]

    def test_a_chunked_evidence_is_one_document(
        self, client, tenant, database, settings, monkeypatch
    ):
        import worker.exports

        monkeypatch.setattr(worker.exports, "EVIDENCE_CHUNK", 3)
        record_now(client, tenant, database, *[notification() for _ in range(4)])
        complete = exported(client, tenant, database, settings, {})
        evidence = evidence_of(client, tenant, complete["id"])
        assert len(evidence["leaf_hashes"]) == len(evidence["events"]) == complete["tree_size"]
        filtered = exported(client, tenant, database, settings, {"entity_type": "person"})
        rows = evidence_of(client, tenant, filtered["id"])["rows"]
        assert [row["line"] for row in rows] == list(range(1, filtered["rows_written"] + 1))

    def test_an_export_of_an_empty_log_has_an_empty_tree(self, client, database, settings):
        empty = make_tenant(database, settings)
        export = exported(client, empty, database, settings, {"format": "jsonl"})
        assert (export["tree_size"], export["rows_written"]) == (0, 0)
        assert signed(client, export["checkpoint"])[1:] == (0, merkle.EMPTY_ROOT)
        evidence = evidence_of(client, empty, export["id"])
        assert evidence["leaf_hashes"] == []

    def test_an_export_requested_before_the_first_event_keeps_the_empty_tree(
        self, client, database, settings
    ):
        from worker.sequencer import sequence_pending

        late = make_tenant(database, settings)
        response = client.post("/v1/exports", json={}, headers=auth(late))
        record_now(client, late, database, notification())
        sequence_pending(database, settings)
        export_id = response.get_json()["id"]
        assert (
            build_export(
                database,
                export_id,
                settings.export_dir,
                settings.export_ttl_seconds,
                settings=settings,
            )
            == "succeeded"
        )
        export = client.get(f"/v1/exports/{export_id}", headers=auth(late)).get_json()
        assert (export["tree_size"], export["rows_written"]) == (0, 0)
        assert signed(client, export["checkpoint"])[1] == 0


class TestAccess:
    def test_409_before_success_404_elsewhere_401_without_a_key(
        self, client, tenant, database, settings
    ):
        response = client.post("/v1/exports", json={}, headers=auth(tenant))
        path = f"/v1/exports/{response.get_json()['id']}/evidence"
        early = client.get(path, headers=auth(tenant))
        assert early.status_code == 409
        assert early.get_json()["error"]["code"] == "export_not_ready"
        assert client.get(path).status_code == 401
        other = make_tenant(database, settings)
        assert client.get(path, headers=auth(other)).status_code == 404
        assert client.get("/v1/exports/exp_missing/evidence", headers=auth(tenant)).status_code == (
            404
        )

    def test_410_once_expired(self, client, tenant, database, settings):
        response = client.post("/v1/exports", json={}, headers=auth(tenant))
        export_id = response.get_json()["id"]
        long_ago = datetime.now(UTC) - timedelta(seconds=settings.export_ttl_seconds + 60)
        built = build_export(
            database,
            export_id,
            settings.export_dir,
            settings.export_ttl_seconds,
            clock=lambda: long_ago,
            settings=settings,
        )
        assert built == "succeeded"
        gone = client.get(f"/v1/exports/{export_id}/evidence", headers=auth(tenant))
        assert gone.status_code == 410
        assert gone.get_json()["error"]["code"] == "export_expired"
