"""The tables. One migration history (``storage/migrations``) builds them on SQLite and PostgreSQL.

Clocks are ``(occurred_at in epoch microseconds, sequence)`` pairs: comparable as tuples,
compact in JSON, exact in a BIGINT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import BigIntKey, IPAddress, JSONDocument, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(64)
EXTERNAL_ID = String(200)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """A bearer key of one organisation; only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: What the key may do, space-separated (``read export restore console``).
    scopes: Mapped[str] = mapped_column(String(100))
    #: Refreshed at most once a minute, so that reads do not each write.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Source(Base):
    """A webhook sender. Its signing secret is kept encrypted: HMAC needs the key itself."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: After ``sources rotate-secret``: the former secret, which verifies until it expires.
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Notification(Base):
    """The durable inbox: a row exists before the webhook answers 202."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        Index(
            "ix_notifications_queued",
            "enqueued_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
    )

    pk: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    # No foreign keys on the hot insert path (they cost a quarter of its time): both ids
    # come from a source row just read, and sources are never deleted.
    org_id: Mapped[str] = mapped_column(ID)
    # None for changes made through the API (restores), which no source sent.
    source_id: Mapped[str | None] = mapped_column(ID)
    external_id: Mapped[str] = mapped_column(String(220))
    kind: Mapped[str] = mapped_column(String(16))
    entity_type: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(EXTERNAL_ID)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sequence: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Entity(Base):
    """Current state of one record, with the clocks that make delivery order irrelevant.

    ``clocks`` holds ``props`` (key → clock, tombstones included), ``snapshot`` (the last
    complete property set), ``rels`` (relationship name → clock of the last complete list),
    ``exists`` (last snapshot or patch) and ``deleted`` (last delete). A row may exist only
    to be locked or to carry a delete seen before any state: such a row has no ``exists``.
    """

    __tablename__ = "entities"

    org_id: Mapped[str] = mapped_column(ID, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity_id: Mapped[str] = mapped_column(EXTERNAL_ID, primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(EXTERNAL_ID)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    clocks: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    baseline: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def known(self) -> bool:
        """Whether any state or deletion was ever recorded (a bare row is only a lock)."""
        return bool(self.clocks.get("exists") or self.clocks.get("deleted"))


class Edge(Base):
    """One relationship between two records, shared by both ends.

    ``kind`` fixes the types of the ends: ``app_person``, ``app_team``, ``app_org``,
    ``team_person``, ``device_person``, ``license_person``. ``present`` false is a tombstone.
    """

    __tablename__ = "edges"
    __table_args__ = (Index("ix_edges_org_id_kind_b_id", "org_id", "kind", "b_id"),)

    org_id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    a_id: Mapped[str] = mapped_column(EXTERNAL_ID, primary_key=True)
    b_id: Mapped[str] = mapped_column(EXTERNAL_ID, primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean)
    clock_us: Mapped[int] = mapped_column(BigInteger)
    clock_seq: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """The log. Append-only; the public id is ``evt_`` and the key as 16 hex digits."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_org_time", "org_id", "occurred_at", "id"),
        Index("ix_events_org_entity_type_time", "org_id", "entity_type", "occurred_at", "id"),
        Index("ix_events_org_actor_time", "org_id", "actor_id", "occurred_at", "id"),
        Index("ix_events_org_type_time", "org_id", "type", "occurred_at", "id"),
        Index("ix_events_org_ip", "org_id", "ip_address", "occurred_at", "id"),
        # One notification yields each of its events once, even if processed twice.
        Index("ix_events_notification", "notification_pk", "position", unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=False)
    org_id: Mapped[str] = mapped_column(ID)
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    entity_type: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[str] = mapped_column(EXTERNAL_ID)
    entity_name: Mapped[str | None] = mapped_column(Text)
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    property: Mapped[str | None] = mapped_column(String(200))
    old_value: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    new_value: Mapped[Any] = mapped_column(JSONDocument, nullable=True)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(EXTERNAL_ID)
    actor_name: Mapped[str | None] = mapped_column(String(200))
    actor_email: Mapped[str | None] = mapped_column(String(320))
    ip_address: Mapped[str | None] = mapped_column(IPAddress)
    origin: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str | None] = mapped_column(ID)
    notification_id: Mapped[str | None] = mapped_column(String(220))
    notification_pk: Mapped[int | None] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    #: PostgreSQL: the writing transaction's id (``pg_current_xact_id()``, set by the
    #: column's default). The sequencer numbers events in (txid, id) order once every
    #: transaction up to that id has ended. Unused on SQLite, whose writers are serial.
    txid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EventSubject(Base):
    """Every record an event concerns (its entity and each target): a record's History."""

    __tablename__ = "event_subjects"

    org_id: Mapped[str] = mapped_column(ID, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity_id: Mapped[str] = mapped_column(EXTERNAL_ID, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class Export(Base):
    __tablename__ = "exports"
    __table_args__ = (Index("ix_exports_org_created", "org_id", "created_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    #: The filters as the client gave them (echoed back).
    filters: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    #: The same filters, parsed (storage.queries.EventFilter.to_json).
    query: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String(16))
    max_event_id: Mapped[int | None] = mapped_column(BigInteger)
    rows_written: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_total: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Last sign of life of the task building it; the sweeper restarts a silent one.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    file_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    #: ``csv`` or ``jsonl``.
    format: Mapped[str] = mapped_column(String(8), default="csv")
    #: PostgreSQL: the first transaction id not yet begun when the export was requested; the
    #: build waits until the sequencer has passed it, so the tree covers every earlier event.
    requested_xmax: Mapped[int | None] = mapped_column(BigInteger)
    #: The tree size the export holds (events with seq ≤ tree_size), and its checkpoint.
    tree_size: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint: Mapped[str | None] = mapped_column(Text)


class ConsoleLink(Base):
    """A single-use way into the console: who may look, at what, with which permissions."""

    __tablename__ = "console_links"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    #: ``{}`` (the whole organisation), ``{"entity": {"type", "id"}}`` or ``{"actor_id": …}``.
    scope: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    permissions: Mapped[list[str]] = mapped_column(JSONDocument)
    viewer: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Set, once, by the request that opens the link.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The API key that made the link (None for ``auditlog console-link``): revoking it
    #: ends the sessions it opened.
    key_id: Mapped[str | None] = mapped_column(String(64))


class LogLeaf(Base):
    """An event's place in its organisation's log: ``seq`` 1, 2, 3 … with no gap.

    ``leaf_hash`` is RFC 9162's hash of the event object's canonical JSON (``seq``
    included). Append-only, like the events.
    """

    __tablename__ = "log_leaves"

    org_id: Mapped[str] = mapped_column(ID, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogNode(Base):
    """The hash of a complete subtree: leaves [index·2^level, (index+1)·2^level)."""

    __tablename__ = "log_nodes"

    org_id: Mapped[str] = mapped_column(ID, primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogTree(Base):
    """An organisation's tree as the sequencer last left it."""

    __tablename__ = "log_trees"

    org_id: Mapped[str] = mapped_column(ID, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The newest signed checkpoint's size and time (0 and None before the first).
    checkpoint_size: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpointed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SequencerState(Base):
    """Where the sequencer stopped: every event before (txid, event_id) is sequenced."""

    __tablename__ = "log_sequencer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    txid: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[int] = mapped_column(BigInteger)
    #: PostgreSQL: every event written by a transaction below this id is sequenced (the
    #: snapshot xmin of the last pass that emptied the backlog). SQLite: an event id.
    horizon: Mapped[int] = mapped_column(BigInteger, default=0)


class LogCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint) of one organisation's tree."""

    __tablename__ = "log_checkpoints"

    org_id: Mapped[str] = mapped_column(ID, primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LogKey(Base):
    """A checkpoint signing key. Retired keys stay listed so old checkpoints still verify."""

    __tablename__ = "log_keys"

    key_id: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    vkey: Mapped[str] = mapped_column(Text)
    #: The private key string, encrypted with SECRET_KEY; None for LOG_SIGNING_KEY's key.
    private_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ExportChunk(Base):
    """A piece of an export's file, kept in the database so that every host can serve it.

    ``attempt`` is one build's own id: the file an export serves is the attempt named by
    its ``file_path`` (``db:<attempt>``), stored by the transaction that made it succeed.
    Chunks ``n`` = 0, 1, 2 … of an attempt hold the file in order (``storage.blobs``).
    """

    __tablename__ = "export_chunks"

    export_id: Mapped[str] = mapped_column(ForeignKey("exports.id"), primary_key=True)
    attempt: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class AccessEntry(Base):
    """Who did what to the log itself: keys, exports, console sessions, restores.

    Written in the transaction of what it records, so an entry exists exactly when the
    thing happened; kept apart from the events, which say what happened to the records.
    """

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_org_page", "org_id", "occurred_at", "id"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(40))
    #: What it was done to: a key, an export, a console link or an event id.
    subject_id: Mapped[str | None] = mapped_column(String(200))
    #: ``{"type": "api_key", "key_id", "key_name"}``, ``{"type": "cli"}``, or a viewer.
    performed_by: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    ip_address: Mapped[str | None] = mapped_column(IPAddress)
    request_id: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
