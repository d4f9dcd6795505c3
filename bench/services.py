"""The processes a benchmark runs against: a database of its own, gunicorn, Celery workers."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from storage.settings import normalise_database_url

BIN = Path(sys.executable).parent
#: The fixed secret key of every process a run starts (and of the exporting process).
SECRET_KEY = "bench-secret-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchDatabase:
    """A PostgreSQL database created for one run and dropped after it."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = normalise_database_url(admin_url)
        self.name = f"auditlog_bench_{uuid.uuid4().hex[:8]}"
        self.url = self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    def __enter__(self) -> BenchDatabase:
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        return self

    def __exit__(self, *exc: object) -> None:
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        admin.dispose()


class Process:
    """A child process in its own group, logging to a file, stopped with its children."""

    def __init__(
        self, command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None
    ) -> None:
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_text(self, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.log_path.name}: no {needle!r}:\n{self.output()[-2000:]}")

    def stop(self) -> None:
        """Stop the whole group; safe to call again, and after the main process died."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:
            try:  # children orphaned by a killed main process
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def gunicorn(env: dict[str, str], workers: int, log: Path) -> tuple[Process, int]:
    port = free_port()
    process = Process(
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "bench.wsgi:app",
        ],
        env,
        log,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/bench/empty")
            if connection.getresponse().status == 204:
                return process, port
        except OSError:
            time.sleep(0.2)
    process.stop()
    raise RuntimeError(f"gunicorn did not start:\n{process.output()[-2000:]}")


def celery_worker(
    app: str, env: dict[str, str], concurrency: int, log: Path, beat: bool = False
) -> Process:
    """A worker of ``concurrency`` processes; with ``beat``, beat runs inside it (``--beat``)."""
    process = Process(
        [
            str(BIN / "celery"),
            "-A",
            app,
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--hostname",
            f"bench-{uuid.uuid4().hex[:6]}@%h",
        ]
        + (["--beat"] if beat else []),
        env,
        log,
    )
    process.wait_for_text(" ready.")
    return process


def celery_beat(app: str, env: dict[str, str], log: Path) -> Process:
    """Beat in a process of its own, as the Procfile runs it; returned once it holds the
    schedule lock and so sends the periodic tasks."""
    process = Process([str(BIN / "celery"), "-A", app, "beat", "--loglevel", "INFO"], env, log)
    process.wait_for_text("holding the schedule lock")
    return process


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a Celery worker's pool), from ``/proc``."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)
