"""Building CSV exports (CONTRACT §6): streamed, snapshot-bounded, renamed into place at the end.

Rows come through a server-side cursor in batches and are written as they come, so memory
stays flat; ``rows_written`` and a heartbeat are committed about once a second from a
second session. The file is written under a temporary name and renamed only once
complete: a crash leaves a ``.part`` file and an export that is retried or ``failed``,
never a truncated file marked ``succeeded``.

Two builds of one export can overlap (beat restarts an export whose heartbeat went quiet
while its first build may still be running). Every status change is conditional
(``storage.exports.transition``): the first build to finish wins, its file is renamed into
place inside the transaction that marks it succeeded, and a build that finds the export
no longer running stops, deletes its own ``.part`` file and never touches the winner's.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from storage import exports
from storage.catalog import label_of
from storage.db import Database
from storage.models import Export
from storage.queries import (
    EventFilter,
    count_events,
    csv_copy_query,
    events_page_statement,
    public_event_id,
)
from storage.timefmt import rfc3339

COLUMNS = [
    "occurred_at",
    "event_type",
    "event",
    "entity_type",
    "entity_id",
    "entity_name",
    "targets",
    "property",
    "old_value",
    "new_value",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "ip_address",
    "origin",
    "event_id",
]
#: A spreadsheet runs a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\x00")
FETCH_BATCH = 2000
#: PostgreSQL's COPY ends CSV rows with LF; the Python writer does the same.
LINE_END = "\n"
HEADER = ("\ufeff" + ",".join(COLUMNS) + LINE_END).encode("utf-8")
PROGRESS_EVERY_SECONDS = 0.2
PROGRESS_EVERY_ROWS = 25_000


def neutralised(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def value_cell(value: Any) -> str:
    """A string as itself, any other JSON value as compact JSON, null as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def targets_cell(targets: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{t['type']}:{t['id']}" + (f" ({t['name']})" if t.get("name") is not None else "")
        for t in targets or []
    )


def csv_row(row: Any) -> list[str]:
    cells = [
        rfc3339(row.occurred_at),
        row.type,
        label_of(row.type),
        row.entity_type,
        row.entity_id,
        row.entity_name,
        targets_cell(row.targets),
        row.property,
        value_cell(row.old_value),
        value_cell(row.new_value),
        row.actor_type,
        row.actor_id,
        row.actor_name,
        row.actor_email,
        row.ip_address,
        row.origin,
        public_event_id(row.id),
    ]
    return [neutralised(cell) if cell else "" for cell in cells]


class Superseded(Exception):
    """Another build finished the export, or it failed, while this build was writing."""


