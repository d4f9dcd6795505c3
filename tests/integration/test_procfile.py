"""Every Procfile process starts on a fresh host: a checkout with no ``var/`` folder and
nothing but ``DATABASE_URL``, ``REDIS_URL`` and ``SECRET_KEY`` in its environment."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest

from bench.services import Process
from tests.integration.processes import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


def procfile() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        name, _, command = line.partition(":")
        if command.strip():
            entries[name.strip()] = command.strip()
    return entries


def start(name: str, folder: Path, env: dict[str, str]) -> Process:
    return Process(
        ["bash", "-c", f"exec {procfile()[name]}"], env, folder.parent / f"{name}.log", folder
    )


class TestProcfile:
    def test_the_procfile_names_the_four_processes(self):
        assert set(procfile()) == {"web", "worker", "beat", "release"}

    def test_release_migrates_in_an_empty_checkout(self, fresh_host):
        folder, env = fresh_host
        result = subprocess.run(
            ["bash", "-c", procfile()["release"]],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert not (folder / "var").exists()

    def test_web_worker_and_beat_start_in_an_empty_checkout(self, fresh_host):
        folder, env = fresh_host
        processes = {name: start(name, folder, env) for name in ("web", "worker", "beat")}
        try:
            url = f"http://127.0.0.1:{env['PORT']}/v1/openapi.json"

            def web_answers() -> bool:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        return bool(response.status == 200)
                except OSError:
                    return False

            wait_until(web_answers, 60, processes["web"].output())
            processes["worker"].wait_for_text("ready.", timeout=60)
            # Beat is alive once it has sent a sweep (every second here) to the broker.
            processes["beat"].wait_for_text("Sending due task", timeout=60)
            for name, process in processes.items():
                assert process.process.poll() is None, f"{name} died:\n{process.output()}"
                assert "Traceback" not in process.output(), process.output()
            assert not (folder / "var").exists()
        finally:
            for process in processes.values():
                process.stop()
