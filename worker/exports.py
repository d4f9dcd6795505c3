"""Building exports: streamed, snapshot-bounded, served only once complete.

An export's snapshot is a size of its organisation's log: the build waits until the
sequencer has numbered every event recorded before the request (``requested_xmax``), takes
the smallest tree size holding all of them, signs (or finds) the checkpoint of exactly that
size, and writes the matching events with ``seq ≤ tree_size``: CSV cells, or one event
object per line (``jsonl``). ``evidence_chunks`` is what proves such a file against the
checkpoint (``auditlog verify``).

Rows come through a server-side cursor in batches and are written as they come to the
export store (``storage.blobs``: chunks in the database by default, a folder with
``EXPORT_STORAGE=filesystem``), so memory stays flat; ``rows_written`` and a heartbeat are
committed about once a second from a second session. Each build writes an attempt of its
own, which becomes the export's file only in the transaction that marks the export
succeeded: a crash leaves an unreferenced attempt and an export that is retried or
``failed``, never a truncated file marked ``succeeded``.

Two builds of one export can overlap (beat restarts an export whose heartbeat went quiet
while its first build may still be running). Every status change is conditional
(``storage.exports.transition``): the first build to finish wins, its attempt is recorded
(on disk, renamed into place) inside the transaction that marks it succeeded and the
attempts of dead builds are deleted after it; a build that finds the export no longer
running stops, deletes its own attempt and never touches the winner's.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from storage import blobs, exports, merkle, notes, tlog
from storage.catalog import label_of
from storage.db import Database, driver_of
from storage.inbox import dialect_insert
from storage.models import Export, LogCheckpoint
from storage.queries import (
    EventFilter,
    count_events,
    csv_copy_query,
    event_document,
    events_page_statement,
    public_event_id,
)
from storage.settings import Settings
from storage.timefmt import rfc3339
from worker import sequencer

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
#: The COPY's rows are passed to the file this many bytes, or this many rows, at a time.
WRITE_BYTES = 64 * 1024
WRITE_ROWS = 256
#: How long a build waits for the sequencer to number the events of its snapshot.
SEQUENCER_WAIT_SECONDS = 60.0
SEQUENCER_POLL_SECONDS = 0.2
EVIDENCE_FORMAT = "auditlog-evidence/1"
#: Leaf hashes read per query, and rows proved per node prefetch, for the evidence.
EVIDENCE_CHUNK = 5000


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


def event_cells(event: dict[str, Any]) -> list[str]:
    """``csv_row``'s cells from an event object (``storage.queries.event_document``).

    The same cell functions over the same values (the object's ``occurred_at``, ``label``
    and ``id`` are ``rfc3339``, ``label_of`` and ``public_event_id`` of the row): what
    ``auditlog verify`` compares a CSV row with, once the object's leaf hash is proved.
    """
    entity, actor = event["entity"], event["actor"]
    cells = [
        event["occurred_at"],
        event["type"],
        event["label"],
        entity["type"],
        entity["id"],
        entity["name"],
        targets_cell(event["targets"]),
        event["property"],
        value_cell(event["old_value"]),
        value_cell(event["new_value"]),
        actor["type"],
        actor["id"],
        actor["name"],
        actor["email"],
        event["ip_address"],
        event["origin"],
        event["id"],
    ]
    return [neutralised(cell) if cell else "" for cell in cells]


def jsonl_line(row: Any) -> bytes:
    """One line of a ``jsonl`` export: the event object, exactly as its leaf was hashed."""
    document = json.dumps(event_document(row), ensure_ascii=False, separators=(",", ":"))
    return (document + LINE_END).encode("utf-8")


class Superseded(Exception):
    """Another build finished the export, or it failed, while this build was writing."""


def default_settings(database: Database, export_dir: Path, ttl_seconds: int) -> Settings:
    """The settings a build signs with when its caller gives none: the environment's (what
    the worker runs with), on the caller's database and export folder."""
    from dataclasses import replace

    return replace(
        Settings.from_env(),
        database_url=database.url,
        export_dir=export_dir,
        export_ttl_seconds=ttl_seconds,
    )


