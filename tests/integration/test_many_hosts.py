"""Web and worker on hosts that share nothing but DATABASE_URL, REDIS_URL and SECRET_KEY.

Two ``web`` processes and one ``worker`` (the Procfile's commands), each started in a folder
of its own with relative ``AUDITLOG_VAR_DIR`` and ``EXPORT_DIR`` inside it, so no path one
records names a file another can read (with ``EXPORT_STORAGE=filesystem`` the downloads
below are 410): an export the worker builds downloads from both web processes, and a
cursor or a download link one of them makes works on the other.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine

from bench.data import fill_events
from bench.services import BIN, Process, free_port
from storage.db import Database
from tests.factories import make_settings, make_tenant, notification, signed_headers
from tests.integration.processes import wait_until
from tests.integration.test_procfile import procfile

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SECRET_KEY = "a-secret-shared-by-every-host"
#: Enough rows for a file of several 1 MiB chunks.
ROWS = 20_000


class Host:
    """One process of the Procfile in an empty folder of its own."""

    def __init__(self, root: Path, name: str, kind: str, shared: dict[str, str]) -> None:
        self.folder = root / name
        self.folder.mkdir()
        self.port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AUDITLOG_", "DATABASE_", "REDIS_", "SECRET_", "EXPORT_"))
        }
        env.update(
            shared,
            PATH=f"{BIN}:{env.get('PATH', '')}",
            PORT=str(self.port),
            WEB_CONCURRENCY="1",
            WORKER_CONCURRENCY="1",
            # Relative, so each resolves in the host's own folder: a path one process
            # records means a different file (none) to another, as on separate machines.
            AUDITLOG_VAR_DIR="var",
            EXPORT_DIR="exports",
        )
        self.process = Process(
            ["bash", "-c", f"exec {procfile()[kind]}"], env, root / f"{name}.log", self.folder
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def request(
        self, path: str, key: str | None = None, body: Any = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        url = path if path.startswith("http") else self.base + path
        data = None
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(url, data=data, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, path: str, key: str | None = None, body: Any = None) -> Any:
        status, _, data = self.request(path, key, body)
        assert status in (200, 202), (status, data)
        return json.loads(data)

    def files(self) -> list[str]:
        """Every file under the host's folder (what the process wrote to its disk)."""
        return sorted(
            str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file()
        )


def on_host(url: str, host: Host) -> str:
    """The same link, pointed at another host."""
    return urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{host.port}"))


class TestHostsThatShareNoDisk:
    def test_exports_cursors_and_links_work_from_every_web_process(
        self, tmp_path, postgres_url, private_redis
    ):
        shared = {
            "DATABASE_URL": postgres_url,
            "REDIS_URL": private_redis.url,
            "SECRET_KEY": SECRET_KEY,
        }
        database = Database(postgres_url)
        tenant = make_tenant(database, make_settings(tmp_path / "unused", secret_key=SECRET_KEY))
        database.engine.dispose()
        engine = create_engine(postgres_url)
        with engine.begin() as connection:
            fill_events(connection, ROWS, org_id=tenant.org_id)
        engine.dispose()

        hosts = {
            name: Host(tmp_path, name, kind, shared)
            for name, kind in (("web-a", "web"), ("web-b", "web"), ("worker", "worker"))
        }
        a, b, worker = hosts["web-a"], hosts["web-b"], hosts["worker"]
        try:
            wait_until(lambda: a.answers() and b.answers(), 60, a.process.output())
            worker.process.wait_for_text("ready.", timeout=60)

            # A webhook through one web process, recorded by the worker on its own host.
            body = json.dumps({"notifications": [notification("person", "p-1")]}).encode()
            status, _, _ = a.request(
                f"/v1/webhooks/{tenant.source_id}",
                body=body,
                headers=signed_headers(tenant.secret, body),
            )
            assert status == 202
            wait_until(
                lambda: b.request("/v1/entities/person/p-1", tenant.api_key)[0] == 200,
                60,
                "the worker did not record the webhook",
            )

            # An export requested on A, built by the worker, watched from B.
            export = a.json("/v1/exports", tenant.api_key, {})

            def done() -> bool:
                state = b.json(f"/v1/exports/{export['id']}", tenant.api_key)
                assert state["status"] not in ("failed", "expired"), state
                return bool(state["status"] == "succeeded")

            wait_until(done, 120, worker.process.output()[-3000:])
            path = f"/v1/exports/{export['id']}/download"
            bodies = {}
            for host in (a, b):
                status, headers, data = host.request(path, tenant.api_key)
                assert status == 200, data
                assert headers["Content-Length"] == str(len(data))
                bodies[host.folder.name] = data
            assert bodies["web-a"] == bodies["web-b"]
            text = bodies["web-a"].decode("utf-8-sig")
            assert text.count("\n") == ROWS + 1 + 1  # the header, the loaded rows, the webhook's
            assert len(bodies["web-a"]) > 2 * 1024 * 1024  # several chunks

            # A download link made by one web process works on the other, with no key.
            for maker, other in ((a, b), (b, a)):
                link = maker.json(f"/v1/exports/{export['id']}", tenant.api_key)["download_url"]
                assert urlsplit(link).port == maker.port
                status, _, data = other.request(on_host(link, other))
                assert (status, data == bodies["web-a"]) == (200, True)
            status, _, _ = b.request(on_host(link, b) + "x")
            assert status == 403
            assert b.request(f"/v1/exports/{export['id']}/evidence", tenant.api_key)[0] == 200

            # A cursor made by one web process pages on the other, same as on its maker.
            first = a.json("/v1/events?limit=50", tenant.api_key)
            query = urlencode({"limit": 50, "cursor": first["next_cursor"]})
            on_b = b.json(f"/v1/events?{query}", tenant.api_key)
            on_a = a.json(f"/v1/events?{query}", tenant.api_key)
            assert on_b == on_a and len(on_b["events"]) == 50
            assert not {e["id"] for e in on_b["events"]} & {e["id"] for e in first["events"]}
            second = b.json("/v1/events?limit=50", tenant.api_key)
            status, _, data = a.request(
                "/v1/events?" + urlencode({"limit": 50, "cursor": second["next_cursor"]}),
                tenant.api_key,
            )
            assert status == 200 and json.loads(data)["events"] == on_a["events"]

            for name, host in hosts.items():
                assert host.process.process.poll() is None, f"{name} died:\n{host.process.output()}"
                assert "Traceback" not in host.process.output(), host.process.output()
                # Nothing a request needed was on a host's disk: none wrote an export file.
                assert not (host.folder / "exports").exists(), host.files()
                assert not [f for f in host.files() if f.endswith((".csv", ".part"))]
        finally:
            for host in hosts.values():
                host.process.stop()
