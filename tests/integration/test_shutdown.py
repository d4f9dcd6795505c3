"""Every Procfile process stops promptly and cleanly on SIGTERM, as process managers send it.

honcho, systemd and container platforms signal the whole process group (pool processes
and gunicorn workers included); others only the main process. Either way an idle process
is gone within 2 s, a busy worker finishes its task first, nothing is left behind, and the
output holds no error: every line is a JSON log line below ERROR.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bench.services import BIN, Process, free_port
from storage.db import Database
from storage.models import Notification
from tests.integration.processes import children_of, wait_until
from tests.integration.test_procfile import start

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: What the process managers of the README allow an idle process, and what the test holds.
IDLE_STOP_SECONDS = 2.0


def assert_clean(name: str, output: str) -> None:
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"{name}: not a JSON line: {line!r}\n{output}") from None
        assert record["level"] not in ("ERROR", "CRITICAL"), f"{name}: {line}"
    assert "Traceback" not in output, f"{name}:\n{output}"


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_and_time(process: Process, whole_group: bool = True) -> float:
    """SIGTERM (to the group, or the main process only); seconds until the main one exited."""
    started = time.monotonic()
    if whole_group:
        os.killpg(process.process.pid, signal.SIGTERM)
    else:
        os.kill(process.process.pid, signal.SIGTERM)
    try:
        process.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 15 s after SIGTERM:\n{process.output()}") from None
    return time.monotonic() - started


def web_answers(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def web_workers_ready(process: Process) -> int:
    return len(re.findall(r'"message": "worker \d+ ready"', process.output()))


def wait_until_ready(name: str, process: Process, env: dict[str, str]) -> None:
    """Idle means started: every gunicorn worker has loaded the app (one that is still
    loading it finishes that first), the worker consumes, beat has sent a task."""
    if name == "web":
        wait_until(lambda: web_answers(env["PORT"]), 60, process.output())
        wait_until(lambda: web_workers_ready(process) >= 2, 60, process.output())
    elif name == "worker":
        process.wait_for_text("ready.", timeout=60)
    else:
        process.wait_for_text("Sending due task", timeout=60)


class TestIdleProcessesStopOnSigterm:
    def test_web_worker_and_beat_stop_within_two_seconds_of_a_group_sigterm(self, fresh_host):
        folder, env = fresh_host
        processes = {name: start(name, folder, env) for name in ("web", "worker", "beat")}
        try:
            for name, process in processes.items():
                wait_until_ready(name, process, env)
            # A pool process each, so that the group signal reaches children too.
            assert children_of(processes["worker"].process.pid)
            request = urllib.request.Request(
                f"http://127.0.0.1:{env['PORT']}/healthz", headers={"X-Request-ID": "probe-7"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.headers["X-Request-ID"] == "probe-7"
            took = {name: stop_and_time(process) for name, process in processes.items()}
            for name, process in processes.items():
                assert took[name] < IDLE_STOP_SECONDS, (name, took, process.output())
                wait_until(lambda p=process: group_is_gone(p.process.pid), 2, f"{name} left")
                assert process.process.returncode == 0, (name, process.output())
                assert_clean(name, process.output())
            assert "warm shutdown" in processes["worker"].output()
            access = [
                json.loads(line)
                for line in processes["web"].output().splitlines()
                if '"gunicorn.access"' in line and "probe-7" in line
            ]
            assert access and access[0]["path"] == "/healthz" and access[0]["status"] == 200
            assert not (folder / "var").exists()
        finally:
            for process in processes.values():
                process.stop()

    def test_a_worker_signalled_alone_stops_as_fast_and_takes_its_pool_along(self, fresh_host):
        folder, env = fresh_host
        worker = start("worker", folder, env)
        try:
            worker.wait_for_text("ready.", timeout=60)
            pool = children_of(worker.process.pid)
            assert pool
            took = stop_and_time(worker, whole_group=False)
            assert took < IDLE_STOP_SECONDS, (took, worker.output())
            wait_until(lambda: group_is_gone(worker.process.pid), 2, "pool processes left")
            assert worker.process.returncode == 0
            assert_clean("worker", worker.output())
        finally:
            worker.stop()


class TestABusyWorker:
    def test_finishes_its_task_before_it_stops(self, fresh_host, postgres_url):
        from api.app import create_app
        from tests.factories import make_settings, make_tenant, notification, post_signed

        folder, env = fresh_host
        settings = make_settings(
            folder.parent / "test-var",
            database_url=postgres_url,
            redis_url=env["REDIS_URL"],
            secret_key=env["SECRET_KEY"],
        )
        database = Database(settings.database_url)
        tenant = make_tenant(database, settings)
        client = create_app(settings, database=database).test_client()
        properties = {f"p{index}": "x" * 30 for index in range(25)}
        batch = {"notifications": [notification(properties=properties) for _ in range(1000)]}

        worker = start("worker", folder, env)
        try:
            worker.wait_for_text("ready.", timeout=60)
            assert post_signed(client, tenant, batch).status_code == 202
            worker.wait_for_text("received", timeout=30)
            os.killpg(worker.process.pid, signal.SIGTERM)
            worker.process.wait(timeout=60)
            with database.unit_of_work() as session:
                counts = dict(
                    session.execute(
                        select(Notification.status, func.count()).group_by(Notification.status)
                    ).all()
                )
            assert counts == {"processed": 1000}, (counts, worker.output())
            assert worker.process.returncode == 0
            output = worker.output()
            assert output.index("warm shutdown") < output.index("succeeded"), output
            assert_clean("worker", output)
        finally:
            worker.stop()
            database.engine.dispose()


def processes_marked(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (what a run left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


class TestMakeRun:
    def test_ctrl_c_on_honcho_returns_promptly_and_leaves_nothing(self, tmp_path: Path):
        """``make run``'s honcho on SQLite and the filesystem broker, stopped with Ctrl-C."""
        folder = tmp_path / "checkout"
        folder.mkdir()
        marker = f"AUDITLOG_TEST_RUN={uuid.uuid4().hex}"
        env: dict[str, Any] = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AUDITLOG_", "DATABASE_", "REDIS_", "SECRET_", "EXPORT_"))
        }
        env.update(PATH=f"{BIN}:{env.get('PATH', '')}", AUDITLOG_TEST_RUN=marker.split("=")[1])
        port = str(free_port())
        upgrade = subprocess.run(
            [str(BIN / "auditlog"), "db", "upgrade"], cwd=folder, env=env, capture_output=True
        )
        assert upgrade.returncode == 0, upgrade.stderr
        honcho = Process(
            [
                str(BIN / "honcho"),
                "-f",
                str(Path(__file__).resolve().parents[2] / "Procfile"),
                "-d",
                str(folder),
                "start",
                "--port",
                port,
                "web",
                "worker",
                "beat",
            ],
            env,
            tmp_path / "honcho.log",
            folder,
        )
        try:
            wait_until(lambda: web_answers(port), 60, honcho.output())
            honcho.wait_for_text("ready.", timeout=60)
            honcho.wait_for_text("Sending due task", timeout=60)
            started = time.monotonic()
            os.kill(honcho.process.pid, signal.SIGINT)  # what Ctrl-C sends honcho
            honcho.process.wait(timeout=30)
            took = time.monotonic() - started
            output = honcho.output()
            # honcho kills with SIGKILL what is still running 5 s after its SIGTERM.
            assert took < 4.5, (took, output)
            assert "SIGKILL" not in output, output
            assert "ERROR" not in output and "Traceback" not in output, output
            wait_until(lambda: not processes_marked(marker), 2, "processes left behind")
        finally:
            honcho.stop()
