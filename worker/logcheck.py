"""Checking the verifiable log: the stored tree against the events, an export against its proof.

``check_log`` (``auditlog log check``) reads each organisation's events in seq order, a
chunk at a time, recomputes every leaf from the stored row and the tree root at every
signed checkpoint size, and names the first event whose stored content no longer matches
its leaf. ``verify_export`` (``auditlog verify``) needs no database and no network: an
export file, its evidence (``GET /v1/exports/<id>/evidence``, see
``worker.exports.evidence_chunks``) and the log's public key prove that every row of the
file is in the signed tree, and for an export without filters that the file is the tree.

Both raise ``CheckFailed`` with one line per finding.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from storage import merkle, notes
from storage.accounts import NotFound
from storage.canonical import event_leaf
from storage.db import Database
from storage.models import Event, LogCheckpoint, LogKey, LogLeaf, LogTree, Organization
from storage.queries import event_document, public_event_id
from worker.exports import COLUMNS, EVIDENCE_FORMAT, event_cells

#: Leaves (and checkpoints) read per query: memory stays flat whatever the log's size.
CHUNK = 5000
#: Missing seqs named one by one at most; the rest are counted.
MAX_MISSING_NAMED = 1000


class CheckFailed(Exception):
    """What did not match, one line each (the last one a summary)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Frontier:
    """An RFC 9162 tree grown one leaf at a time, kept as its perfect subtrees (O(log n))."""

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[bytes] = []

    def append(self, leaf_hash: bytes) -> None:
        self._peaks.append(leaf_hash)
        self.size += 1
        size = self.size
        while size % 2 == 0:  # each trailing zero of the size closes one subtree
            right, left = self._peaks.pop(), self._peaks.pop()
            self._peaks.append(merkle.node_hash(left, right))
            size //= 2

    def root(self) -> bytes:
        if not self._peaks:
            return merkle.EMPTY_ROOT
        digest = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            digest = merkle.node_hash(peak, digest)
        return digest


# -- auditlog log check -----------------------------------------------------------------


@dataclass
class _Tally:
    organisations: int = 0
    events: int = 0
    checkpoints: int = 0
    findings: list[str] = field(default_factory=list)


def check_log(database: Database, org_id: str | None = None) -> dict[str, int]:
    """Recompute every organisation's tree (or ``org_id``'s) from its stored events.

    Returns ``{"organisations", "events", "checkpoints"}`` counted; raises ``CheckFailed``
    naming, per organisation, the first event whose content no longer hashes to its leaf,
    a gap in its seqs, or a checkpoint whose root or signature does not match.
    """
    tally = _Tally()
    with database.unit_of_work() as session:
        verifiers = [notes.NoteVerifier(key.vkey) for key in session.scalars(select(LogKey))]
        if org_id is not None:
            if session.get(Organization, org_id) is None:
                raise NotFound(f"organisation {org_id} does not exist")
            organisations = [org_id]
        else:
            organisations = sorted(
                set(session.scalars(select(Organization.id)))
                | set(session.scalars(select(LogTree.org_id)))
            )
    for org in organisations:
        tally.organisations += 1
        finding = _check_organisation(database, org, verifiers, tally)
        if finding is not None:
            tally.findings.append(finding)
    if tally.findings:
        raise CheckFailed(
            tally.findings
            + [
                f"auditlog log check: {len(tally.findings)} of {tally.organisations} "
                "organisations do not match their signed log"
            ]
        )
    return {
        "organisations": tally.organisations,
        "events": tally.events,
        "checkpoints": tally.checkpoints,
    }


def _leaf_rows(database: Database, org_id: str) -> Iterator[Any]:
    """The organisation's leaves in seq order, each with its event's columns (or NULLs)."""
    leaves, events = LogLeaf.__table__, Event.__table__
    after = 0
    while True:
        with database.unit_of_work() as session:
            rows = session.execute(
                select(leaves.c.seq, leaves.c.leaf_hash, leaves.c.event_id, events)
                .select_from(leaves.outerjoin(events, events.c.id == leaves.c.event_id))
                .where(leaves.c.org_id == org_id, leaves.c.seq > after)
                .order_by(leaves.c.seq)
                .limit(CHUNK)
            ).all()
        yield from rows
        if len(rows) < CHUNK:
            return
        after = int(rows[-1].seq)


