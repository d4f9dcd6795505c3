"""Organisations, API keys and webhook sources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.credentials import SecretBox, hash_api_key, new_api_key, new_id, new_webhook_secret
from storage.models import ApiKey, Organization, Source


class NotFound(LookupError):
    """The record does not exist (or belongs to another organisation)."""


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
    return org.id, create_api_key(session, org.id, name="default")


def create_api_key(session: Session, org_id: str, name: str | None = None) -> IssuedKey:
    if session.get(Organization, org_id) is None:
        raise NotFound(f"organisation {org_id} does not exist")
    api_key = new_api_key()
    key = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        name=name,
        key_hash=hash_api_key(api_key),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return IssuedKey(key_id=key.id, api_key=api_key)


def revoke_api_key(session: Session, key_id: str) -> None:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} does not exist")
    if key.revoked_at is None:
        key.revoked_at = utcnow()


def org_for_api_key(session: Session, api_key: str) -> str | None:
    """The organisation of a live key, or None for an unknown or revoked one."""
    return session.scalar(
        select(ApiKey.org_id).where(
            ApiKey.key_hash == hash_api_key(api_key), ApiKey.revoked_at.is_(None)
        )
    )


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
    return IssuedSource(source_id=source.id, secret=secret)
