"""Load generators on loopback: keep-alive HTTP clients in processes of their own."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Target:
    port: int
    path: str
    secret: str | None = None  # sign each request (a webhook) when set


def person_snapshot(notification_id: str, person_id: str, second: int = 0) -> dict[str, Any]:
    return {
        "id": notification_id,
        "kind": "snapshot",
        "entity": {"type": "person", "id": person_id},
        "occurred_at": f"2026-11-25T10:{second // 60 % 60:02d}:{second % 60:02d}Z",
        "origin": "sync",
        "properties": {"name": f"Person {person_id}", "title": "Engineer"},
    }


def signed_request(secret: str, body: bytes) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = int(time.time())
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, UTC), body.decode())
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }


def timed_get(
    connection: http.client.HTTPConnection, path: str, headers: dict[str, str]
) -> tuple[float, int, bytes]:
    """One GET: milliseconds from sending it to having read the whole response; status; body."""
    started = time.perf_counter()
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    return (time.perf_counter() - started) * 1000, response.status, body


def _client(target: Target, seconds: float, worker: int, results: Any) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    ok = failed = 0
    deadline = time.monotonic() + seconds
    sequence = 0
    while time.monotonic() < deadline:
        sequence += 1
        if target.secret:
            unique = f"w{worker}-{sequence}-{uuid.uuid4().hex[:6]}"
            body = json.dumps(person_snapshot(unique, f"p-{unique}")).encode()
            headers = signed_request(target.secret, body)
        else:
            body, headers = b"", {}
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status in (202, 204):
            ok += 1
        else:
            failed += 1
    results.put((ok, failed))


def hammer(target: Target, seconds: float, clients: int) -> tuple[float, int]:
    """Successful requests per second over ``seconds`` from ``clients`` processes."""
    results: Any = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=_client, args=(target, seconds, index, results))
        for index in range(clients)
    ]
    for process in processes:
        process.start()
    totals = [results.get() for _ in processes]
    for process in processes:
        process.join()
    ok = sum(t[0] for t in totals)
    failed = sum(t[1] for t in totals)
    return ok / seconds, failed