def _checkpoints(database: Database, org_id: str) -> Iterator[LogCheckpoint]:
    after = -1
    while True:
        with database.unit_of_work() as session:
            rows = list(
                session.scalars(
                    select(LogCheckpoint)
                    .where(LogCheckpoint.org_id == org_id, LogCheckpoint.tree_size > after)
                    .order_by(LogCheckpoint.tree_size)
                    .limit(CHUNK)
                )
            )
        yield from rows
        if len(rows) < CHUNK:
            return
        after = rows[-1].tree_size


def _checkpoint_finding(
    checkpoint: LogCheckpoint, root: bytes, verifiers: list[notes.NoteVerifier]
) -> str | None:
    where = f"checkpoint of size {checkpoint.tree_size} in {checkpoint.org_id}"
    if bytes(checkpoint.root_hash) != root:
        return f"{where}: its root does not match the tree of the stored events"
    try:
        text = notes.open_note(checkpoint.note, verifiers)
    except notes.NoteRejected as exc:
        return f"{where}: its signature does not verify with any listed key ({exc})"
    try:
        origin, size, signed_root = notes.parse_checkpoint(text)
    except ValueError as exc:
        return f"{where}: its note is not a checkpoint ({exc})"
    if size != checkpoint.tree_size or signed_root != root:
        return f"{where}: the signed note holds another size or root than the row"
    if not origin.endswith(f"/{checkpoint.org_id}"):
        return f"{where}: the signed note is of another log ({origin})"
    return None


def _check_organisation(
    database: Database, org_id: str, verifiers: list[notes.NoteVerifier], tally: _Tally
) -> str | None:
    """The first mismatch in one organisation's log, or None."""
    frontier = Frontier()
    checkpoints = _checkpoints(database, org_id)
    pending = next(checkpoints, None)
    while pending is not None and pending.tree_size == 0:
        tally.checkpoints += 1
        if (finding := _checkpoint_finding(pending, frontier.root(), verifiers)) is not None:
            return finding
        pending = next(checkpoints, None)
    for row in _leaf_rows(database, org_id):
        seq = int(row.seq)
        if seq != frontier.size + 1:
            return f"seq {frontier.size + 1} in {org_id}: missing from the stored leaves"
        if row.id is None:
            return (
                f"event {public_event_id(int(row.event_id))} (seq {seq}) in {org_id}: "
                "its stored row is missing"
            )
        leaf = merkle.leaf_hash(event_leaf(event_document(row, seq=seq)))
        if leaf != bytes(row.leaf_hash):
            return (
                f"event {public_event_id(int(row.id))} (seq {seq}) in {org_id}: "
                "stored content no longer matches its leaf"
            )
        frontier.append(leaf)
        tally.events += 1
        while pending is not None and pending.tree_size == seq:
            tally.checkpoints += 1
            if (finding := _checkpoint_finding(pending, frontier.root(), verifiers)) is not None:
                return finding
            pending = next(checkpoints, None)
    if pending is not None:
        return (
            f"checkpoint of size {pending.tree_size} in {org_id}: beyond the "
            f"{frontier.size} stored leaves"
        )
    with database.unit_of_work() as session:
        tree = session.get(LogTree, org_id)
    # Read after the leaves: a larger tree grew meanwhile (the sequencer commits a tree's
    # head with its leaves), a smaller one or another root at this size does not match.
    size = tree.size if tree is not None else 0
    if size < frontier.size or (
        tree is not None and size == frontier.size and bytes(tree.root_hash) != frontier.root()
    ):
        return (
            f"{org_id}: the tree head (size {size}) does not match the "
            f"{frontier.size} stored leaves"
        )
    return None


