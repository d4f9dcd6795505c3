"""Where finished export files live: a small interface, a database store and a folder store.

Web, worker and beat may run on different hosts that share only the database and Redis, so
by default (``EXPORT_STORAGE=database``) an export's file is kept in the database itself:
``export_chunks`` rows of ``CHUNK_BYTES`` each, inserted one transaction at a time as the
build writes and read back one at a time by a download, so memory stays flat both ways
whatever the file's size. ``EXPORT_STORAGE=filesystem`` keeps files under ``EXPORT_DIR``
instead, which only works when every web process reads the folder the workers write.

Every build of an export writes its own *attempt* (a random id): two builds of one export
(a restart by beat's sweeper while the first still runs, a retry after a worker died
mid-way) never mix their chunks. A file is served only through the reference that the
transaction moving its export to ``succeeded`` stored in ``exports.file_path``, so a
half-written attempt is never visible, and the reference says which store holds the file
(``db:<attempt>``, else a filesystem path). Another store (an object store, say) adds a
class with the three methods of ``ExportStore`` and a prefix of its own.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from storage.db import Database
from storage.models import ExportChunk
from storage.settings import Settings

#: The size of each stored chunk but the last (and of each read of a file on disk).
CHUNK_BYTES = 1024 * 1024
#: Full chunks a build may have waiting for their insert (memory: about this many MiB).
PENDING_CHUNKS = 2
#: The prefix of a reference to a file in the database store.
DATABASE_PREFIX = "db:"

chunks = ExportChunk.__table__


class ExportWriter(Protocol):
    """One attempt at an export's file, written in order and then served or discarded."""

    #: What ``exports.file_path`` holds once this attempt is the export's file.
    reference: str

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Make everything written durable. Nothing is served until ``publish``."""

    def publish(self) -> None:
        """Called inside the transaction that stores ``reference`` as the export's file."""

    def discard(self) -> None:
        """This attempt will not be served (it lost, failed, or its commit did): remove it."""


class StoredFile(Protocol):
    """A finished file: its length in bytes (for Content-Length), then its bytes in order."""

    size: int

    def chunks(self) -> Iterator[bytes]: ...


class ExportStore(Protocol):
    def writer(self, export_id: str, suffix: str) -> ExportWriter: ...

    def reader(self, export_id: str, reference: str) -> StoredFile | None:
        """The file ``reference`` names, or None once it is gone."""

    def delete(self, export_id: str, keep: str | None = None) -> None:
        """Remove every attempt of the export, except the one ``keep`` refers to. Idempotent."""


# -- in the database -------------------------------------------------------------------


def delete_chunks(session: Session, export_ids: Collection[str], keep: str | None = None) -> None:
    """Delete the chunks of every attempt of these exports (in the caller's transaction)."""
    if not export_ids:
        return
    statement = delete(ExportChunk).where(ExportChunk.export_id.in_(list(export_ids)))
    if keep is not None and keep.startswith(DATABASE_PREFIX):
        statement = statement.where(ExportChunk.attempt != keep[len(DATABASE_PREFIX) :])
    session.execute(statement)


