"""A configuration the service cannot run with stops every Procfile process at start, with
the reason on stderr and no traceback.

With PostgreSQL, ``SECRET_KEY`` is required: hosts share the database, and a key generated
on one host would not open what another one signed or sealed, so no process may fall back
to a key of its own there (and none leaves a ``var/`` folder behind).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.test_procfile import procfile

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def start(name: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the Procfile's ``name`` process until it exits (it is expected to refuse)."""
    return subprocess.run(
        ["bash", "-c", f"exec {procfile()[name]}"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["web", "worker", "beat", "release"])
def test_each_process_refuses_to_start_without_secret_key(name, fresh_host):
    folder, env = fresh_host
    del env["SECRET_KEY"]
    result = start(name, folder, env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DATABASE_URL is PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (folder / "var").exists()


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of json, text"),
        ("EXPORT_STORAGE", "s3", "EXPORT_STORAGE must be one of database, filesystem"),
        ("BEAT_LOCK_SECONDS", "1", "BEAT_LOCK_SECONDS must be 2 or more"),
    ],
)
@pytest.mark.parametrize("name", ["web", "worker"])
def test_a_bad_variable_stops_the_process_with_its_reason(
    name, variable, value, message, fresh_host
):
    folder, env = fresh_host
    env[variable] = value
    result = start(name, folder, env)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
