"""Small factories and fakes: unique ids, signed requests, a publisher that records."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from storage import accounts
from storage.credentials import SecretBox
from storage.db import Database
from storage.settings import Settings

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def make_settings(var_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test: its own folder, a fixed key, rate limits no test reaches."""
    values: dict[str, Any] = {
        "var_dir": var_dir,
        "secret_key": "test-secret-key",
        "webhook_rate_limit": "100000/second",
        "api_rate_limit": "100000/second",
    }
    values.update(overrides)
    return Settings(**values)


class RecordingPublisher:
    """Stands in for the broker: records each message, or fails like a dead broker."""

    def __init__(self) -> None:
        self.messages: list[list[int]] = []
        self.broken = False

    def __call__(self, pks: Sequence[int]) -> None:
        if self.broken:
            raise ConnectionError("broker unreachable")
        self.messages.append(list(pks))


@dataclass
class Tenant:
    org_id: str
    api_key: str
    source_id: str
    secret: str


def make_tenant(
    database: Database, settings: Settings, name: str | None = None, source: str | None = None
) -> Tenant:
    with database.unit_of_work(write=True) as session:
        org_id, key = accounts.create_organization(session, name or unique("org"))
        created = accounts.create_source(
            session, SecretBox(settings.secret_key), org_id, source or unique("source")
        )
        session.commit()
    return Tenant(org_id, key.api_key, created.source_id, created.secret)


def signed_headers(
    secret: str,
    body: bytes,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    msg_id = msg_id or unique("msg")
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(
        msg_id=msg_id, timestamp=datetime.fromtimestamp(timestamp, UTC), data=body.decode()
    )
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def notification(
    entity_type: str = "person",
    entity_id: str | None = None,
    kind: str = "snapshot",
    occurred_at: str = "2026-11-25T10:00:00Z",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": unique("n"),
        "kind": kind,
        "entity": {"type": entity_type, "id": entity_id or unique(entity_type)},
        "occurred_at": occurred_at,
    }
    if entity_type in ("license", "subscription") and "parent" not in fields:
        body["parent"] = {"type": "app", "id": "app-parent"}
    if kind in ("snapshot", "patch", "baseline") and "properties" not in fields:
        body["properties"] = {"name": "Ada Lovelace"}
    body.update(fields)
    return body


def post_signed(client: Any, tenant: Tenant, document: Any, **header_overrides: Any) -> Any:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    headers = signed_headers(tenant.secret, body)
    headers.update(header_overrides)
    return client.post(f"/v1/webhooks/{tenant.source_id}", data=body, headers=headers)


def record_now(client: Any, tenant: Tenant, database: Database, *documents: Any) -> None:
    """Post each document as its own signed request and process it at once, in order."""
    from storage.models import Notification
    from worker.processing import process_notifications

    for document in documents:
        response = post_signed(client, tenant, document)
        assert response.status_code == 202, response.get_json()
        with database.unit_of_work() as session:
            pks = list(
                session.scalars(select(Notification.pk).where(Notification.status == "queued"))
            )
        process_notifications(database, pks, max_attempts=1)


ADMIN = {"type": "user", "id": "p-admin", "name": "Super Admin", "email": "admin@example.com"}


def title_change(entity_id: str = "p-1", new_title: str = "Staff Engineer") -> list[dict[str, Any]]:
    """A person created as an Engineer, then given another title: one restorable update."""
    return [
        notification(entity_id=entity_id, properties={"name": "Ada", "title": "Engineer"}),
        notification(
            entity_id=entity_id,
            kind="patch",
            occurred_at="2026-11-25T11:00:00Z",
            properties={"title": new_title},
        ),
    ]


def console_story(entity_suffix: str = "") -> list[dict[str, Any]]:
    """The records and changes the console's tests and screenshots look at."""
    s = entity_suffix

    def at(day: int, hour: int, minute: int = 0) -> str:
        return f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00Z"

    return [
        notification(
            "person",
            f"p-admin{s}",
            occurred_at=at(18, 9),
            origin="google",
            properties={"name": "Super Admin", "email": "admin@example.com"},
        ),
        notification(
            "person",
            f"p-ada{s}",
            kind="baseline",
            occurred_at=at(20, 9),
            properties={"name": "Ada Lovelace", "title": "Engineer", "email": "ada@example.com"},
        ),
        notification(
            "app",
            f"zoom{s}",
            occurred_at=at(21, 8),
            origin="sync",
            properties={"name": "Zoom", "category": "Video conferencing"},
            relationships={"persons": [f"p-ada{s}"], "org": True},
        ),
        notification(
            "team",
            f"t-eng{s}",
            occurred_at=at(22, 14),
            origin="csv",
            properties={"name": "Engineering"},
            relationships={"persons": [f"p-ada{s}"]},
        ),
        notification(
            "device",
            f"d-mbp{s}",
            occurred_at=at(23, 11),
            origin="sync",
            properties={"name": "MacBook Pro 16", "status": "active", "serial": "C02XK1234"},
            relationships={"persons": [f"p-ada{s}"]},
        ),
        notification(
            "person",
            f"p-ada{s}",
            kind="patch",
            occurred_at=at(25, 10),
            origin="manual",
            actor=ADMIN,
            ip_address="203.0.113.7",
            properties={"title": "Staff Engineer"},
        ),
        notification(
            "app",
            f"zoom{s}",
            kind="patch",
            occurred_at=at(25, 16, 30),
            origin="manual",
            actor=ADMIN,
            ip_address="203.0.113.7",
            properties={
                "sso": {
                    "provider": "okta",
                    "enforced": True,
                    "domains": ["example.com", "example.org"],
                    "note": "Single sign-on enforced for every member after the November review.",
                }
            },
        ),
        notification(
            "device",
            f"d-mbp{s}",
            kind="patch",
            occurred_at=at(26, 9),
            origin="workflow",
            actor={"type": "workflow", "id": "wf-offboard", "name": "Offboarding"},
            properties={"status": "in repair"},
        ),
        notification(
            "person",
            f"p-grace{s}",
            occurred_at=at(26, 12),
            origin="csv",
            properties={"name": "Grace Hopper", "title": "Admiral"},
        ),
        notification(
            "person",
            f"p-grace{s}",
            kind="delete",
            occurred_at=at(27, 8),
            origin="sync",
            ip_address="2001:db8::7",
        ),
    ]
