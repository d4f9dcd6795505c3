"""Exports through HTTP, built by the worker's function, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import dataclasses
import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from itsdangerous import URLSafeTimedSerializer

from api.app import create_app
from storage import blobs
from storage.models import Export, ExportChunk
from tests.e2e.test_read_api import auth, decorated_history, deliver, fetch_all
from tests.factories import make_tenant, notification
from worker import exports as worker_exports
from worker.exports import COLUMNS, build_export, expire_exports, fail_export


class RecordingStarter:
    def __init__(self) -> None:
        self.started: list[str] = []

    def __call__(self, export_id: str) -> None:
        self.started.append(export_id)


@pytest.fixture
def starter() -> RecordingStarter:
    return RecordingStarter()


@pytest.fixture
def app(settings, database, publisher, starter):
    return create_app(settings, database=database, publish=publisher, start_export=starter)


@pytest.fixture
def tenant(client, database, settings, publisher):
    tenant = make_tenant(database, settings)
    deliver(client, tenant, publisher, database, decorated_history(random.Random(8), 150, "x"))
    return tenant


def request_export(client, tenant, filters: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/exports", json=filters, headers=auth(tenant))
    assert response.status_code == 202, response.json
    assert response.headers["Location"].endswith(f"/v1/exports/{response.json['id']}")
    return response.json


def build(database, settings, export_id: str) -> None:
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


def stored_chunks(database, export_id: str) -> list[tuple[str, int, int]]:
    """``(attempt, n, bytes)`` of every chunk the database holds for the export."""
    from sqlalchemy import func, select

    chunks = ExportChunk.__table__
    with database.unit_of_work() as session:
        rows = session.execute(
            select(chunks.c.attempt, chunks.c.n, func.length(chunks.c.data))
            .where(chunks.c.export_id == export_id)
            .order_by(chunks.c.attempt, chunks.c.n)
        )
        return [(row[0], int(row[1]), int(row[2])) for row in rows]


def fetch(client, path: str, **kwargs: Any) -> tuple[int, bytes]:
    """GET and close (a file response holds its file open until closed)."""
    with client.get(path, **kwargs) as response:
        return response.status_code, response.data


def download(client, tenant, export_id: str) -> list[dict[str, str]]:
    status, body = fetch(client, f"/v1/exports/{export_id}/download", headers=auth(tenant))
    assert status == 200
    assert body.startswith("\ufeff".encode())
    text = body.decode("utf-8")[1:]
    assert text.endswith("\n")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    assert header == COLUMNS
    return [dict(zip(header, row, strict=True)) for row in reader]


def as_cells(event: dict[str, Any]) -> dict[str, str]:
    """What the CSV must hold for an API event (written here independently of worker.exports)."""

    def text(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            import json

            value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return (
            "'" + value
            if value[:1] in ("=", "+", "-", "@", "\t", "\r", "\x00") and value
            else value
        )

    targets = "; ".join(
        f"{t['type']}:{t['id']}" + (f" ({t['name']})" if t["name"] is not None else "")
        for t in event["targets"]
    )
    return {
        "occurred_at": event["occurred_at"],
        "event_type": event["type"],
        "event": event["label"],
        "entity_type": event["entity"]["type"],
        "entity_id": event["entity"]["id"],
        "entity_name": text(event["entity"]["name"]),
        "targets": text(targets),
        "property": text(event["property"]),
        "old_value": text(event["old_value"]),
        "new_value": text(event["new_value"]),
        "actor_type": event["actor"]["type"],
        "actor_id": text(event["actor"]["id"]),
        "actor_name": text(event["actor"]["name"]),
        "actor_email": text(event["actor"]["email"]),
        "ip_address": text(event["ip_address"]),
        "origin": event["origin"],
        "event_id": event["id"],
    }


EXPORT_FILTERS = [
    {},
    {"entity_type": "person"},
    {"event_type": ["person.*", "app.created"]},
    {"event_type": "team.*", "since": "2026-11-01T00:10:00Z"},
    {"ip": "2001:db8::/32", "actor_id": "p-admin"},
    {"entity_type": "app", "entity_id": "a1", "until": "2026-11-01T02:00:00Z"},
]


class TestContent:
    def test_the_csv_equals_the_api_for_the_same_filters(self, client, tenant, database, settings):
        for filters in EXPORT_FILTERS:
            export = request_export(client, tenant, filters)
            assert export["filters"] == filters
            build(database, settings, export["id"])
            rows = download(client, tenant, export["id"])
            query = {k: ",".join(v) if isinstance(v, list) else v for k, v in filters.items()}
            expected = [as_cells(e) for e in fetch_all(client, tenant, "/v1/events", **query)]
            assert rows == expected, filters

    def test_only_events_recorded_before_the_request(
        self, client, tenant, database, settings, publisher
    ):
        before = fetch_all(client, tenant, "/v1/events")
        export = request_export(client, tenant, {})
        later = [
            notification("person", f"late-{i}", occurred_at="2026-12-01T00:00:00Z")
            for i in range(20)
        ]
        deliver(client, tenant, publisher, database, later)
        build(database, settings, export["id"])
        rows = download(client, tenant, export["id"])
        assert [row["event_id"] for row in rows] == [e["id"] for e in before]
        status = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json
        assert (status["rows_written"], status["rows_total"], status["progress"]) == (
            len(before),
            len(before),
            1.0,
        )

    def test_formulas_are_neutralised_and_text_round_trips(
        self, client, database, settings, publisher
    ):
        tenant = make_tenant(database, settings)
        nasty = {
            "eq": '=HYPERLINK("http://x")',
            "plus": "+1",
            "minus": "-2",
            "at": "@SUM(A1)",
            "tab": "\tx",
            "cr": "\rx",
            "quote": 'say "hi", then\nleave',
            "accents": "Zoë Ærø 東京",
            "number": -7,
        }
        deliver(
            client,
            tenant,
            publisher,
            database,
            [notification("person", "p1", properties={"name": "Ada"})],
        )
        patch = notification(
            "person", "p1", kind="patch", occurred_at="2026-11-25T11:00:00Z", properties=nasty
        )
        deliver(client, tenant, publisher, database, [patch])
        export = request_export(client, tenant, {"event_type": "person.property_updated"})
        build(database, settings, export["id"])
        by_property = {
            row["property"]: row["new_value"] for row in download(client, tenant, export["id"])
        }
        assert by_property == {
            "eq": '\'=HYPERLINK("http://x")',
            "plus": "'+1",
            "minus": "'-2",
            "at": "'@SUM(A1)",
            "tab": "'\tx",
            "cr": "'\rx",
            "quote": 'say "hi", then\nleave',
            "accents": "Zoë Ærø 東京",
            "number": "'-7",
        }

    def test_rows_written_counts_rows_whatever_the_cells_hold(
        self, client, database, settings, publisher
    ):
        """A cell may hold what ends a row (an event id, then a newline) without ending one."""
        tenant = make_tenant(database, settings)
        lookalike = "evt_0123456789abcdef\n"
        deliver(
            client,
            tenant,
            publisher,
            database,
            [notification("person", "p1", properties={"name": "Ada"})]
            + [
                notification(
                    "person",
                    "p1",
                    kind="patch",
                    occurred_at=f"2026-11-25T1{i + 1}:00:00Z",
                    properties={"note": lookalike * (i + 1), "title": f"{lookalike}{i}"},
                )
                for i in range(3)
            ],
        )
        export = request_export(client, tenant, {})
        build(database, settings, export["id"])
        rows = download(client, tenant, export["id"])
        assert len(rows) == 7
        assert rows[0]["new_value"] == lookalike + "2"
        status = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json
        assert (status["rows_written"], status["rows_total"]) == (7, 7)


class TestLifecycle:
    def test_before_success_409_then_key_and_link_work(
        self, client, tenant, database, settings, starter
    ):
        export = request_export(client, tenant, {"entity_type": "person"})
        assert starter.started == [export["id"]]
        assert export["status"] == "queued" and export["progress"] == 0.0
        assert export["download_url"] is None
        path = f"/v1/exports/{export['id']}/download"
        assert client.get(path, headers=auth(tenant)).status_code == 409
        build(database, settings, export["id"])
        done = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json
        assert done["status"] == "succeeded"
        assert done["expires_at"] and done["finished_at"] and done["started_at"]
        link = done["download_url"]
        assert fetch(client, link)[0] == 200
        assert fetch(client, path, headers=auth(tenant))[0] == 200
        assert fetch(client, path)[0] == 401

    def test_an_altered_or_outdated_link_is_403(self, client, tenant, database, settings):
        export = request_export(client, tenant, {})
        build(database, settings, export["id"])
        link = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json["download_url"]
        altered = link[:-2] + ("xx" if not link.endswith("xx") else "yy")
        assert client.get(altered).status_code == 403

        old = URLSafeTimedSerializer(settings.secret_key, salt="auditlog.export-link.v1")
        from itsdangerous import TimestampSigner

        class PastSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int((datetime.now(UTC) - timedelta(minutes=16)).timestamp())

        old.signer = PastSigner
        token = old.dumps({"export": export["id"], "org": tenant.org_id})
        outdated = client.get(f"/v1/exports/{export['id']}/download", query_string={"token": token})
        assert outdated.status_code == 403
        other = request_export(client, tenant, {})
        build(database, settings, other["id"])
        fresh = URLSafeTimedSerializer(settings.secret_key, salt="auditlog.export-link.v1")
        wrong_export = fresh.dumps({"export": export["id"], "org": tenant.org_id})
        response = client.get(
            f"/v1/exports/{other['id']}/download", query_string={"token": wrong_export}
        )
        assert response.status_code == 403

    def test_expired_exports_answer_410_and_lose_their_file(
        self, client, tenant, database, settings
    ):
        export = request_export(client, tenant, {})
        build(database, settings, export["id"])
        later = datetime.now(UTC) + timedelta(seconds=settings.export_ttl_seconds + 1)
        assert expire_exports(database, later) == 1
        status = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json
        assert status["status"] == "expired"
        assert (
            client.get(f"/v1/exports/{export['id']}/download", headers=auth(tenant)).status_code
            == 410
        )
        assert stored_chunks(database, export["id"]) == []
        assert not list(settings.export_dir.glob(f"{export['id']}*"))

    def test_past_expires_at_it_is_expired_and_410_before_any_sweep(
        self, client, tenant, database, settings
    ):
        export = request_export(client, tenant, {})
        long_ago = datetime.now(UTC) - timedelta(seconds=settings.export_ttl_seconds + 60)
        built = build_export(
            database,
            export["id"],
            settings.export_dir,
            settings.export_ttl_seconds,
            clock=lambda: long_ago,
            settings=settings,
        )
        assert built == "succeeded"
        status = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json
        assert (status["status"], status["download_url"]) == ("expired", None)
        listed = client.get("/v1/exports", headers=auth(tenant)).json["exports"]
        assert [e["status"] for e in listed] == ["expired"]
        path = f"/v1/exports/{export['id']}/download"
        assert fetch(client, path, headers=auth(tenant))[0] == 410
        signer = URLSafeTimedSerializer(settings.secret_key, salt="auditlog.export-link.v1")
        token = signer.dumps({"export": export["id"], "org": tenant.org_id})
        assert fetch(client, path, query_string={"token": token})[0] == 410

    def test_another_organisations_export_is_404(self, client, tenant, database, settings):
        export = request_export(client, tenant, {})
        build(database, settings, export["id"])
        other = make_tenant(database, settings)
        assert client.get(f"/v1/exports/{export['id']}", headers=auth(other)).status_code == 404
        assert (
            client.get(f"/v1/exports/{export['id']}/download", headers=auth(other)).status_code
            == 404
        )
        assert client.get("/v1/exports", headers=auth(other)).json == {"exports": []}

    def test_the_list_is_newest_first(self, client, tenant):
        ids = [request_export(client, tenant, {})["id"] for _ in range(3)]
        listed = client.get("/v1/exports", headers=auth(tenant)).json["exports"]
        assert [e["id"] for e in listed] == list(reversed(ids))

    @pytest.mark.parametrize(
        "body, status",
        [
            ({"limit": 10}, 400),
            ({"cursor": "x"}, 400),
            ({"colour": "red"}, 400),
            ({"entity_type": "robot"}, 422),
            ({"event_type": ["person.*", 3]}, 422),
            ({"ip": "nope"}, 422),
            ({"entity_id": "p1"}, 422),
            ({"format": "xml"}, 422),
            ({"format": ["csv"]}, 422),
            ({"format": None}, 422),
        ],
    )
    def test_the_filters_follow_the_logs_400_and_422_rules(self, client, tenant, body, status):
        response = client.post("/v1/exports", json=body, headers=auth(tenant))
        assert response.status_code == status, response.json


class TestSnapshotAndFormats:
    def test_the_export_names_its_tree_size_and_checkpoint(
        self, client, tenant, database, settings
    ):
        export = request_export(client, tenant, {"entity_type": "person"})
        assert (export["format"], export["tree_size"], export["checkpoint"]) == ("csv", None, None)
        assert export["filters"] == {"entity_type": "person"}
        build(database, settings, export["id"])
        done = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json
        everything = fetch_all(client, tenant, "/v1/events")
        # Every event recorded before the request, all of them sequenced by the build.
        assert done["tree_size"] == len(everything)
        assert sorted(e["seq"] for e in everything) == list(range(1, len(everything) + 1))
        checkpoint = client.get("/v1/log/checkpoint", headers=auth(tenant)).json
        assert done["checkpoint"].startswith(f"{settings.log_origin}/{tenant.org_id}\n")
        assert done["checkpoint"].split("\n")[1] == str(done["tree_size"])
        assert checkpoint["tree_size"] >= done["tree_size"]

    def test_later_events_stay_out_even_once_sequenced(
        self, client, tenant, database, settings, publisher
    ):
        from worker.sequencer import sequence_pending

        before = fetch_all(client, tenant, "/v1/events")
        export = request_export(client, tenant, {"format": "jsonl"})
        later = [
            notification("person", f"late-{i}", occurred_at="2026-12-01T00:00:00Z")
            for i in range(5)
        ]
        deliver(client, tenant, publisher, database, later)
        sequence_pending(database, settings)
        build(database, settings, export["id"])
        done = client.get(f"/v1/exports/{export['id']}", headers=auth(tenant)).json
        assert done["tree_size"] == len(before)
        lines = download_jsonl(client, tenant, export["id"])
        assert [line["id"] for line in lines] == [e["id"] for e in before]
        assert max(line["seq"] for line in lines) == done["tree_size"]

    def test_jsonl_holds_the_api_event_objects_in_the_logs_order(
        self, client, tenant, database, settings
    ):
        for filters in EXPORT_FILTERS:
            export = request_export(client, tenant, {**filters, "format": "jsonl"})
            assert export["filters"] == filters and export["format"] == "jsonl"
            build(database, settings, export["id"])
            query = {k: ",".join(v) if isinstance(v, list) else v for k, v in filters.items()}
            expected = fetch_all(client, tenant, "/v1/events", **query)
            assert download_jsonl(client, tenant, export["id"]) == expected, filters
            assert all(event["seq"] is not None for event in expected)
        assert not settings.export_dir.exists()  # every file is in the database

    def test_jsonl_lines_are_compact_utf8_json(self, client, database, settings, publisher):
        tenant = make_tenant(database, settings)
        deliver(
            client,
            tenant,
            publisher,
            database,
            [notification("person", "p1", properties={"name": "Zoë \u2028 東京\n=1"})],
        )
        export = request_export(client, tenant, {"format": "jsonl"})
        build(database, settings, export["id"])
        with client.get(f"/v1/exports/{export['id']}/download", headers=auth(tenant)) as response:
            assert response.status_code == 200
            assert response.mimetype == "application/x-ndjson"
            assert export["id"] + ".jsonl" in response.headers["Content-Disposition"]
            body = response.data
        import json

        (line,) = body.decode("utf-8").split("\n")[:-1]  # U+2028 is no line end in JSONL
        event = json.loads(line)
        # Raw UTF-8 and U+2028 (ensure_ascii off), the newline escaped, nothing neutralised.
        assert "Zoë \u2028 東京\\n=1".encode() in body
        assert event["entity"]["name"] == "Zoë \u2028 東京\n=1"
        assert (
            body == (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        )


def download_jsonl(client, tenant, export_id: str) -> list[dict[str, Any]]:
    import json

    status, body = fetch(client, f"/v1/exports/{export_id}/download", headers=auth(tenant))
    assert status == 200
    text = body.decode("utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def build_with(database, settings, export_id: str, storage: str) -> None:
    chosen = dataclasses.replace(settings, export_storage=storage)
    assert (
        build_export(
            database, export_id, chosen.export_dir, chosen.export_ttl_seconds, settings=chosen
        )
        == "succeeded"
    )


def export_row(database, export_id: str) -> Export:
    with database.unit_of_work() as session:
        found = session.get(Export, export_id)
        assert found is not None
        return found


class TestStorage:
    """Files live in the database by default, in chunks; EXPORT_STORAGE=filesystem keeps a
    folder. Either way only the build that made the export succeed is ever served."""

    def test_a_file_of_many_chunks_streams_back_whole(
        self, client, tenant, database, settings, monkeypatch
    ):
        on_disk = request_export(client, tenant, {})
        in_chunks = request_export(client, tenant, {})
        build_with(database, settings, on_disk["id"], "filesystem")
        monkeypatch.setattr(blobs, "CHUNK_BYTES", 997)
        build_with(database, settings, in_chunks["id"], "database")
        with client.get(f"/v1/exports/{on_disk['id']}/download", headers=auth(tenant)) as response:
            expected = response.data
        with client.get(
            f"/v1/exports/{in_chunks['id']}/download", headers=auth(tenant)
        ) as response:
            assert response.status_code == 200
            assert response.mimetype == "text/csv"
            assert f"{in_chunks['id']}.csv" in response.headers["Content-Disposition"]
            assert response.headers["Content-Length"] == str(len(expected))
            assert response.data == expected
        sizes = [size for _, _, size in stored_chunks(database, in_chunks["id"])]
        assert len(sizes) == -(-len(expected) // 997) > 10
        assert set(sizes[:-1]) == {997} and 0 < sizes[-1] <= 997
        assert export_row(database, in_chunks["id"]).file_path == "db:" + str(
            stored_chunks(database, in_chunks["id"])[0][0]
        )

    def test_ranges_heads_and_etags_work_on_a_streamed_file(
        self, client, tenant, database, settings, monkeypatch
    ):
        monkeypatch.setattr(blobs, "CHUNK_BYTES", 1000)
        export = request_export(client, tenant, {})
        build(database, settings, export["id"])
        path = f"/v1/exports/{export['id']}/download"
        with client.get(path, headers=auth(tenant)) as response:
            whole, etag = response.data, response.headers["ETag"]
            assert response.headers["Accept-Ranges"] == "bytes"
        with client.get(path, headers={**auth(tenant), "Range": "bytes=1500-3499"}) as response:
            assert response.status_code == 206
            assert response.headers["Content-Range"] == f"bytes 1500-3499/{len(whole)}"
            assert response.data == whole[1500:3500]
        with client.get(path, headers={**auth(tenant), "Range": f"bytes={len(whole)}-"}) as r:
            assert r.status_code == 416
        with client.head(path, headers=auth(tenant)) as response:
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(len(whole))
            assert response.data == b""
        with client.get(path, headers={**auth(tenant), "If-None-Match": etag}) as response:
            assert response.status_code == 304

    def test_a_build_retried_after_a_crash_serves_only_its_own_attempt(
        self, client, tenant, database, settings, monkeypatch
    ):
        reference = request_export(client, tenant, {})
        build(database, settings, reference["id"])
        expected = fetch(client, f"/v1/exports/{reference['id']}/download", headers=auth(tenant))
        export = request_export(client, tenant, {})
        monkeypatch.setattr(blobs, "CHUNK_BYTES", 500)
        # A worker that died mid-way left its chunks behind, never referenced.
        dead = blobs.DatabaseWriter(database, export["id"])
        dead.write(b"garbage that must never be served\n" * 100)
        dead.close()
        assert {attempt for attempt, _, _ in stored_chunks(database, export["id"])} == {
            dead.attempt
        }
        build(database, settings, export["id"])
        assert fetch(client, f"/v1/exports/{export['id']}/download", headers=auth(tenant)) == (
            expected
        )
        attempts = {attempt for attempt, _, _ in stored_chunks(database, export["id"])}
        assert len(attempts) == 1 and dead.attempt not in attempts
        assert export_row(database, export["id"]).file_path == "db:" + attempts.pop()

    def test_a_build_that_fails_mid_way_leaves_no_chunks(
        self, client, tenant, database, settings, monkeypatch
    ):
        export = request_export(client, tenant, {})
        monkeypatch.setattr(blobs, "CHUNK_BYTES", 100)

        def half_then_fail(database, handle, *args: Any) -> int:
            handle.write(b"x" * 1000)
            raise RuntimeError("the disk caught fire")

        monkeypatch.setattr(worker_exports, "_python_rows", half_then_fail)
        monkeypatch.setattr(worker_exports, "_copy_rows", half_then_fail)
        with pytest.raises(RuntimeError, match="caught fire"):
            build(database, settings, export["id"])
        assert stored_chunks(database, export["id"]) == []
        assert export_row(database, export["id"]).file_path is None
        path = f"/v1/exports/{export['id']}/download"
        assert fetch(client, path, headers=auth(tenant))[0] == 409

    def test_a_failed_export_loses_what_dead_attempts_left(
        self, client, tenant, database, settings
    ):
        export = request_export(client, tenant, {})
        dead = blobs.DatabaseWriter(database, export["id"])
        dead.write(b"half a file")
        dead.close()
        fail_export(database, export["id"], "gave up", datetime.now(UTC))
        assert stored_chunks(database, export["id"]) == []
        assert export_row(database, export["id"]).status == "failed"

    def test_chunks_deleted_under_a_served_export_make_it_410(
        self, client, tenant, database, settings
    ):
        export = request_export(client, tenant, {})
        build(database, settings, export["id"])
        with database.unit_of_work(write=True) as session:
            blobs.delete_chunks(session, [export["id"]])
            session.commit()
        status, body = fetch(client, f"/v1/exports/{export['id']}/download", headers=auth(tenant))
        assert status == 410 and b"export_expired" in body

    def test_an_empty_jsonl_file_is_stored_and_served(self, client, database, settings):
        tenant = make_tenant(database, settings)
        export = request_export(client, tenant, {"format": "jsonl"})
        build(database, settings, export["id"])
        with client.get(f"/v1/exports/{export['id']}/download", headers=auth(tenant)) as response:
            assert (response.status_code, response.data) == (200, b"")
            assert response.headers["Content-Length"] == "0"
        assert [size for _, _, size in stored_chunks(database, export["id"])] == [0]

    def test_the_filesystem_store_keeps_the_file_under_export_dir(
        self, client, tenant, database, settings
    ):
        export = request_export(client, tenant, {"format": "jsonl"})
        build_with(database, settings, export["id"], "filesystem")
        final = settings.export_dir / f"{export['id']}.jsonl"
        assert [p.name for p in settings.export_dir.iterdir()] == [final.name]
        assert export_row(database, export["id"]).file_path == str(final)
        assert stored_chunks(database, export["id"]) == []
        # The app, configured for the database store, serves it from where it was written.
        status, body = fetch(client, f"/v1/exports/{export['id']}/download", headers=auth(tenant))
        assert (status, body) == (200, final.read_bytes())
        later = datetime.now(UTC) + timedelta(seconds=settings.export_ttl_seconds + 1)
        assert expire_exports(database, later) == 1
        assert not final.exists()

    def test_a_chunk_insert_that_fails_is_raised_to_the_build(self, database, monkeypatch):
        from sqlalchemy.exc import IntegrityError

        monkeypatch.setattr(blobs, "CHUNK_BYTES", 10)
        writer = blobs.DatabaseWriter(database, "exp_that_does_not_exist")  # no such export
        with pytest.raises(IntegrityError):
            for _ in range(50):  # the insert thread's failure surfaces on a later write
                writer.write(b"0123456789")
            writer.close()
        writer.discard()
        assert stored_chunks(database, "exp_that_does_not_exist") == []
