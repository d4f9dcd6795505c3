"""Organisations, API keys and webhook sources."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from storage.credentials import (
    SealedWithUnknownKey,
    SecretBox,
    hash_api_key,
    new_api_key,
    new_id,
    new_webhook_secret,
)
from storage.db import Database
from storage.models import ApiKey, Organization, Source
from storage.timefmt import rfc3339

#: What a key may do. ``read``: the log, records, the feed and proofs, export status and
#: the access log; ``export``: create and download exports; ``restore``: restore a value;
#: ``console``: open console sessions.
SCOPES = ("read", "export", "restore", "console")
DEFAULT_SCOPES = ("read", "export")
#: ``last_used_at`` is refreshed at most this often.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class NotFound(LookupError):
    """The record does not exist (or belongs to another organisation)."""


@dataclass(frozen=True)
class KeyIdentity:
    """A live key as a request sees it."""

    key_id: str
    org_id: str
    name: str | None
    scopes: frozenset[str]
    last_used_at: datetime | None

    def performed_by(self) -> dict[str, Any]:
        return {"type": "api_key", "key_id": self.key_id, "key_name": self.name}


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    api_key: str


@dataclass(frozen=True)
class IssuedSource:
    source_id: str
    secret: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_organization(session: Session, name: str) -> tuple[str, IssuedKey]:
    org = Organization(id=new_id("org"), name=name, created_at=utcnow())
    session.add(org)
    session.flush()
    return org.id, create_api_key(session, org.id, name="default", scopes=SCOPES)


def normalised_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` in the catalog's order, without repeats; ValueError names an unknown one."""
    given = set(scopes)
    unknown = sorted(given - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    if not given:
        raise ValueError("a key needs at least one scope")
    return tuple(scope for scope in SCOPES if scope in given)


def create_api_key(
    session: Session,
    org_id: str,
    name: str | None = None,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    performed_by: dict[str, Any] | None = None,
) -> IssuedKey:
    from storage import access  # the access log records accounts' changes

    granted = normalised_scopes(scopes)
    if session.get(Organization, org_id) is None:
        raise NotFound(f"organisation {org_id} does not exist")
    api_key = new_api_key()
    now = utcnow()
    key = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        name=name,
        key_hash=hash_api_key(api_key),
        created_at=now,
        scopes=" ".join(granted),
    )
    session.add(key)
    session.flush()
    access.record(
        session,
        org_id,
        "key.created",
        now,
        subject_id=key.id,
        performed_by=performed_by or access.CLI,
        details={"name": name, "scopes": list(granted)},
    )
    return IssuedKey(key_id=key.id, api_key=api_key)


def revoke_api_key(
    session: Session, key_id: str, performed_by: dict[str, Any] | None = None
) -> None:
    from storage import access

    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} does not exist")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        access.record(
            session,
            key.org_id,
            "key.revoked",
            key.revoked_at,
            subject_id=key.id,
            performed_by=performed_by or access.CLI,
            details={"name": key.name},
        )


def identify_key(session: Session, api_key: str) -> KeyIdentity | None:
    """The live key behind a bearer token, or None for an unknown or revoked one."""
    row = session.execute(
        select(ApiKey.id, ApiKey.org_id, ApiKey.name, ApiKey.scopes, ApiKey.last_used_at).where(
            ApiKey.key_hash == hash_api_key(api_key), ApiKey.revoked_at.is_(None)
        )
    ).first()
    return None if row is None else _identity(row)


def _identity(row: Any) -> KeyIdentity:
    """A key's identity from its row: ``id, org_id, name, scopes, last_used_at``."""
    key_id, org_id, name, scopes, last_used_at = row
    return KeyIdentity(
        key_id,
        org_id,
        name,
        frozenset(scopes.split()),
        None if last_used_at is None else last_used_at.astimezone(UTC),
    )


#: ``identify_key``'s SELECT in psycopg's parameter style, for ``identify_key_alone``.
KEY_BY_HASH = (
    "SELECT id, org_id, name, scopes, last_used_at FROM api_keys"
    " WHERE key_hash = %(key_hash)s AND revoked_at IS NULL"
)


def identify_key_alone(database: Database, api_key: str) -> KeyIdentity | None:
    """``identify_key`` as a statement of its own, as every keyed request asks it: on
    PostgreSQL straight through the driver (``Database.driver_autocommit``), which spares
    each read a Session's millisecond of Python."""
    if database.dialect != "postgresql":
        with database.statement_at_a_time() as session:
            return identify_key(session, api_key)
    with database.driver_autocommit() as connection:
        row = connection.execute(KEY_BY_HASH, {"key_hash": hash_api_key(api_key)}).fetchone()
    return None if row is None else _identity(row)


def org_for_api_key(session: Session, api_key: str) -> str | None:
    """The organisation of a live key, or None for an unknown or revoked one."""
    identity = identify_key(session, api_key)
    return identity.org_id if identity else None


def key_allows(session: Session, key_id: str, org_id: str, scope: str) -> bool:
    """Whether the key is live, of the organisation, and holds ``scope`` (for what a key
    handed on, such as a signed download link, which must end with the key)."""
    row = session.execute(
        select(ApiKey.scopes).where(
            ApiKey.id == key_id, ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None)
        )
    ).first()
    return row is not None and scope in row.scopes.split()


def needs_use_noted(key: KeyIdentity, now: datetime) -> bool:
    """Whether ``last_used_at`` is older than the resolution (a write is due)."""
    return key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION


def note_key_used(session: Session, key: KeyIdentity, now: datetime) -> bool:
    """Move the key's ``last_used_at`` to ``now`` unless it moved within the resolution.

    The caller commits. Concurrent requests race harmlessly: the UPDATE is conditional."""
    moved = session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key.key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(moved, "rowcount", 0))


