"""Restore: a manual patch of one property, through the inbox, clocks and diff of any change.

What a restore may do is decided inside its write transaction, on the record's row locked
there, so that nothing committed between the API's checks and the write (a delete, a newer
change) can be overridden: a deleted record is refused, a restore that a newer change to
the property would win over is refused, and either refusal rolls everything back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from storage import access, state
from storage.db import Database
from storage.inbox import QUEUED
from storage.models import Event, Notification
from storage.queries import event_document
from storage.timefmt import rfc3339, to_micros
from worker.diff import NEVER, same_json
from worker.recorder import entity_state, record_notifications, referenced_keys


class RestoreRefused(Exception):
    """The restore was not recorded; ``code`` is the API's error code."""

    code = "restore_refused"


class RecordDeleted(RestoreRefused):
    """The record is deleted: a patch would bring it back, so nothing is restored."""

    code = "record_deleted"


class RestoreSuperseded(RestoreRefused):
    """A change newer than the restore's clock already set the property (another value)."""

    code = "restore_superseded"


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
    performed_by: dict[str, Any] | None = None,
    audit: AccessContext | None = None,
) -> dict[str, Any] | None:
    """Record the restore as a notification and apply it now; return its event, if any.

    None means the property already holds that value (the notification is recorded, no
    event). Raises ``RecordDeleted`` or ``RestoreSuperseded`` having recorded nothing.
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
    if performed_by is not None:
        payload["performed_by"] = performed_by
    if parent_id is not None:
        payload["parent"] = {"type": "app", "id": parent_id}
    with database.unit_of_work(write=True) as session:
        # The rows the recorder locks, in its order: it finds them already held.
        rows = state.lock_entities(session, org_id, {record}, referenced_keys(payload) - {record})
        locked = next(r for r in rows if (r.entity_type, r.entity_id) == record)
        current = entity_state(locked)
        if locked.deleted:
            raise RecordDeleted("the record is deleted; nothing to restore")
        if not same_json(current.properties.get(prop), value):
            newest = max(current.prop_clocks.get(prop, NEVER), current.snapshot_clock or NEVER)
            if (to_micros(now), 0) <= newest:
                raise RestoreSuperseded("a change newer than this restore already set the property")
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
        row = session.execute(
            select(Event.__table__).where(Event.notification_pk == notification.pk)
        ).first()
        document = event_document(row) if row is not None else None
        if audit is not None:
            access.record(
                session,
                org_id,
                "entity.restored",
                now,
                performed_by=audit.performed_by,
                subject_id=document["id"] if document else None,
                ip_address=ip_address,
                request_id=audit.request_id,
                details={
                    "entity": {"type": entity_type, "id": entity_id},
                    "property": prop,
                    "restored_from": restored_from,
                    "changed": document is not None,
                },
            )
        session.commit()
    return document


@dataclass(frozen=True)
class AccessContext:
    """Who restores, for the access log: a key, or a console session's viewer."""

    performed_by: dict[str, Any]
    request_id: str | None = None