def build_export(
    database: Database,
    export_id: str,
    export_dir: Path,
    ttl_seconds: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    settings: Settings | None = None,
    wait_seconds: float = SEQUENCER_WAIT_SECONDS,
    store: blobs.ExportStore | None = None,
) -> str:
    """Write the export's file and mark it succeeded; return its final status.

    ``settings`` sign the snapshot's checkpoint (its ``secret_key`` opens the stored
    signing key); without them, ``default_settings``. The file goes to ``store``, else to
    the one ``settings.export_storage`` names (``export_dir`` for the filesystem). A build
    that finds the export already moved on (succeeded, failed, expired), at the start,
    while it waits for the sequencer, during its rows or at the end, changes nothing and
    returns the status found.
    """
    with database.unit_of_work(write=True) as session:
        export = session.get(Export, export_id)
        if export is None or export.status not in exports.ACTIVE:
            return export.status if export is not None else "missing"
        flt = EventFilter.from_json(export.query)
        org_id, fmt, mark = export.org_id, export.format or "csv", export.requested_xmax
        tree_size = export.tree_size
        # A restarted build keeps the snapshot its predecessor fixed.
        total = _rows_total(session, org_id, flt, tree_size) if tree_size is not None else None
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

    if tree_size is None:
        settings = settings or default_settings(database, export_dir, ttl_seconds)
        try:
            tree_size = _fix_snapshot(
                database, settings, export_id, org_id, flt, mark, clock, wait_seconds
            )
        except Superseded:
            return _status_of(database, export_id)
        if tree_size is None:
            fail_export(
                database,
                export_id,
                f"the log's sequencer did not number the events recorded before this export "
                f"was requested within {wait_seconds:g} s; request the export again",
                clock(),
            )
            return _status_of(database, export_id)

    if store is None:
        store = blobs.export_store(
            settings or default_settings(database, export_dir, ttl_seconds), database, export_dir
        )
    if fmt == "jsonl":
        write_rows: Callable[..., int] = _jsonl_rows
    else:
        write_rows = _copy_rows if database.dialect == "postgresql" else _python_rows
    writer = store.writer(export_id, fmt)
    served = False
    try:
        if fmt == "csv":
            writer.write(HEADER)
        written = write_rows(database, writer, export_id, org_id, flt, tree_size, clock)
        writer.close()
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
                file_path=writer.reference,
            )
            if won:  # the row stays locked until the commit: no other build gets here
                writer.publish()
                session.commit()
                served = True
    except Superseded:
        pass
    finally:
        if not served:
            writer.discard()
    if not served:
        return _status_of(database, export_id)
    # What earlier attempts left (a build whose worker died mid-way) goes now.
    store.delete(export_id, keep=writer.reference)
    return exports.SUCCEEDED


