"""When each notification's events first show in ``GET /v1/events``, as a user reads it."""

from __future__ import annotations

import http.client
import json
import threading
import time
from datetime import datetime, timedelta

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"
#: Around the unseen notifications' moments: events occur when their notification says.
MARGIN = timedelta(seconds=0.1)
#: Pages of 500 read per pass at most (a pass that finds more reads the rest next time).
MAX_PAGES = 100


class Sightings:
    """A thread polling one organisation's log through the API.

    Every expected notification carries the moment its payload gives as ``occurred_at``,
    so everything not yet seen lies between the oldest and the newest unseen moment: each
    pass reads that window, all of it, following cursors, and notes the first moment
    (``time.monotonic``) each notification's events were in a page.
    """

    def __init__(self, port: int, api_key: str, pause: float = 0.02) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.pause = pause
        self.expected: dict[str, datetime] = {}
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def expect(self, notification_id: str, occurred_at: datetime) -> None:
        with self._lock:
            self.expected[notification_id] = occurred_at

    def start(self) -> Sightings:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def unseen(self) -> int:
        with self._lock:
            return sum(1 for i in self.expected if i not in self.seen)

    def wait_all(self, timeout: float) -> bool:
        """Until every expected notification was seen; False once ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while self.unseen():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def last_seen(self) -> float:
        """The moment the last of the expected notifications was first seen."""
        with self._lock:
            return max(self.seen[i] for i in self.expected)

    def _poll(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                unseen = [t for i, t in self.expected.items() if i not in self.seen]
            if not unseen:
                time.sleep(0.01)
                continue
            window = (
                f"since={(min(unseen) - MARGIN).strftime(STAMP)}"
                f"&until={(max(unseen) + MARGIN).strftime(STAMP)}"
            )
            path = f"/v1/events?limit=500&{window}"
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                for _page in range(MAX_PAGES):
                    connection.request("GET", path, headers=self.headers)
                    page = json.loads(connection.getresponse().read())
                    now = time.monotonic()
                    with self._lock:
                        for event in page["events"]:
                            self.seen.setdefault(event["notification_id"], now)
                    if not page["next_cursor"] or self._stop.is_set():
                        break
                    path = f"/v1/events?limit=500&{window}&cursor={page['next_cursor']}"
            except (OSError, http.client.HTTPException, KeyError, ValueError):
                pass  # a dropped connection or an error page: ask again
            finally:
                connection.close()
            time.sleep(self.pause)
