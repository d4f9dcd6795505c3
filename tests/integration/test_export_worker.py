"""Exports built by a real Celery worker: progress on a large export, and the embedded defaults."""

from __future__ import annotations

import shutil
import time

import pytest
from sqlalchemy import create_engine

from api.app import create_app
from bench.data import fill_events
from tests.e2e.test_read_api import auth, deliver
from tests.factories import RecordingPublisher, make_settings, make_tenant, notification
from tests.integration.processes import celery_worker
from worker.sequencer import sequence_pending

ROWS = 200_000


def watch(client, tenant, export_id: str, timeout: float) -> tuple[dict, list[float]]:
    """Poll an export until it ends; return its last state and every progress value seen."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/v1/exports/{export_id}", headers=auth(tenant)).json
        seen.append(state["progress"])
        if state["status"] in ("succeeded", "failed"):
            return state, seen
        time.sleep(0.05)
    raise AssertionError(f"export still {state['status']} after {timeout}s")


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
class TestLargeExport:
    def test_200k_rows_show_intermediate_progress(self, tmp_path, postgres_url, shared_redis_url):
        settings = make_settings(
            tmp_path / "var",
            database_url=postgres_url,
            redis_url=shared_redis_url,
        )
        app = create_app(settings)
        database = app.extensions["auditlog"].database
        tenant = make_tenant(database, settings)
        engine = create_engine(postgres_url)
        with engine.begin() as connection:
            fill_events(connection, ROWS, org_id=tenant.org_id)
        engine.dispose()
        # Numbered here, before the request: what is under test is the build's progress, not
        # whether a slow machine's sequencer numbers 200,000 events within the export's
        # 60 s wait (on a CPU three times slower than usual it took about a minute).
        sequenced, deadline = 0, time.monotonic() + 600
        while sequenced < ROWS:
            assert time.monotonic() < deadline, f"sequenced {sequenced:,} of {ROWS:,}"
            outcome = sequence_pending(database, settings)
            sequenced += outcome.events
            if not outcome.events:
                time.sleep(0.1)  # the horizon waits for a transaction open elsewhere
        client = app.test_client()
        try:
            with celery_worker(settings) as worker:
                export = client.post("/v1/exports", json={}, headers=auth(tenant)).json
                state, seen = watch(client, tenant, export["id"], timeout=240)
                assert state["status"] == "succeeded", (state["error"], worker.output()[-3000:])
            intermediate = sorted({value for value in seen if 0.0 < value < 1.0})
            assert len(intermediate) >= 2, seen
            assert state["rows_written"] == state["rows_total"] == ROWS
            lines = 0
            with client.get(state["download_url"]) as response:
                assert response.status_code == 200
                for block in response.response:  # streamed, a chunk at a time
                    lines += block.count(b"\n")
            assert lines == ROWS + 1
            assert not settings.export_dir.exists()  # the file is in the database
        finally:
            database.engine.dispose()


class TestEmbeddedDefaults:
    def test_an_export_on_sqlite_and_the_filesystem_broker(self, tmp_path, sqlite_template):
        database_path = tmp_path / "auditlog.sqlite3"
        shutil.copyfile(sqlite_template, database_path)
        settings = make_settings(
            tmp_path / "var",
            database_url=f"sqlite:///{database_path}",
        )
        assert settings.redis_url is None
        publisher = RecordingPublisher()
        app = create_app(settings, publish=publisher)
        database = app.extensions["auditlog"].database
        client = app.test_client()
        tenant = make_tenant(database, settings)
        deliver(client, tenant, publisher, database, [notification() for _ in range(30)])
        with celery_worker(settings) as worker:
            export = client.post(
                "/v1/exports", json={"entity_type": "person"}, headers=auth(tenant)
            ).json
            state, _ = watch(client, tenant, export["id"], timeout=60)
            assert state["status"] == "succeeded", worker.output()[-3000:]
        assert state["rows_written"] == 30
        link = state["download_url"]
        with client.get(link) as response:
            assert response.status_code == 200
            assert response.data.decode("utf-8-sig").count("\n") == 31
        database.engine.dispose()

    def test_a_jsonl_export_built_by_the_worker_verifies(self, tmp_path, sqlite_template, capsys):
        """The task signs with the worker's own settings (its environment), which the
        service's published key then verifies."""
        import json

        from api.cli import main

        database_path = tmp_path / "auditlog.sqlite3"
        shutil.copyfile(sqlite_template, database_path)
        settings = make_settings(tmp_path / "var", database_url=f"sqlite:///{database_path}")
        publisher = RecordingPublisher()
        app = create_app(settings, publish=publisher)
        database = app.extensions["auditlog"].database
        client = app.test_client()
        tenant = make_tenant(database, settings)
        deliver(client, tenant, publisher, database, [notification() for _ in range(12)])
        with celery_worker(settings) as worker:
            export = client.post("/v1/exports", json={"format": "jsonl"}, headers=auth(tenant)).json
            state, _ = watch(client, tenant, export["id"], timeout=60)
            assert state["status"] == "succeeded", worker.output()[-3000:]
        assert (state["format"], state["tree_size"], state["rows_written"]) == ("jsonl", 12, 12)
        with client.get(state["download_url"]) as response:
            assert response.mimetype == "application/x-ndjson"
            (tmp_path / "export.jsonl").write_bytes(response.data)
        evidence = client.get(f"/v1/exports/{export['id']}/evidence", headers=auth(tenant))
        (tmp_path / "evidence.json").write_bytes(evidence.data)
        (key,) = client.get("/v1/log/keys").json["keys"]
        database.engine.dispose()
        capsys.readouterr()
        code = main(
            [
                "verify",
                str(tmp_path / "export.jsonl"),
                "--evidence",
                str(tmp_path / "evidence.json"),
                "--key",
                key["vkey"],
            ]
        )
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        verified = json.loads(out)
        assert verified == {
            "verified": 12,
            "tree_size": 12,
            "complete": True,
            "origin": verified["origin"],
        }
        assert verified["origin"] == f"{settings.log_origin}/{tenant.org_id}"


@pytest.mark.postgres
def test_the_copy_export_labels_every_catalog_type_as_the_catalog_does(postgres_url):
    """The COPY renderer looks labels up in SQL; the API and the Python renderer use
    ``label_of``. Every code, and one the catalog does not hold (no label, as before)."""
    from storage.catalog import EVENT_TYPES, label_of
    from storage.queries import _labels

    codes = [t.code for t in EVENT_TYPES] + ["person.not_in_the_catalog"]
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                f"SELECT e.type, {_labels()} FROM unnest(%(codes)s::text[]) AS e(type)",
                {"codes": codes},
            ).all()
    finally:
        engine.dispose()
    found = dict(rows)
    assert found.pop("person.not_in_the_catalog") is None
    assert found == {code: label_of(code) for code in codes[:-1]}