def build_export(
    database: Database,
    export_id: str,
    export_dir: Path,
    ttl_seconds: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> str:
    """Write the export's CSV and mark it succeeded; return its final status.

    A build that finds the export already moved on (succeeded, failed, expired), at the
    start, during its rows or at the end, changes nothing and returns the status found.
    """
    with database.unit_of_work(write=True) as session:
        export = session.get(Export, export_id)
        if export is None or export.status not in exports.ACTIVE:
            return export.status if export is not None else "missing"
        flt = EventFilter.from_json(export.query)
        org_id, max_event_id = export.org_id, export.max_event_id
        total = count_events(session, org_id, flt, max_event_id)
        started = clock()
        claimed = exports.transition(
            session,
            export_id,
            exports.ACTIVE,
            status=exports.RUNNING,
            started_at=started,
            heartbeat_at=started,
            rows_total=total,
            rows_written=0,
            error=None,
        )
        session.commit()
    if not claimed:
        return _status_of(database, export_id)

    export_dir.mkdir(parents=True, exist_ok=True)
    final = export_dir / f"{export_id}.csv"
    partial = export_dir / f"{export_id}.{secrets.token_hex(8)}.part"
    write_rows = _copy_rows if database.dialect == "postgresql" else _python_rows
    try:
        with open(partial, "wb") as handle:
            handle.write(HEADER)
            written = write_rows(database, handle, export_id, org_id, flt, max_event_id, clock)
            handle.flush()
            os.fsync(handle.fileno())
        finished = clock()
        with database.unit_of_work(write=True) as session:
            won = exports.transition(
                session,
                export_id,
                exports.ACTIVE,
                status=exports.SUCCEEDED,
                rows_written=written,
                rows_total=written,
                finished_at=finished,
                heartbeat_at=finished,
                expires_at=finished + timedelta(seconds=ttl_seconds),
                file_path=str(final),
            )
            if won:  # the row stays locked until the commit: no other build gets here
                os.replace(partial, final)
                session.commit()
    except Superseded:
        won = False
    finally:
        partial.unlink(missing_ok=True)
    return exports.SUCCEEDED if won else _status_of(database, export_id)


def _status_of(database: Database, export_id: str) -> str:
    with database.unit_of_work() as session:
        export = session.get(Export, export_id)
        return export.status if export is not None else "missing"


class Progress:
    """Commits ``rows_written`` and a heartbeat every PROGRESS_EVERY_SECONDS, and every
    PROGRESS_EVERY_ROWS so that even a fast export shows where it is."""

    def __init__(self, database: Database, export_id: str, clock: Callable[[], datetime]) -> None:
        self.database, self.export_id, self.clock = database, export_id, clock
        self.last = time.monotonic()
        self.last_rows = 0

    def tick(self, written: int) -> None:
        """Report when due; raise ``Superseded`` once the export is no longer running."""
        if (
            time.monotonic() - self.last >= PROGRESS_EVERY_SECONDS
            or written - self.last_rows >= PROGRESS_EVERY_ROWS
        ):
            if not _report(self.database, self.export_id, written, self.clock()):
                raise Superseded(self.export_id)
            self.last, self.last_rows = time.monotonic(), written


def _python_rows(
    database: Database,
    handle: BinaryIO,
    export_id: str,
    org_id: str,
    flt: EventFilter,
    max_event_id: int | None,
    clock: Callable[[], datetime],
) -> int:
    """Any database: rows through a server-side cursor, cells by ``csv_row``."""
    # "\r\n" as the writer's terminator makes it quote a lone CR inside a cell too; each
    # row's own terminator is then written as LF, like PostgreSQL's COPY.
    line = io.StringIO()
    writer = csv.writer(line, lineterminator="\r\n")
    progress = Progress(database, export_id, clock)
    written = 0
    with database.unit_of_work() as reader:
        statement = events_page_statement(
            database.dialect, org_id, flt, None, max_event_id=max_event_id
        ).execution_options(yield_per=FETCH_BATCH)
        for row in reader.execute(statement):
            writer.writerow(csv_row(row))
            handle.write((line.getvalue()[:-2] + LINE_END).encode("utf-8"))
            line.seek(0)
            line.truncate()
            written += 1
            progress.tick(written)
    return written


def _copy_rows(
    database: Database,
    handle: BinaryIO,
    export_id: str,
    org_id: str,
    flt: EventFilter,
    max_event_id: int | None,
    clock: Callable[[], datetime],
) -> int:
    """PostgreSQL: the cells rendered by the server and streamed by COPY (storage.queries).

    The server sends COPY's output as one message per row and libpq hands it over one row
    at a time, so each chunk is one row, whatever its cells hold (a quoted newline, text
    that looks like a row's end); the total is the server's own count (``COPY n``).
    """
    progress = Progress(database, export_id, clock)
    written = 0
    with database.unit_of_work() as reader:
        query, params = csv_copy_query(reader, org_id, flt, max_event_id)
        cursor = reader.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(query, params) as copy:
            for row in copy:
                handle.write(row)
                written += 1
                progress.tick(written)
        if cursor.rowcount >= 0:
            written = cursor.rowcount
    return written


def _report(database: Database, export_id: str, written: int, now: datetime) -> bool:
    """Commit progress while the export is running; whether it still was."""
    with database.unit_of_work(write=True) as session:
        running = exports.transition(
            session, export_id, (exports.RUNNING,), rows_written=written, heartbeat_at=now
        )
        session.commit()
    return running


def fail_export(database: Database, export_id: str, error: str, now: datetime) -> None:
    """Mark a queued or running export failed; one that already ended keeps its status."""
    with database.unit_of_work(write=True) as session:
        exports.transition(
            session,
            export_id,
            exports.ACTIVE,
            status=exports.FAILED,
            error=error[:2000],
            finished_at=now,
        )
        session.commit()


def expire_exports(database: Database, now: datetime) -> int:
    """Delete the files of exports past their time and mark them expired."""
    with database.unit_of_work(write=True) as session:
        expired = exports.claim_expired(session, now)
        paths = [export.file_path for export in expired if export.file_path]
        session.commit()
    for path in paths:
        Path(path).unlink(missing_ok=True)
    return len(expired)
