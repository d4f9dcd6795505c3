"""Building CSV exports (CONTRACT §6): streamed, snapshot-bounded, renamed into place at the end.

Rows come through a server-side cursor in batches and are written as they come, so memory
stays flat; ``rows_written`` and a heartbeat are committed about once a second from a
second session. The file is written under a temporary name and renamed only once
complete: a crash leaves a ``.part`` file and an export that is retried or ``failed``,
never a truncated file marked ``succeeded``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
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


def build_export(
    database: Database,
    export_id: str,
    export_dir: Path,
    ttl_seconds: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> str:
    """Write the export's CSV and mark it succeeded; return its final status."""
    with database.unit_of_work(write=True) as session:
        export = session.get(Export, export_id)
        if export is None or export.status not in (exports.QUEUED, exports.RUNNING):
            return export.status if export is not None else "missing"
        flt = EventFilter.from_json(export.query)
        org_id, max_event_id = export.org_id, export.max_event_id
        total = count_events(session, org_id, flt, max_event_id)
        exports.set_progress(
            session,
            export_id,
            status=exports.RUNNING,
            started_at=clock(),
            heartbeat_at=clock(),
            rows_total=total,
            rows_written=0,
            error=None,
        )
        session.commit()

    export_dir.mkdir(parents=True, exist_ok=True)
    final = export_dir / f"{export_id}.csv"
    partial = export_dir / f"{export_id}.{secrets.token_hex(4)}.part"
    write_rows = _copy_rows if database.dialect == "postgresql" else _python_rows
    try:
        with open(partial, "wb") as handle:
            handle.write(HEADER)
            written = write_rows(database, handle, export_id, org_id, flt, max_event_id, clock)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise

    finished = clock()
    with database.unit_of_work(write=True) as session:
        exports.set_progress(
            session,
            export_id,
            status=exports.SUCCEEDED,
            rows_written=written,
            rows_total=written,
            finished_at=finished,
            heartbeat_at=finished,
            expires_at=finished + timedelta(seconds=ttl_seconds),
            file_path=str(final),
        )
        session.commit()
    return exports.SUCCEEDED


class Progress:
    """Commits ``rows_written`` and a heartbeat every PROGRESS_EVERY_SECONDS, and every
    PROGRESS_EVERY_ROWS so that even a fast export shows where it is."""

    def __init__(self, database: Database, export_id: str, clock: Callable[[], datetime]) -> None:
        self.database, self.export_id, self.clock = database, export_id, clock
        self.last = time.monotonic()
        self.last_rows = 0

    def tick(self, written: int) -> None:
        if (
            time.monotonic() - self.last >= PROGRESS_EVERY_SECONDS
            or written - self.last_rows >= PROGRESS_EVERY_ROWS
        ):
            _report(self.database, self.export_id, written, self.clock())
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


#: Every CSV row ends with its event id, which needs no quoting: counting these counts rows.
ROW_END = re.compile(rb"evt_[0-9a-f]{16}\n")


def _copy_rows(
    database: Database,
    handle: BinaryIO,
    export_id: str,
    org_id: str,
    flt: EventFilter,
    max_event_id: int | None,
    clock: Callable[[], datetime],
) -> int:
    """PostgreSQL: the cells rendered by the server and streamed by COPY (storage.queries)."""
    progress = Progress(database, export_id, clock)
    written = 0
    tail = b""
    with database.unit_of_work() as reader:
        query, params = csv_copy_query(reader, org_id, flt, max_event_id)
        cursor = reader.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(query, params) as copy:
            for chunk in copy:
                data = bytes(chunk)
                handle.write(data)
                window = tail + data
                written += sum(1 for m in ROW_END.finditer(window) if m.end() > len(tail))
                tail = window[-21:]
                progress.tick(written)
    return written


def _report(database: Database, export_id: str, written: int, now: datetime) -> None:
    with database.unit_of_work(write=True) as session:
        exports.set_progress(session, export_id, rows_written=written, heartbeat_at=now)
        session.commit()


def fail_export(database: Database, export_id: str, error: str, now: datetime) -> None:
    with database.unit_of_work(write=True) as session:
        exports.set_progress(
            session, export_id, status=exports.FAILED, error=error[:2000], finished_at=now
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
