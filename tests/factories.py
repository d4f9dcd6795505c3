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


def make_tenant(database: Database, settings: Settings, name: str | None = None) -> Tenant:
    with database.unit_of_work(write=True) as session:
        org_id, key = accounts.create_organization(session, name or unique("org"))
        source = accounts.create_source(
            session, SecretBox(settings.secret_key), org_id, unique("source")
        )
        session.commit()
    return Tenant(org_id, key.api_key, source.source_id, source.secret)


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
