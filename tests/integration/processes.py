"""Real processes for integration tests: Celery workers (with beat) and a private Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.services import BIN, Process, free_port
from storage.settings import Settings


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s: {message}")


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        AUDITLOG_VAR_DIR=str(settings.var_dir),
        SECRET_KEY=settings.secret_key,
        REQUEUE_AFTER_SECONDS=str(settings.requeue_after_seconds),
        SWEEP_INTERVAL_SECONDS=str(int(settings.sweep_interval_seconds)),
        MAX_ATTEMPTS=str(settings.max_attempts),
    )
    env.pop("REDIS_URL", None)
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    env.update(extra)
    return env


class CeleryWorker(Process):
    """``celery -A worker.main worker`` in a subprocess of its own process group."""

    def __init__(self, settings: Settings, concurrency: int = 1, beat: bool = False) -> None:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(BIN / "celery"),
            "-A",
            "worker.main",
            "--quiet",  # no banner: every line is a JSON log line, as in the Procfile
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"test-{time.monotonic_ns()}@%h",
        ]
        if beat:
            command += ["--beat"]
        log = settings.var_dir / f"worker-{time.monotonic_ns()}.log"
        super().__init__(command, service_env(settings), log)

    def kill_main(self) -> None:
        """``kill -9`` of the main process only: its pool children are orphaned."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


class CeleryBeat(Process):
    """``celery -A worker.main beat`` in its own process, as the Procfile runs it."""

    def __init__(self, settings: Settings) -> None:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(BIN / "celery"),
            "-A",
            "worker.main",
            "--quiet",
            "beat",
            "--loglevel",
            "INFO",
        ]
        log = settings.var_dir / f"beat-{time.monotonic_ns()}.log"
        super().__init__(command, service_env(settings), log)


@contextmanager
def celery_worker(settings: Settings, **options: object) -> Iterator[CeleryWorker]:
    worker = CeleryWorker(settings, **options)  # type: ignore[arg-type]
    try:
        yield worker
    finally:
        worker.stop()


class PrivateRedis:
    """A Redis server of the test's own, so that stopping it disturbs nobody else."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, 10, "private redis-server did not start")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def children_of(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/"))


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb into a temporary folder), to stop at will.

    The folder is made outside pytest's private temporary tree, which the ``postgres`` user
    the server must run as (when the suite runs as root) cannot enter.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="auditlog-pg-"))
        os.chmod(self.directory, 0o755)
        self.port = free_port()
        self.data = self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
