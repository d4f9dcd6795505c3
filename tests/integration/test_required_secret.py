"""With PostgreSQL, every Procfile process refuses to start without ``SECRET_KEY``.

Hosts share the database: a key generated on one host would not open what another one
signed or sealed, so no process may fall back to a key of its own there. Each says why on
stderr, exits non-zero, and leaves no ``var/`` folder behind.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.test_procfile import procfile

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.mark.parametrize("name", ["web", "worker", "beat", "release"])
def test_each_process_refuses_to_start_without_secret_key(name, fresh_host):
    folder, env = fresh_host
    del env["SECRET_KEY"]
    result = subprocess.run(
        ["bash", "-c", f"exec {procfile()[name]}"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DATABASE_URL is PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (folder / "var").exists()
