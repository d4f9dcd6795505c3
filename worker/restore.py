"""Restore: a manual patch of one property, through the inbox, clocks and diff of any change."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select

from storage.db import Database
from storage.inbox import QUEUED
from storage.models import Event, Notification
from storage.queries import event_document
from storage.timefmt import rfc3339
from worker.recorder import record_notifications


def restore_property(
    database: Database,
    *,
    org_id: str,
    record: tuple[str, str],
    parent_id: str | None,
    prop: str,
    value: Any,
    restored_from: str,
    actor: dict[str, Any],
    ip_address: str | None,
    now: datetime,
) -> dict[str, Any] | None:
    """Record the restore as a notification and apply it now; return its event, if any.

    No event means the property already holds that value (or a newer change won).
    """
    entity_type, entity_id = record
    payload: dict[str, Any] = {
        "kind": "patch",
        "entity": {"type": entity_type, "id": entity_id},
        "occurred_at": rfc3339(now),
        "sequence": 0,
        "origin": "manual",
        "actor": actor,
        "ip_address": ip_address,
        "properties": {prop: value},
        "restored_from": restored_from,
    }
    if parent_id is not None:
        payload["parent"] = {"type": "app", "id": parent_id}
    with database.unit_of_work(write=True) as session:
        notification = Notification(
            org_id=org_id,
            source_id=None,
            external_id=f"restore_{secrets.token_hex(10)}",
            kind="patch",
            entity_type=entity_type,
            entity_id=entity_id,
            occurred_at=now,
            sequence=0,
            payload=payload,
            status=QUEUED,
            attempts=0,
            received_at=now,
            enqueued_at=now,
        )
        session.add(notification)
        session.flush()
        record_notifications(session, [notification], now)
        session.commit()
        row = session.execute(
            select(Event.__table__).where(Event.notification_pk == notification.pk)
        ).first()
    return event_document(row) if row is not None else None