def list_organizations(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(Organization).order_by(Organization.created_at, Organization.id))
    return [
        {"org_id": org.id, "name": org.name, "created_at": rfc3339(org.created_at)} for org in rows
    ]


def list_api_keys(session: Session, org_id: str) -> list[dict[str, Any]]:
    if session.get(Organization, org_id) is None:
        raise NotFound(f"organisation {org_id} does not exist")
    rows = session.scalars(
        select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return [
        {
            "key_id": key.id,
            "name": key.name,
            "scopes": key.scopes.split(),
            "created_at": rfc3339(key.created_at),
            "last_used_at": _moment(key.last_used_at),
            "revoked_at": _moment(key.revoked_at),
        }
        for key in rows
    ]


def list_sources(session: Session, org_id: str, now: datetime) -> list[dict[str, Any]]:
    if session.get(Organization, org_id) is None:
        raise NotFound(f"organisation {org_id} does not exist")
    rows = session.scalars(
        select(Source).where(Source.org_id == org_id).order_by(Source.created_at, Source.id)
    )
    return [
        {
            "source_id": source.id,
            "name": source.name,
            "created_at": rfc3339(source.created_at),
            "secret_rotated_at": _moment(source.secret_rotated_at),
            "previous_secret_expires_at": _moment(_overlap_end(source, now)),
            "disabled_at": _moment(source.disabled_at),
        }
        for source in rows
    ]


def _moment(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


def _overlap_end(source: Source, now: datetime) -> datetime | None:
    """When the former secret stops verifying, while it still does."""
    ends = source.previous_secret_expires_at
    if source.previous_secret_encrypted is None or ends is None or ends <= now:
        return None
    return ends


def create_source(session: Session, box: SecretBox, org_id: str, name: str) -> IssuedSource:
    if session.get(Organization, org_id) is None:
        raise NotFound(f"organisation {org_id} does not exist")
    secret = new_webhook_secret()
    source = Source(
        id=new_id("src"),
        org_id=org_id,
        name=name,
        secret_encrypted=box.seal(secret),
        created_at=utcnow(),
    )
    session.add(source)
    session.flush()
    _record_source(session, source, "source.created", source.created_at, {"name": name})
    return IssuedSource(source_id=source.id, secret=secret)


def rotate_source_secret(
    session: Session, box: SecretBox, source_id: str, keep_old_for: timedelta, now: datetime
) -> IssuedSource:
    """A new secret for the source; the current one keeps verifying for ``keep_old_for``.

    Only the secret being replaced overlaps: rotating again during an overlap ends the
    older one's at once. The row is locked so two rotations cannot lose a secret between
    them."""
    if keep_old_for < timedelta(0):
        raise ValueError("--keep-old-for cannot be negative")
    source = session.scalar(select(Source).where(Source.id == source_id).with_for_update())
    if source is None:
        raise NotFound(f"source {source_id} does not exist")
    secret = new_webhook_secret()
    try:
        box.open(source.secret_encrypted)
    except SealedWithUnknownKey:
        # Sealed with a retired SECRET_KEY: nobody can verify with it, so no overlap.
        source.previous_secret_encrypted = None
        source.previous_secret_expires_at = None
    else:
        source.previous_secret_encrypted = source.secret_encrypted
        source.previous_secret_expires_at = now + keep_old_for
    source.secret_encrypted = box.seal(secret)
    source.secret_rotated_at = now
    _record_source(
        session,
        source,
        "source.secret_rotated",
        now,
        {"previous_secret_expires_at": rfc3339(now + keep_old_for)},
    )
    return IssuedSource(source_id=source.id, secret=secret)


def disable_source(session: Session, source_id: str, now: datetime) -> datetime:
    """Refuse the source's webhooks from now on; returns when it was disabled (once)."""
    source = session.scalar(select(Source).where(Source.id == source_id).with_for_update())
    if source is None:
        raise NotFound(f"source {source_id} does not exist")
    if source.disabled_at is None:
        source.disabled_at = now
        _record_source(session, source, "source.disabled", now, {})
    return source.disabled_at


def _record_source(
    session: Session, source: Source, action: str, now: datetime, details: dict[str, Any]
) -> None:
    from storage import access

    access.record(
        session,
        source.org_id,
        action,
        now,
        subject_id=source.id,
        performed_by=access.CLI,
        details=details,
    )


def reseal_secrets(session: Session, box: SecretBox) -> dict[str, int]:
    """Re-encrypt every stored secret with the current ``SECRET_KEY`` (the caller commits).

    After it, ``SECRET_KEY_FALLBACKS`` can be emptied without breaking a source or the
    log's signing key. Raises ``SealedWithUnknownKey`` (and changes nothing, once the
    caller rolls back) if some secret opens with none of the keys."""
    from storage.models import LogKey

    sources = keys = 0
    now = utcnow()
    for source in session.scalars(select(Source).with_for_update()):
        ends = source.previous_secret_expires_at
        if source.previous_secret_encrypted is not None and (ends is None or ends <= now):
            # A former secret past its overlap verifies nothing: drop it, do not reseal it.
            source.previous_secret_encrypted = None
            source.previous_secret_expires_at = None
        for column in ("secret_encrypted", "previous_secret_encrypted"):
            sealed = getattr(source, column)
            if sealed is not None and not box.is_current(sealed):
                setattr(source, column, box.reseal(sealed))
                sources += 1
    for log_key in session.scalars(select(LogKey).with_for_update()):
        sealed = log_key.private_key_encrypted
        if sealed is not None and not box.is_current(sealed):
            log_key.private_key_encrypted = box.reseal(sealed)
            keys += 1
    return {"resealed_source_secrets": sources, "resealed_log_keys": keys}
