"""Watching the sequencer from outside: when each event became visible, and when its seq did.

A thread polls PostgreSQL directly (autocommit, so it never holds a transaction open and
never holds back the sequencer's horizon) every ``interval`` seconds:

- events committed since the last look: those of transactions that had not ended at the
  last look's snapshot, that is with a ``txid`` at or above its ``pg_snapshot_xmax`` or
  among its ``pg_snapshot_xip`` (every other transaction had ended then, and that look
  saw its rows). Both seek the ``(txid, id)`` index and read each event about once. (A
  floor at the snapshot's ``xmin`` re-read every event of a transaction still open, and of
  all that began after it, on every look: under the processing load that kept half a core
  of PostgreSQL busy beside the workers being timed);
- leaves appended to the organisation's log since the last look (``seq > last``; sequencer
  passes run one at a time, so seqs become visible in order), joined to their events.

Each sighting is stamped with the wall-clock time just before the query that made it (the
query's snapshot is taken then), to compare with ``recorded_at``, which the worker takes
with ``datetime.now(UTC)`` on the same machine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

SNAPSHOT = """
SELECT pg_snapshot_xmax(s)::text::bigint,
       array(SELECT pg_snapshot_xip(s)::text::bigint)
FROM pg_current_snapshot() AS s
"""
#: The organisation is picked out here, not in SQL: asked for there, it lets the planner,
#: misled by a fresh table's statistics, read every event of the organisation instead.
NEW_EVENTS = """
SELECT id, org_id, recorded_at FROM events
WHERE txid >= %(xmax)s OR txid = ANY(%(open)s::bigint[])
"""
NEW_LEAVES = """
SELECT l.seq, l.event_id, e.recorded_at
FROM log_leaves AS l JOIN events AS e ON e.id = l.event_id
WHERE l.org_id = %(org)s AND l.seq > %(last)s
ORDER BY l.seq
"""


@dataclass
class Lags:
    """Seconds from ``recorded_at`` to committed (visible) and to sequenced, per event."""

    committed: list[float] = field(default_factory=list)
    sequenced: list[float] = field(default_factory=list)
    #: seq seen minus commit seen, per event: the sequencer's own share.
    after_commit: list[float] = field(default_factory=list)
    never_sequenced: int = 0


class LagWatch:
    def __init__(self, engine: Engine, org_id: str, interval: float = 0.05) -> None:
        self.engine = engine
        self.org_id = org_id
        self.interval = interval
        self.recorded: dict[int, float] = {}
        self.committed: dict[int, float] = {}
        self.sequenced: dict[int, float] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> LagWatch:
        with self.engine.connect() as connection:
            self._xmax, self._open = connection.exec_driver_sql(SNAPSHOT).one()
            self._last = int(
                connection.exec_driver_sql(
                    "SELECT coalesce(max(seq), 0) FROM log_leaves WHERE org_id = %(org)s",
                    {"org": self.org_id},
                ).scalar_one()
            )
        self.started_at = time.time()
        self._thread.start()
        return self

    def _poll(self, connection: Any) -> None:
        # This look's snapshot is taken before its query, so the query sees at least what
        # the snapshot says had ended; the next look asks after the rest.
        xmax, still_open = connection.exec_driver_sql(SNAPSHOT).one()
        at = time.time()
        # Planned for these very values (``prepare=False``): the generic plan a prepared
        # statement falls back to after five runs reads the whole table.
        rows = connection.connection.driver_connection.execute(
            NEW_EVENTS,
            {"xmax": self._xmax, "open": list(self._open)},
            prepare=False,
        ).fetchall()
        for event_id, org_id, recorded_at in rows:
            if org_id != self.org_id:
                continue
            self.committed.setdefault(int(event_id), at)
            self.recorded.setdefault(int(event_id), recorded_at.timestamp())
        self._xmax, self._open = xmax, still_open
        at = time.time()
        leaves = connection.connection.driver_connection.execute(
            NEW_LEAVES, {"org": self.org_id, "last": self._last}, prepare=False
        ).fetchall()
        for seq, event_id, recorded_at in leaves:
            self._last = max(self._last, int(seq))
            self.sequenced.setdefault(int(event_id), at)
            # Committed between the two queries: it was visible by this one at the latest.
            self.committed.setdefault(int(event_id), at)
            self.recorded.setdefault(int(event_id), recorded_at.timestamp())
        self.polls += 1

    def _run(self) -> None:
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                # The look at new events seeks the (txid, id) index, never the table: the
                # statistics of a table loaded seconds ago call it small, and a sequential
                # scan read all of it (30 ms, 20 times a second) beside the workers.
                conn.exec_driver_sql("SET enable_seqscan = off")
                try:
                    while not self._stop.is_set():
                        self._poll(conn)
                        time.sleep(self.interval)
                finally:
                    conn.exec_driver_sql("RESET enable_seqscan")  # back to the pool as it was
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self, expect_sequenced: bool, settle: float = 30.0) -> Lags:
        """After the load: wait for a full look, then (``expect_sequenced``) for every event
        seen committed to be seen sequenced, ``settle`` seconds at most; then stop."""
        polls = self.polls
        deadline = time.monotonic() + settle
        while self.polls < polls + 2 and self.error is None and time.monotonic() < deadline:
            time.sleep(self.interval)
        while (
            expect_sequenced
            and self.error is None
            and time.monotonic() < deadline
            and any(i not in self.sequenced for i in list(self.committed))
        ):
            time.sleep(self.interval)
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error is not None:
            raise RuntimeError("the sequencing watch failed") from self.error
        lags = Lags()
        for event_id, recorded in self.recorded.items():
            if recorded < self.started_at or event_id not in self.committed:
                continue  # an event of before the measured load
            committed = self.committed[event_id]
            lags.committed.append(committed - recorded)
            if event_id in self.sequenced:
                lags.sequenced.append(self.sequenced[event_id] - recorded)
                lags.after_commit.append(self.sequenced[event_id] - committed)
            else:
                lags.never_sequenced += 1
        return lags