# -- auditlog verify --------------------------------------------------------------------


@dataclass
class _Row:
    """One row of the export file: where it is and the event object it stands for."""

    line: int
    event: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def seq(self) -> Any:
        return self.event.get("seq") if self.event is not None else None


def _b64_digest(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise CheckFailed([f"evidence: {what} is not a base64 string"])
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CheckFailed([f"evidence: {what} is not base64"]) from None
    if len(digest) != 32:
        raise CheckFailed([f"evidence: {what} is not a 32-byte hash"])
    return digest


def _strict_object(text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise ValueError(f"duplicate key {key!r}")
            found[key] = value
        return found

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _opened_checkpoint(
    evidence: dict[str, Any], vkey: str, origin_wanted: str | None = None
) -> tuple[str, int, bytes]:
    """The checkpoint's (origin, size, root) once its signature by ``vkey`` verifies (and, with
    ``origin_wanted``, once it names exactly that log)."""
    try:
        verifier = notes.NoteVerifier(vkey.strip())
    except Exception as exc:
        raise CheckFailed([f"key: not a verifier key ({exc})"]) from None
    note = evidence["checkpoint"]
    key_name, key_hash = verifier.name, verifier.key_id.hex()
    signed_by = []
    for line in note.split("\n"):
        if not line.startswith("\u2014 "):
            continue
        name, _, blob = line[2:].partition(" ")
        try:
            key_id = base64.b64decode(blob, validate=True)[:4].hex()
        except (binascii.Error, ValueError):
            key_id = "?"
        signed_by.append((name, key_id))
    if (key_name, key_hash) not in signed_by:
        names = ", ".join(f"{name}+{key_id}" for name, key_id in signed_by) or "no key"
        raise CheckFailed(
            [f"checkpoint: not signed by the given key {key_name}+{key_hash} (signed by {names})"]
        )
    try:
        text = notes.open_note(note, [verifier])
    except notes.NoteRejected as exc:
        raise CheckFailed(
            [f"checkpoint: the signature by {key_name}+{key_hash} does not verify ({exc})"]
        ) from None
    try:
        origin, size, root = notes.parse_checkpoint(text)
    except ValueError as exc:
        raise CheckFailed([f"checkpoint: not a checkpoint ({exc})"]) from None
    if size != evidence["tree_size"]:
        raise CheckFailed(
            [
                f"checkpoint: it is of size {size}, the evidence says tree_size "
                f"{evidence['tree_size']}"
            ]
        )
    if not origin.endswith(f"/{evidence['org_id']}"):
        raise CheckFailed(
            [f"checkpoint: it is the log {origin}, not the log of {evidence['org_id']}"]
        )
    if origin_wanted is not None and origin != origin_wanted:
        raise CheckFailed([f"checkpoint: it is the log {origin}, not {origin_wanted}"])
    return origin, size, root


def _checked_evidence(evidence: Any) -> dict[str, Any]:
    if not isinstance(evidence, dict) or evidence.get("format") != EVIDENCE_FORMAT:
        raise CheckFailed([f"evidence: not an {EVIDENCE_FORMAT} document"])
    wanted = {
        "export_format": str,
        "org_id": str,
        "complete": bool,
        "tree_size": int,
        "checkpoint": str,
    }
    for name, kind in wanted.items():
        if not isinstance(evidence.get(name), kind):
            raise CheckFailed([f"evidence: {name} is missing or not a {kind.__name__}"])
    if evidence["export_format"] not in ("csv", "jsonl"):
        raise CheckFailed([f"evidence: unknown export_format {evidence['export_format']!r}"])
    if evidence["tree_size"] < 0:
        raise CheckFailed(["evidence: tree_size is negative"])
    listed = "leaf_hashes" if evidence["complete"] else "rows"
    if not isinstance(evidence.get(listed), list):
        raise CheckFailed([f"evidence: {listed} is missing"])
    if evidence["export_format"] == "csv" and not isinstance(evidence.get("events"), list):
        raise CheckFailed(["evidence: a CSV export's evidence needs its events"])
    return evidence


def _jsonl_rows(data: bytes) -> list[_Row]:
    rows = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the file's last line end (a last line without one is parsed too)
    for number, raw in enumerate(lines, start=1):
        row = _Row(number)
        try:
            event = _strict_object(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            row.problems.append(f"not a JSON object ({exc})")
        else:
            if isinstance(event, dict):
                row.event = event
            else:
                row.problems.append("not a JSON object")
        rows.append(row)
    if data and not data.endswith(b"\n") and rows and not rows[-1].problems:
        rows[-1].problems.append("the file ends inside this line (truncated)")
    return rows


def _csv_rows(data: bytes, events: list[Any]) -> list[_Row]:
    """The CSV's rows, each matched by its event id with the evidence's event object."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckFailed([f"the file is not UTF-8 ({exc})"]) from None
    if not text.startswith("\ufeff"):
        raise CheckFailed(["line 1: the file does not start with the export's byte-order mark"])
    by_id: dict[str, dict[str, Any]] = {}
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise CheckFailed(["evidence: an event is not an event object"])
        by_id[event["id"]] = event
    reader = csv.reader(io.StringIO(text[1:], newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise CheckFailed([f"line 1: not CSV ({exc})"]) from None
    if header != COLUMNS:
        raise CheckFailed(["line 1: not the export's header"])
    rows = []
    start = reader.line_num + 1
    try:
        for record in reader:
            row = _Row(start)
            start = reader.line_num + 1
            rows.append(row)
            if len(record) != len(COLUMNS):
                row.problems.append(f"{len(record)} cells, not {len(COLUMNS)}")
                continue
            event = by_id.get(record[-1])
            if event is None:
                row.problems.append(f"event {record[-1]!r} is not in the evidence (not signed)")
                continue
            row.event = event
            try:
                expected = event_cells(event)
            except (KeyError, TypeError, AttributeError):
                row.problems.append("its event in the evidence is not an event object")
                continue
            changed = [name for name, a, b in zip(COLUMNS, record, expected, strict=True) if a != b]
            if changed:
                verb = "differs" if len(changed) == 1 else "differ"
                row.problems.append(f"{', '.join(changed)} {verb} from the signed event")
    except csv.Error as exc:
        rows.append(_Row(start, problems=[f"not CSV ({exc})"]))
    if data and not data.endswith(b"\n") and rows and not rows[-1].problems:
        rows[-1].problems.append("the file ends inside this row (truncated)")
    return rows


def _log_key(event: dict[str, Any]) -> tuple[datetime, str] | None:
    try:
        moment = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
        return moment, str(event["id"])
    except (KeyError, ValueError, TypeError):
        return None


def verify_export(
    path: Path,
    evidence_path: Path,
    vkey: str,
    origin: str | None = None,
    require_complete: bool = False,
) -> dict[str, Any]:
    """Prove the export file at ``path`` with its evidence and the log's public key.

    Returns ``{"verified": rows, "tree_size", "complete", "origin"}``; raises
    ``CheckFailed`` with ``line L (seq S): reason`` for each failing row, ``seq S: missing
    from the file`` for each row the file lacks, and a summary line.

    The evidence document itself is not signed (the checkpoint in it is): ``origin`` pins
    the log the checkpoint must name, and ``require_complete`` refuses evidence that only
    proves the rows to be in the log (a filtered export) where the whole log was expected.
    """
    try:
        evidence = _checked_evidence(_strict_object(evidence_path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckFailed([f"evidence: cannot be read ({exc})"]) from None
    log_origin, size, root = _opened_checkpoint(evidence, vkey, origin)
    complete: bool = evidence["complete"]
    if require_complete and not complete:
        raise CheckFailed(
            [
                "evidence: it proves the rows of a filtered export, not the whole log "
                "(--complete was given)"
            ]
        )

    leaves: list[bytes] = []
    proofs: dict[int, list[bytes]] = {}
    expected_order: list[int] = []
    if complete:
        if len(evidence["leaf_hashes"]) != size:
            raise CheckFailed(
                [f"evidence: {len(evidence['leaf_hashes'])} leaf hashes for a tree of {size}"]
            )
        frontier = Frontier()
        for number, value in enumerate(evidence["leaf_hashes"], start=1):
            leaves.append(_b64_digest(value, f"the leaf hash of seq {number}"))
            frontier.append(leaves[-1])
        if frontier.root() != root:
            raise CheckFailed(["evidence: its leaf hashes do not rebuild the checkpoint's root"])
    else:
        for item in evidence["rows"]:
            seq: Any = item.get("seq") if isinstance(item, dict) else None
            if not _is_seq(seq) or not 1 <= seq <= size or seq in proofs:
                raise CheckFailed([f"evidence: a row's seq {seq!r} is not a seq of the tree"])
            hashes = item.get("proof")
            if not isinstance(hashes, list):
                raise CheckFailed([f"evidence: seq {seq} has no proof"])
            proofs[seq] = [_b64_digest(h, f"the proof of seq {seq}") for h in hashes]
            expected_order.append(seq)

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckFailed([f"the file cannot be read ({exc})"]) from None
    if evidence["export_format"] == "csv":
        rows = _csv_rows(data, evidence["events"])
    else:
        rows = _jsonl_rows(data)

    seen: dict[int, int] = {}
    previous: tuple[tuple[datetime, str], int] | None = None
    for row in rows:
        if row.event is None:
            continue
        seq = row.seq
        if not _is_seq(seq) or not 1 <= seq <= size:
            row.problems.append(f"its seq is not a seq of the signed tree of size {size}")
        elif seq in seen:
            row.problems.append(f"a duplicate of line {seen[seq]}")
        else:
            seen[seq] = row.line
            try:
                leaf = merkle.leaf_hash(event_leaf(row.event))
            except Exception as exc:  # a value RFC 8785 cannot hold
                row.problems.append(f"not a canonical event object ({exc})")
            else:
                if complete and leaf != leaves[seq - 1]:
                    row.problems.append("does not match the signed leaf of its seq (altered)")
                elif not complete and seq not in proofs:
                    row.problems.append("not a row of this export (no inclusion proof for it)")
                elif not complete and not merkle.verify_inclusion(
                    seq - 1, size, leaf, proofs[seq], root
                ):
                    row.problems.append("not in the signed tree (altered)")
        key = _log_key(row.event)
        if key is None:
            row.problems.append("no occurred_at and id to place it in the log's order")
        else:
            if previous is not None and not key < previous[0]:
                row.problems.append(f"out of the log's order (not older than line {previous[1]})")
            previous = (key, row.line)

    findings = []
    failing = [row for row in rows if row.problems]
    for row in failing:
        shown = row.seq if _is_seq(row.seq) else "?"
        findings.append(f"line {row.line} (seq {shown}): {'; '.join(row.problems)}")
    wanted = range(1, size + 1) if complete else expected_order
    missing = [seq for seq in wanted if seq not in seen]
    for seq in missing[:MAX_MISSING_NAMED]:
        findings.append(f"seq {seq}: missing from the file")
    if len(missing) > MAX_MISSING_NAMED:
        findings.append(f"… and {len(missing) - MAX_MISSING_NAMED} more seqs missing")
    if not findings and not complete:
        # Implied by the checks above (same seqs, each once, both in the log's order).
        for row, seq in zip(rows, expected_order, strict=False):
            if row.seq != seq:
                findings.append(f"line {row.line} (seq {row.seq}): the evidence has seq {seq} here")
    if findings:
        findings.append(
            f"auditlog verify: {len(failing)} of {len(rows)} rows failed, {len(missing)} "
            f"missing: the file is not what checkpoint {size} signed"
        )
        raise CheckFailed(findings)
    return {
        "verified": len(rows),
        "tree_size": size,
        "complete": complete,
        "origin": log_origin,
    }