def _await_sequencer(
    database: Database,
    settings: Settings,
    export_id: str,
    mark: int,
    clock: Callable[[], datetime],
    wait_seconds: float,
) -> bool:
    """Run the sequencer until its horizon passes ``mark``; False if that took too long.

    Heart-beats while it waits; raises ``Superseded`` once the export is no longer running.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        with database.unit_of_work() as session:
            if sequencer.horizon(session) >= mark:
                return True
        if time.monotonic() >= deadline:
            return False
        # Skipped when another pass holds the lock: that pass, or the next try, moves on.
        sequencer.sequence_pending(database, settings)
        with database.unit_of_work() as session:
            if sequencer.horizon(session) >= mark:
                return True
        if not _report(database, export_id, 0, clock()):
            raise Superseded(export_id)
        time.sleep(SEQUENCER_POLL_SECONDS)


def _fix_snapshot(
    database: Database,
    settings: Settings,
    export_id: str,
    org_id: str,
    flt: EventFilter,
    mark: int | None,
    clock: Callable[[], datetime],
    wait_seconds: float,
) -> int | None:
    """Store the export's tree size, its signed checkpoint and its row count; the size.

    None if the sequencer did not get there in time. An export made before the log
    existed (no mark) takes the tree as it stands once the backlog is numbered.
    """
    if mark is None:
        sequencer.sequence_pending(database, settings)
    elif not _await_sequencer(database, settings, export_id, mark, clock, wait_seconds):
        return None
    with database.unit_of_work(write=True) as session:
        if mark is not None:
            size = exports.snapshot_size(session, org_id, mark)
        else:
            size = tlog.tree_size(session, org_id)
        # The log's own clock, not the export's (which a test may set in the past).
        checkpoint = _checkpoint_of(session, settings, org_id, size, datetime.now(UTC))
        # Committed before the count: it holds the tree's row, which the sequencer waits on.
        session.commit()
    with database.unit_of_work(write=True) as session:
        total = _rows_total(session, org_id, flt, size)
        running = exports.transition(
            session,
            export_id,
            (exports.RUNNING,),
            tree_size=size,
            checkpoint=checkpoint.note,
            rows_total=total,
            heartbeat_at=clock(),
        )
        session.commit()  # the checkpoint is good whoever builds the export
    if not running:
        raise Superseded(export_id)
    return size


def _rows_total(session: Any, org_id: str, flt: EventFilter, size: int) -> int:
    """How many rows the export of the log's first ``size`` leaves holds. Unfiltered, that
    is ``size`` (one event a leaf, seq without a gap, events never deleted): no need to
    read them all once more to count. Filtered, they are counted as they are read
    (``prepare_export_read``)."""
    if flt == EventFilter():
        return size
    prepare_export_read(session, flt)
    return count_events(session, org_id, flt, max_seq=size)


def _checkpoint_of(
    session: Any, settings: Settings, org_id: str, size: int, now: datetime
) -> tlog.Checkpoint:
    """``tlog.sign_checkpoint``, and the empty tree's checkpoint once the tree has grown.

    An export requested before the organisation's first event holds the empty tree; a
    checkpoint of size 0 needs no consistency with later ones (the empty tree is a prefix
    of every tree), which ``sign_checkpoint``'s check cannot prove, so it is signed here.
    """
    if size > 0 or tlog.latest_checkpoint(session, org_id) is None:
        return tlog.sign_checkpoint(session, settings, org_id, size, now)
    existing = tlog.checkpoint_at(session, org_id, 0)
    if existing is not None:
        return existing
    signer = tlog.active_signer(session, settings, now)
    text = notes.checkpoint_text(tlog.log_origin(settings, org_id), 0, merkle.EMPTY_ROOT)
    insert = dialect_insert(session)
    session.execute(
        insert(LogCheckpoint.__table__)
        .values(
            org_id=org_id,
            tree_size=0,
            root_hash=merkle.EMPTY_ROOT,
            note=notes.sign_note(text, [signer]),
            key_id=signer.key_id.hex(),
            created_at=now,
        )
        .on_conflict_do_nothing()
    )
    found = tlog.checkpoint_at(session, org_id, 0)
    assert found is not None
    return found


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
    handle: blobs.ExportWriter,
    export_id: str,
    org_id: str,
    flt: EventFilter,
    max_seq: int,
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
            database.dialect, org_id, flt, None, max_seq=max_seq
        ).execution_options(yield_per=FETCH_BATCH)
        for row in reader.execute(statement):
            writer.writerow(csv_row(row))
            handle.write((line.getvalue()[:-2] + LINE_END).encode("utf-8"))
            line.seek(0)
            line.truncate()
            written += 1
            progress.tick(written)
    return written


def _jsonl_rows(
    database: Database,
    handle: blobs.ExportWriter,
    export_id: str,
    org_id: str,
    flt: EventFilter,
    max_seq: int,
    clock: Callable[[], datetime],
) -> int:
    """Any database: one event object per line, in the log's order (``jsonl_line``)."""
    progress = Progress(database, export_id, clock)
    written = 0
    with database.unit_of_work() as reader:
        prepare_export_read(reader, flt)
        statement = events_page_statement(
            database.dialect, org_id, flt, None, max_seq=max_seq
        ).execution_options(yield_per=FETCH_BATCH)
        for row in reader.execute(statement):
            handle.write(jsonl_line(row))
            written += 1
            progress.tick(written)
    return written


