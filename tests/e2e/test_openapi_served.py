"""schemathesis with every check, from outside, against the document the server serves.

The app runs in a real HTTP server on a free loopback port, with an organisation, a key, a
source, recorded events, a signed checkpoint and a finished export; the schemathesis command
line then runs every phase (examples, coverage, fuzzing, stateful through the document's
links) with ``--checks all``. Its settings are in ``schemathesis.toml`` and
``schemathesis_hooks.py`` beside this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from api.app import create_app
from tests.factories import console_story, make_tenant, record_now
from worker.exports import build_export
from worker.sequencer import sequence_pending

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.fixture
def served(settings, database, publisher) -> Iterator[tuple[str, str]]:
    app = create_app(
        settings, database=database, publish=publisher, start_export=lambda export_id: None
    )
    client = app.test_client()
    tenant = make_tenant(database, settings)
    record_now(client, tenant, database, *console_story())
    sequence_pending(database, settings)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    export = client.post("/v1/exports", json={}, headers=headers).get_json()
    status = build_export(
        database, export["id"], settings.export_dir, settings.export_ttl_seconds, settings=settings
    )
    assert status == "succeeded"
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}", tenant.api_key
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
@pytest.mark.slow
def test_schemathesis_with_every_check_reports_no_failure(served, tmp_path):
    url, api_key = served
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{url}/v1/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {api_key}",
        "--max-examples",
        "8",
        # One worker: schemathesis' threads compiling patterns at once trip a CPython 3.11
        # SystemError ("AST constructor recursion depth mismatch") now and then.
        "--workers",
        "1",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    run = subprocess.run(
        # Its own folder: schemathesis keeps a .schemathesis/ cache where it runs.
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    # Every operation of the document was tested, in every phase, stateful included.
    assert "Tested: 21" in report, report
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report
