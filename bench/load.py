"""Load generators on loopback: keep-alive HTTP clients in processes of their own."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import queue
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


def accepted(
    connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> bool:
    """POST one body; whether it was taken (202, or the empty route's 204)."""
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status in (202, 204)


def hammer(target: Target, seconds: float, clients: int) -> tuple[float, int]:
    """Successful requests per second over ``seconds`` from ``clients`` processes, started
    together once each has made its requests (signed, for a webhook: the signing is the
    sender's work, not the service's, and the empty route's clients have none to do)."""
    results: Any = multiprocessing.Queue()
    ready: Any = multiprocessing.Queue()
    go = multiprocessing.Event()
    processes = [
        multiprocessing.Process(target=_client, args=(target, seconds, index, ready, go, results))
        for index in range(clients)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()
    go.set()
    totals = [results.get() for _ in processes]
    for process in processes:
        process.join()
    if any(t[2] for t in totals):
        raise RuntimeError(f"a client sent all its prepared requests before {seconds} s")
    ok = sum(t[0] for t in totals)
    failed = sum(t[1] for t in totals)
    return ok / seconds, failed


#: Requests each client makes ready for a second of the run: several times what one client
#: has sent (a client that runs out fails the run rather than send one twice).
PREPARED_PER_SECOND = 1500


def _client(target: Target, seconds: float, worker: int, ready: Any, go: Any, results: Any) -> None:
    prepared: list[tuple[bytes, dict[str, str]]] = []
    if target.secret:
        for sequence in range(int(PREPARED_PER_SECOND * seconds)):
            unique = f"w{worker}-{sequence}-{uuid.uuid4().hex[:6]}"
            body = json.dumps(person_snapshot(unique, f"p-{unique}")).encode()
            prepared.append((body, signed_request(target.secret, body)))
    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    ready.put(worker)
    go.wait()
    ok = failed = 0
    deadline = time.monotonic() + seconds
    sequence = 0
    ran_out = False
    while time.monotonic() < deadline:
        if target.secret:
            if sequence == len(prepared):
                ran_out = True  # reported below: the parent fails the run
                break
            body, headers = prepared[sequence]
        else:
            body, headers = b"", {}
        sequence += 1
        if accepted(connection, target.path, body, headers):
            ok += 1
        else:
            failed += 1
    results.put((ok, failed, ran_out))


def _poster(
    port: int, path: str, requests: list[tuple[bytes, dict[str, str]]], go: Any, results: Any
) -> None:
    """Send prepared requests one after another; report what was accepted, when, at what CPU."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    go.wait()
    started, cpu = time.monotonic(), time.process_time()
    ok = failed = 0
    for body, headers in requests:
        if accepted(connection, path, body, headers):
            ok += 1
        else:
            failed += 1
    results.put((ok, failed, started, time.monotonic(), time.process_time() - cpu))


@dataclass(frozen=True)
class Concurrent:
    accepted: int  # requests answered 202 or 204
    failed: int
    seconds: float  # from the first client's start to the last one's end
    client_cpu_seconds: float  # the client processes' CPU over their loops, summed


def post_concurrently(
    port: int, path: str, shares: list[list[tuple[bytes, dict[str, str]]]]
) -> Concurrent:
    """Each share of prepared requests from a process of its own, with its own connection,
    all released at once; the clients do nothing but send what was prepared."""
    results: Any = multiprocessing.Queue()
    go = multiprocessing.Event()
    processes = [
        multiprocessing.Process(target=_poster, args=(port, path, share, go, results))
        for share in shares
    ]
    for process in processes:
        process.start()
    time.sleep(0.2)  # every client forked and waiting
    go.set()
    totals = []
    while len(totals) < len(processes):
        try:
            totals.append(results.get(timeout=5))
        except queue.Empty:
            crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if crashed:
                raise RuntimeError(f"batch clients died: exit codes {crashed}") from None
    for process in processes:
        process.join()
    return Concurrent(
        accepted=sum(t[0] for t in totals),
        failed=sum(t[1] for t in totals),
        seconds=max(t[3] for t in totals) - min(t[2] for t in totals),
        client_cpu_seconds=sum(t[4] for t in totals),
    )


def _paced_sender(
    port: int,
    path: str,
    secret: str,
    prefix: str,
    rate: float,
    start_at: float,
    seconds: float,
    index: int,
    senders: int,
    out: Any,
) -> None:
    """Send webhooks ``index``, ``index + senders``, … each at ``start_at + i / rate``
    (``time.monotonic``, the same clock in every process), or at once when late; stop at
    ``start_at + seconds``. Each accepted one goes to ``out`` as it is accepted."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = failed = late = 0
    i = index
    while True:
        due = start_at + i / rate
        if due >= start_at + seconds:
            break
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.05:
            late += 1
        if time.monotonic() >= start_at + seconds:
            break
        notification_id = f"{prefix}{i}"
        moment = datetime.now(UTC)
        payload = person_snapshot(notification_id, f"{prefix}p{i}")
        payload["occurred_at"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = json.dumps(payload).encode()
        status = 0
        for _attempt in range(3):
            try:
                connection.request("POST", path, body=body, headers=signed_request(secret, body))
                response = connection.getresponse()
                response.read()
                status = response.status
                break
            except (OSError, http.client.HTTPException):
                connection.close()  # reconnects on the next request
        sent += 1
        if status == 202:
            out.put((notification_id, moment, time.monotonic()))
        else:
            failed += 1
        i += senders
    out.put((None, (sent, failed, late), None))


class PacedWebhooks:
    """Single webhooks at ``rate`` per second for ``seconds`` from ``senders`` processes.

    ``run`` calls ``on_accepted(notification_id, occurred_at, accepted_at)`` for every 202
    as it arrives (``accepted_at`` is the sender's ``time.monotonic``).
    """

    def __init__(
        self,
        port: int,
        source_id: str,
        secret: str,
        prefix: str,
        rate: float,
        seconds: float,
        senders: int,
        on_accepted: Any,
    ) -> None:
        self.sent = self.failed = self.late = 0
        self._out: Any = multiprocessing.Queue()
        self._on_accepted = on_accepted
        self._args = (port, f"/v1/webhooks/{source_id}", secret, prefix, rate)
        self.seconds = seconds
        self.senders = senders

    def run(self) -> None:
        """Start the senders and return once every one of them has stopped."""
        start_at = time.monotonic() + 0.5  # after every sender has forked
        processes = [
            multiprocessing.Process(
                target=_paced_sender,
                args=(*self._args, start_at, self.seconds, index, self.senders, self._out),
            )
            for index in range(self.senders)
        ]
        for process in processes:
            process.start()
        finished = 0
        while finished < len(processes):
            try:
                notification_id, second, third = self._out.get(timeout=5)
            except queue.Empty:
                crashed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if crashed:
                    raise RuntimeError(f"webhook senders died: exit codes {crashed}") from None
                continue
            if notification_id is None:
                finished += 1
                sent, failed, late = second
                self.sent += sent
                self.failed += failed
                self.late += late
            else:
                self._on_accepted(notification_id, second, third)
        for process in processes:
            process.join()