def _copy_rows(
    database: Database,
    handle: blobs.ExportWriter,
    export_id: str,
    org_id: str,
    flt: EventFilter,
    max_seq: int,
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
        prepare_export_read(reader, flt)
        query, params = csv_copy_query(reader, org_id, flt, max_seq=max_seq)
        with driver_of(reader) as driver, driver.cursor() as cursor:
            # Rows are gathered and handed on WRITE_BYTES or WRITE_ROWS at a time, and
            # progress looked at then: per row, the two calls cost as much Python as the
            # COPY's own reading. (By rows too, so that an export whose few matches trickle
            # out of a long scan still beats its heart.)
            pending = bytearray()
            with cursor.copy(query, params) as copy:
                for row in copy:
                    pending += row
                    written += 1
                    if len(pending) >= WRITE_BYTES or not written % WRITE_ROWS:
                        handle.write(bytes(pending))
                        pending.clear()
                        progress.tick(written)
            handle.write(bytes(pending))
            progress.tick(written)
            if cursor.rowcount >= 0:
                written = cursor.rowcount
    return written


def prepare_export_read(session: Any, flt: EventFilter) -> None:
    """PostgreSQL, for the session's transaction only, how an export's rows are read (and,
    filtered, counted); nothing elsewhere.

    - Where an index gives the export's order (``in_time_order``), rows come from it in
      the log's order as they stream, rather than all read, sorted (spilling to disk past
      ``work_mem``) and only then sent. The planner's own choice, on statistics that a
      table loaded moments ago misleads, was the sort: 0.73 s against 0.55 s for a COPY of
      200,000 events.
    - No JIT compilation: once the statistics are right, an export's plan costs enough
      for PostgreSQL to compile its expressions first, in each parallel worker, which took
      a quarter of a second before the first row (0.5 s of CPU) and saved less than that
      over 200,000 rows (a build 200,000 -> 270,000 rows/s without it).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(text("SET LOCAL jit = off"))
    if in_time_order(flt):
        session.execute(text("SET LOCAL enable_sort = off"))


def in_time_order(flt: EventFilter) -> bool:
    """Whether an index gives the export's rows in its order, the organisation's or a time
    window of it with nothing else filtered (``ix_events_org_time``), so that no sort is
    needed. A narrower filter (an actor, a record, a network) is left to the planner, which
    may rightly read its few rows by another index and sort them."""
    return flt == EventFilter(since=flt.since, until=flt.until)


def _report(database: Database, export_id: str, written: int, now: datetime) -> bool:
    """Commit progress while the export is running; whether it still was."""
    with database.unit_of_work(write=True) as session:
        running = exports.transition(
            session, export_id, (exports.RUNNING,), rows_written=written, heartbeat_at=now
        )
        session.commit()
    return running


def fail_export(database: Database, export_id: str, error: str, now: datetime) -> None:
    """Mark a queued or running export failed; one that already ended keeps its status.

    The chunks every attempt left in the database go with it (a build still running
    notices at its next report and removes its own).
    """
    with database.unit_of_work(write=True) as session:
        failed = exports.transition(
            session,
            export_id,
            exports.ACTIVE,
            status=exports.FAILED,
            error=error[:2000],
            finished_at=now,
        )
        if failed:
            blobs.delete_chunks(session, [export_id])
        session.commit()


def expire_exports(database: Database, now: datetime) -> int:
    """Mark exports past their time expired and delete their files; how many it expired.

    Chunks are deleted in the transaction that marks their exports expired, so a sweep
    that dies half-way leaves none behind; files on disk go after its commit. Two sweeps
    at once expire each export once: rows another sweep holds are skipped (PostgreSQL),
    or the writers take turns (SQLite) and the second finds nothing left.
    """
    with database.unit_of_work(write=True) as session:
        expired = exports.claim_expired(session, now)
        blobs.delete_chunks(session, [export.id for export in expired])
        paths = [
            export.file_path
            for export in expired
            if export.file_path and not export.file_path.startswith(blobs.DATABASE_PREFIX)
        ]
        session.commit()
    for path in paths:
        Path(path).unlink(missing_ok=True)
    return len(expired)


# -- evidence -------------------------------------------------------------------------


def is_complete(flt: EventFilter) -> bool:
    """Whether an export with this filter holds its whole tree (no filter at all)."""
    return flt == EventFilter()


def evidence_chunks(database: Database, export: Export) -> Iterator[str]:
    """The evidence of a built export, as pieces of one JSON document (it may be large).

    ``{"format": "auditlog-evidence/1", "export_id", "export_format", "org_id",
    "filters", "complete", "tree_size", "checkpoint", "rows_total", …}`` and then:

    - complete (no filter): ``"leaf_hashes"``, the base64 leaf hash of every seq 1 …
      tree_size, in seq order: they rebuild the checkpoint's root, and every event of the
      tree must be in the file once;
    - filtered: ``"rows"``, ``[{"line", "seq", "proof"}]`` in file order (``line`` is
      the row's 1-based position among the file's rows, its line in a JSONL file), each
      ``proof`` the base64 RFC 9162 inclusion proof of ``seq`` in the tree of tree_size;
    - CSV exports also carry ``"events"``, the event object of each row in file order:
      CSV cells do not hold a whole event, so the verifier hashes these objects and
      compares each row with the cells ``event_cells`` renders from its object.

    The rows are read again with the export's own query: the events are append-only and
    the bound is a seq, so the query answers exactly the file's rows in the file's order.
    """
    flt = EventFilter.from_json(export.query)
    size = int(export.tree_size or 0)
    complete = is_complete(flt)
    fmt = export.format or "csv"
    head = {
        "format": EVIDENCE_FORMAT,
        "export_id": export.id,
        "export_format": fmt,
        "org_id": export.org_id,
        "filters": export.filters,
        "complete": complete,
        "tree_size": size,
        "checkpoint": export.checkpoint,
        "rows_total": export.rows_written,
    }
    yield json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
    if complete:
        yield ',"leaf_hashes":['
        yield from _leaf_hash_chunks(database, export.org_id, size)
    else:
        yield ',"rows":['
        yield from _proof_chunks(database, export.org_id, flt, size)
    yield "]"
    if fmt == "csv":
        yield ',"events":['
        yield from _event_chunks(database, export.org_id, flt, size)
        yield "]"
    yield "}"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _leaf_hash_chunks(database: Database, org_id: str, size: int) -> Iterator[str]:
    with database.unit_of_work() as session:
        for first in range(1, size + 1, EVIDENCE_CHUNK):
            last = min(size, first + EVIDENCE_CHUNK - 1)
            hashes = tlog.leaf_hashes(session, org_id, first, last)
            if len(hashes) != last - first + 1:
                raise LookupError(f"{org_id}: leaves {first}..{last} are not all stored")
            yield ("," if first > 1 else "") + ",".join(f'"{_b64(h)}"' for h in hashes)


def _rows_of(session: Any, org_id: str, flt: EventFilter, size: int) -> Any:
    dialect = session.get_bind().dialect.name
    statement = events_page_statement(dialect, org_id, flt, None, max_seq=size)
    return session.execute(statement.execution_options(yield_per=FETCH_BATCH))


def _proof_chunks(database: Database, org_id: str, flt: EventFilter, size: int) -> Iterator[str]:
    with database.unit_of_work() as rows, database.unit_of_work() as nodes:
        batch: list[tuple[int, int]] = []
        line = 0
        for row in _rows_of(rows, org_id, flt, size):
            line += 1
            batch.append((line, int(row.seq)))
            if len(batch) == EVIDENCE_CHUNK:
                yield ("," if line > len(batch) else "") + _proved(nodes, org_id, size, batch)
                batch = []
        if batch:
            yield ("," if line > len(batch) else "") + _proved(nodes, org_id, size, batch)


def _proved(session: Any, org_id: str, size: int, batch: list[tuple[int, int]]) -> str:
    """The rows of ``batch`` with their inclusion proofs, as JSON array items.

    The nodes a batch's proofs read are fetched first, 500 a query; one cache per batch
    keeps memory flat whatever the export's size.
    """
    wanted: set[tuple[int, int]] = set()
    for _, seq in batch:
        wanted.update(merkle.inclusion_nodes(seq - 1, size))
    reader = tlog.reader_of(session, org_id, sorted(wanted))
    items = []
    for line, seq in batch:
        proof = [_b64(h) for h in merkle.inclusion_proof(seq - 1, size, reader)]
        items.append(json.dumps({"line": line, "seq": seq, "proof": proof}, separators=(",", ":")))
    return ",".join(items)


def _event_chunks(database: Database, org_id: str, flt: EventFilter, size: int) -> Iterator[str]:
    with database.unit_of_work() as session:
        items: list[str] = []
        first = True
        for row in _rows_of(session, org_id, flt, size):
            items.append(json.dumps(event_document(row), ensure_ascii=False, separators=(",", ":")))
            if len(items) == EVIDENCE_CHUNK:
                yield ("" if first else ",") + ",".join(items)
                items, first = [], False
        if items:
            yield ("" if first else ",") + ",".join(items)
