"""The verifiable log's tables: leaves, complete-subtree nodes, tree heads, checkpoints, keys.

The math is in ``storage.merkle`` (pure, tested against RFC 9162 vectors) and the note format
in ``storage.notes``; this module reads and writes the rows they work over. Every function
takes the caller's session.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, select, text, tuple_, update
from sqlalchemy.orm import Session

from storage import merkle, notes
from storage.credentials import SecretBox
from storage.db import driver_of
from storage.inbox import dialect_insert
from storage.models import Event, LogCheckpoint, LogKey, LogLeaf, LogNode, LogTree
from storage.settings import Settings

events: Table = Event.__table__  # type: ignore[assignment]
leaves: Table = LogLeaf.__table__  # type: ignore[assignment]
nodes: Table = LogNode.__table__  # type: ignore[assignment]


#: The advisory lock under which a first signing key is generated ("logkey").
KEY_LOCK = 0x6C6F676B6579


class NodeCache:
    """Reads complete-subtree hashes of one organisation, each at most once per instance.

    Nodes written in the same transaction are added with ``remember`` so that the Merkle
    functions see them without another query.
    """

    def __init__(self, session: Session, org_id: str) -> None:
        self.session = session
        self.org_id = org_id
        self._known: dict[tuple[int, int], bytes] = {}

    def remember(self, created: Iterable[tuple[int, int, bytes]]) -> None:
        for level, index, digest in created:
            self._known[(level, index)] = digest

    def prefetch(self, wanted: Iterable[tuple[int, int]]) -> None:
        missing = list(dict.fromkeys(key for key in wanted if key not in self._known))
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            rows = self.session.execute(
                select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(
                    nodes.c.org_id == self.org_id,
                    tuple_(nodes.c.level, nodes.c.idx).in_(chunk),
                )
            )
            for level, index, digest in rows:
                self._known[(level, index)] = bytes(digest)

    def __call__(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self._known:
            digest = self.session.scalar(
                select(nodes.c.hash).where(
                    nodes.c.org_id == self.org_id, nodes.c.level == level, nodes.c.idx == index
                )
            )
            if digest is None:
                raise LookupError(f"no node ({level}, {index}) in {self.org_id}'s tree")
            self._known[key] = bytes(digest)
        return self._known[key]


def reader_of(session: Session, org_id: str, wanted: Iterable[tuple[int, int]]) -> NodeCache:
    """A ``NodeCache`` holding ``wanted`` already, read in one query (500 nodes a query).

    Every proof and root this module's callers compute goes through here: read one by one,
    the two dozen nodes of a proof cost two dozen round trips.
    """
    reader = NodeCache(session, org_id)
    reader.prefetch(wanted)
    return reader


def inclusion_proof(session: Session, org_id: str, index: int, size: int) -> list[bytes]:
    """RFC 9162 PATH(index, D[0:size]) from the stored nodes; ``ValueError`` as
    ``merkle.inclusion_proof``."""
    reader = reader_of(session, org_id, merkle.inclusion_nodes(index, size))
    return merkle.inclusion_proof(index, size, reader)


def consistency_proof(session: Session, org_id: str, first: int, second: int) -> list[bytes]:
    """RFC 9162 PROOF(first, D[0:second]) from the stored nodes; ``ValueError`` as
    ``merkle.consistency_proof``."""
    reader = reader_of(session, org_id, merkle.consistency_nodes(first, second))
    return merkle.consistency_proof(first, second, reader)


def save_leaves(session: Session, org_id: str, rows: Sequence[tuple[int, int, bytes]]) -> None:
    """(seq, event id, leaf hash) rows."""
    _append(session, leaves, ("seq", "event_id", "leaf_hash"), org_id, rows)


def save_nodes(session: Session, org_id: str, created: Sequence[tuple[int, int, bytes]]) -> None:
    """(level, index, hash) rows of complete subtrees."""
    _append(session, nodes, ("level", "idx", "hash"), org_id, created)


def _append(
    session: Session,
    table: Any,
    columns: tuple[str, ...],
    org_id: str,
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Insert ``rows`` (values of ``columns``) of one organisation in the session's
    transaction. On PostgreSQL with ``COPY … FROM STDIN``: a pass writes thousands of
    rows, and COPY costs a fraction of a multi-row INSERT."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(
            table.insert(),
            [{"org_id": org_id, **dict(zip(columns, row, strict=True))} for row in rows],
        )
        return
    target = f"{table.name} (org_id, {', '.join(columns)})"
    with (
        driver_of(session) as driver,
        driver.cursor() as cursor,
        cursor.copy(f"COPY {target} FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row((org_id, *row))


def tree_of(session: Session, org_id: str, lock: bool = False) -> LogTree | None:
    return session.get(LogTree, org_id, with_for_update=lock)


def tree_size(session: Session, org_id: str) -> int:
    tree = tree_of(session, org_id)
    return tree.size if tree is not None else 0


def seqs_of(session: Session, event_ids: Sequence[int]) -> dict[int, int]:
    """The seq of each sequenced event among ``event_ids``."""
    found: dict[int, int] = {}
    for start in range(0, len(event_ids), 1000):
        chunk = list(event_ids[start : start + 1000])
        rows = session.execute(
            select(leaves.c.event_id, leaves.c.seq).where(leaves.c.event_id.in_(chunk))
        )
        found.update((int(e), int(s)) for e, s in rows)
    return found


def feed_rows(session: Session, org_id: str, after: int, limit: int) -> list[Row[Any]]:
    """Events with ``seq > after`` in seq order, each row with its ``seq``."""
    statement = (
        select(events, leaves.c.seq)
        .select_from(leaves.join(events, events.c.id == leaves.c.event_id))
        .where(leaves.c.org_id == org_id, leaves.c.seq > after)
        .order_by(leaves.c.seq)
        .limit(limit)
    )
    return list(session.execute(statement).all())


def leaf_hashes(session: Session, org_id: str, first: int, last: int) -> list[bytes]:
    """Leaf hashes of seq ``first`` .. ``last`` inclusive, in order."""
    rows = session.execute(
        select(leaves.c.leaf_hash)
        .where(leaves.c.org_id == org_id, leaves.c.seq >= first, leaves.c.seq <= last)
        .order_by(leaves.c.seq)
    )
    return [bytes(digest) for (digest,) in rows]


# -- checkpoints ------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    org_id: str
    tree_size: int
    root_hash: bytes
    note: str
    created_at: datetime

    def document(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "checkpoint": self.note,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
        }


def _checkpoint(row: LogCheckpoint) -> Checkpoint:
    return Checkpoint(row.org_id, row.tree_size, bytes(row.root_hash), row.note, row.created_at)


def latest_checkpoint(session: Session, org_id: str) -> Checkpoint | None:
    row = session.scalars(
        select(LogCheckpoint)
        .where(LogCheckpoint.org_id == org_id)
        .order_by(LogCheckpoint.tree_size.desc())
        .limit(1)
    ).first()
    return _checkpoint(row) if row is not None else None


def checkpoint_at(session: Session, org_id: str, size: int) -> Checkpoint | None:
    row = session.get(LogCheckpoint, (org_id, size))
    return _checkpoint(row) if row is not None else None


def log_origin(settings: Settings, org_id: str) -> str:
    return f"{settings.log_origin}/{org_id}"


def sign_checkpoint(
    session: Session, settings: Settings, org_id: str, size: int, now: datetime
) -> Checkpoint:
    """Sign (or find) the checkpoint of ``size``; checked consistent with the latest first.

    Raises ``ValueError`` if the tree at ``size`` is not consistent with the latest signed
    checkpoint: a tree that was rewritten must never be signed.
    """
    existing = checkpoint_at(session, org_id, size)
    if existing is not None:
        return existing
    previous = latest_checkpoint(session, org_id)
    # Checked against the latest checkpoint, the smaller of the two sizes first.
    pair = sorted((previous.tree_size, size)) if previous and previous.tree_size > 0 else None
    wanted = merkle.root_nodes(size) + (merkle.consistency_nodes(*pair) if pair else [])
    reader = reader_of(session, org_id, wanted)  # the root and the proof: one query
    root = merkle.root(size, reader)
    if previous is not None and pair is not None and pair[0] != pair[1]:
        first, second = pair
        roots = {previous.tree_size: previous.root_hash, size: root}
        proof = merkle.consistency_proof(first, second, reader)
        if not merkle.verify_consistency(first, second, roots[first], roots[second], proof):
            raise ValueError(
                f"{org_id}: the tree of size {size} is not consistent with checkpoint "
                f"{previous.tree_size}; refusing to sign"
            )
    signer = active_signer(session, settings, now)
    note = notes.sign_note(
        notes.checkpoint_text(log_origin(settings, org_id), size, root), [signer]
    )
    insert = dialect_insert(session)
    session.execute(
        insert(LogCheckpoint.__table__)
        .values(
            org_id=org_id,
            tree_size=size,
            root_hash=root,
            note=note,
            key_id=signer.key_id.hex(),
            created_at=now,
        )
        .on_conflict_do_nothing()
    )
    session.execute(
        update(LogTree)
        .where(LogTree.org_id == org_id, LogTree.checkpoint_size < size)
        .values(checkpoint_size=size, checkpointed_at=now)
    )
    found = checkpoint_at(session, org_id, size)
    assert found is not None
    return found


def due_for_checkpoint(session: Session, older_than: datetime) -> list[tuple[str, int]]:
    """(org, size) of trees grown since their last checkpoint, signed before ``older_than``."""
    rows = session.execute(
        select(LogTree.org_id, LogTree.size).where(
            LogTree.size > LogTree.checkpoint_size,
            (LogTree.checkpointed_at.is_(None)) | (LogTree.checkpointed_at <= older_than),
        )
    )
    return [(org, int(size)) for org, size in rows]


# -- keys -------------------------------------------------------------------------------


def _store_key(
    session: Session,
    settings: Settings,
    signer: notes.NoteSigner,
    private: str | None,
    now: datetime,
) -> None:
    sealed = SecretBox(settings.secret_keys).seal(private) if private is not None else None
    insert = dialect_insert(session)
    session.execute(
        insert(LogKey.__table__)
        .values(
            key_id=signer.key_id.hex(),
            name=signer.name,
            public_key=signer.public_key,
            vkey=signer.vkey,
            private_key_encrypted=sealed,
            created_at=now,
        )
        .on_conflict_do_nothing()
    )


def active_signer(session: Session, settings: Settings, now: datetime) -> notes.NoteSigner:
    """``LOG_SIGNING_KEY``'s signer, else the stored active key, generated on first use."""
    if settings.log_signing_key:
        signer = notes.NoteSigner(settings.log_signing_key)
        if session.get(LogKey, signer.key_id.hex()) is None:
            _store_key(session, settings, signer, None, now)
        return signer
    if session.get_bind().dialect.name == "postgresql":
        # Web, worker and beat may all need the first key at once: one makes it.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": KEY_LOCK})
    row = session.scalars(
        select(LogKey)
        .where(LogKey.retired_at.is_(None), LogKey.private_key_encrypted.is_not(None))
        .order_by(LogKey.created_at.desc())
        .limit(1)
    ).first()
    if row is not None and row.private_key_encrypted is not None:
        return notes.NoteSigner(SecretBox(settings.secret_keys).open(row.private_key_encrypted))
    private = notes.generate_key(settings.log_origin)
    signer = notes.NoteSigner(private)
    _store_key(session, settings, signer, private, now)
    return signer


def rotate_key(session: Session, settings: Settings, now: datetime) -> notes.NoteSigner:
    """Retire every stored key and make a new one; old public keys stay listed."""
    session.execute(update(LogKey).where(LogKey.retired_at.is_(None)).values(retired_at=now))
    private = notes.generate_key(settings.log_origin)
    signer = notes.NoteSigner(private)
    _store_key(session, settings, signer, private, now)
    return signer


def all_keys(session: Session) -> list[LogKey]:
    return list(session.scalars(select(LogKey).order_by(LogKey.created_at, LogKey.key_id)))