class DatabaseWriter:
    """Cuts what is written into chunks and inserts each in a transaction of its own.

    The inserts run on a thread of the writer's own, at most ``PENDING_CHUNKS`` behind, so
    that reading the rows and storing the file overlap (as writing to a file did) while
    memory stays bounded. A failed insert is raised by the next ``write`` or ``close``.
    """

    def __init__(self, database: Database, export_id: str) -> None:
        self.database, self.export_id = database, export_id
        self.attempt = secrets.token_hex(16)
        self.reference = DATABASE_PREFIX + self.attempt
        self.buffer = bytearray()
        self.queued = 0
        self.pending: queue.Queue[bytes | None] = queue.Queue(maxsize=PENDING_CHUNKS)
        self.failure: Exception | None = None
        self.abandoned = False
        self.thread: threading.Thread | None = None

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= CHUNK_BYTES:
            self._queue(bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]

    def close(self) -> None:
        # An empty file still gets its one (empty) chunk: no chunk at all means "gone".
        if self.buffer or self.queued == 0:
            self._queue(bytes(self.buffer))
            self.buffer.clear()
        self._stop()
        if self.failure is not None:
            raise self.failure

    def publish(self) -> None:
        """Nothing to move: the reference stored in the same transaction is what serves it."""

    def discard(self) -> None:
        self.buffer.clear()
        self.abandoned = True
        self._stop()
        with self.database.unit_of_work(write=True) as session:
            session.execute(
                delete(ExportChunk).where(
                    ExportChunk.export_id == self.export_id, ExportChunk.attempt == self.attempt
                )
            )
            session.commit()

    def _queue(self, data: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        if self.thread is None:
            self.thread = threading.Thread(
                target=self._insert_queued, name=f"store-{self.export_id}", daemon=True
            )
            self.thread.start()
        self.pending.put(data)
        self.queued += 1

    def _stop(self) -> None:
        """Wait for the inserts queued so far (all of them unless abandoned) and the thread."""
        if self.thread is None:
            return
        if self.abandoned:
            while True:  # the thread may be gone: make room for the end mark
                try:
                    self.pending.get_nowait()
                except queue.Empty:
                    break
        self.pending.put(None)
        self.thread.join()
        self.thread = None

    def _insert_queued(self) -> None:
        n = 0
        while (data := self.pending.get()) is not None:
            if self.failure is not None or self.abandoned:
                continue  # keep taking what is queued, so that the writer never blocks
            try:
                with self.database.unit_of_work(write=True) as session:
                    if self.database.dialect == "postgresql":
                        # No WAL flush per chunk: the synchronous commit that makes the
                        # export succeed flushes the log past every chunk before it.
                        session.execute(text("SET LOCAL synchronous_commit = off"))
                    session.execute(
                        insert(ExportChunk).values(
                            export_id=self.export_id, attempt=self.attempt, n=n, data=data
                        )
                    )
                    session.commit()
            except Exception as exc:
                self.failure = exc
            n += 1


class DatabaseFile:
    """A stored attempt, read one chunk per short transaction (none is held open between)."""

    def __init__(self, database: Database, export_id: str, attempt: str, count: int, size: int):
        self.database, self.export_id, self.attempt = database, export_id, attempt
        self.count, self.size = count, size

    def chunks(self) -> Iterator[bytes]:
        for n in range(self.count):
            with self.database.unit_of_work() as session:
                data = session.scalar(
                    select(chunks.c.data).where(
                        chunks.c.export_id == self.export_id,
                        chunks.c.attempt == self.attempt,
                        chunks.c.n == n,
                    )
                )
            if data is None:  # deleted under the download (the export expired meanwhile)
                raise LookupError(f"{self.export_id}: chunk {n} of its file is gone")
            yield bytes(data)


class DatabaseStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def writer(self, export_id: str, suffix: str) -> DatabaseWriter:
        return DatabaseWriter(self.database, export_id)

    def reader(self, export_id: str, reference: str) -> DatabaseFile | None:
        attempt = reference[len(DATABASE_PREFIX) :]
        with self.database.unit_of_work() as session:
            count, size = session.execute(
                select(func.count(), func.coalesce(func.sum(func.length(chunks.c.data)), 0)).where(
                    chunks.c.export_id == export_id, chunks.c.attempt == attempt
                )
            ).one()
        if not count:
            return None
        return DatabaseFile(self.database, export_id, attempt, int(count), int(size))

    def delete(self, export_id: str, keep: str | None = None) -> None:
        with self.database.unit_of_work(write=True) as session:
            delete_chunks(session, [export_id], keep)
            session.commit()


# -- in a folder -----------------------------------------------------------------------


class FolderWriter:
    """``<id>.<random>.part``, fsynced on close, renamed to ``<id>.<suffix>`` on publish."""

    def __init__(self, folder: Path, export_id: str, suffix: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.partial = folder / f"{export_id}.{secrets.token_hex(8)}.part"
        self.final = folder / f"{export_id}.{suffix}"
        self.reference = str(self.final)
        self.handle = open(self.partial, "wb")  # noqa: SIM115 - closed in close() or discard()

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def publish(self) -> None:
        os.replace(self.partial, self.final)

    def discard(self) -> None:
        self.handle.close()
        self.partial.unlink(missing_ok=True)


class FolderFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    def chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as handle:
            while block := handle.read(CHUNK_BYTES):
                yield block


class FolderStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def writer(self, export_id: str, suffix: str) -> FolderWriter:
        return FolderWriter(self.folder, export_id, suffix)

    def reader(self, export_id: str, reference: str) -> FolderFile | None:
        try:
            return FolderFile(Path(reference))
        except FileNotFoundError:
            return None

    def delete(self, export_id: str, keep: str | None = None) -> None:
        for path in self.folder.glob(f"{export_id}.*"):
            if str(path) != keep:
                path.unlink(missing_ok=True)


# -- choosing one ----------------------------------------------------------------------


def export_store(settings: Settings, database: Database, folder: Path | None = None) -> ExportStore:
    """Where new export files go: ``settings.export_storage``; ``folder`` overrides EXPORT_DIR."""
    if settings.export_storage == "filesystem":
        return FolderStore(folder if folder is not None else settings.export_dir)
    return DatabaseStore(database)


def open_file(database: Database, export_id: str, reference: str) -> StoredFile | None:
    """The file an export's ``file_path`` names, from whichever store holds it; None if gone.

    The reference, not the current setting, picks the store: a file written before
    ``EXPORT_STORAGE`` changed still downloads (from the host that has it, for a path).
    """
    if reference.startswith(DATABASE_PREFIX):
        return DatabaseStore(database).reader(export_id, reference)
    return FolderStore(Path(reference).parent).reader(export_id, reference)
