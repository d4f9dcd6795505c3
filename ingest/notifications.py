"""From a verified, decoded webhook body to the notifications the inbox stores.

No web framework here: the view (``api.webhooks``) reads the request, calls these, and turns
their exceptions into the API's error responses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError

from ingest.fastload import load_valid
from ingest.schemas import (
    notification_schema,
    nul_free_notification_schema,
    webhook_body_schema,
)
from storage.credentials import SealedWithUnknownKey, SecretBox
from storage.inbox import IncomingNotification
from storage.models import Source
from storage.runtime import Services
from storage.timefmt import rfc3339

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class ShapeRejected(Exception):
    """The body is not a notification nor a batch envelope."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotificationsInvalid(Exception):
    """A notification fails validation; nothing of the request may be stored."""

    def __init__(self, message: str, details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class KnownSource:
    id: str
    org_id: str
    secret: str
    #: The secret replaced by the last rotation and until when it still verifies.
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    disabled: bool = False
    #: When the secret last changed: the storing transaction checks it is still so
    #: (``inbox.accept``), so a cached secret that a rotation replaced admits nothing.
    secret_rotated_at: datetime | None = None
    #: Read from the database for this request (not from the cache).
    fresh: bool = True

    def secrets_at(self, now: datetime) -> list[str]:
        """The secrets a signature may be made with at ``now``: the current one, and the
        former one during its overlap."""
        found = [self.secret]
        ends = self.previous_secret_expires_at
        if self.previous_secret is not None and ends is not None and now < ends:
            found.append(self.previous_secret)
        return found


class SourceCache:
    """Sources by id, kept for a minute per process: a sender's every request would
    otherwise pay a database round trip and a decryption before its signature is checked.

    A minute of staleness cannot admit what a fresh read would refuse: a signature that
    no cached secret verifies is checked again against a fresh read (``refresh``), so a
    rotated-in secret works at once; the former secret's overlap ends at its stored
    instant whatever the cache; and the transaction that would store the notifications
    (``inbox.accept``) refuses a source disabled since, and one whose secret was rotated
    since (the view then reads the source again and checks the signature anew). An
    unknown id is not cached."""

    TTL_SECONDS = 60.0

    def __init__(self) -> None:
        #: Each entry: when it was read, and the source as the cache hands it out (``fresh``
        #: false; made once, not copied on every request).
        self._found: dict[tuple[str, tuple[str, ...], str], tuple[float, KnownSource]] = {}

    def get(self, runtime: Services, source_id: str) -> KnownSource | None:
        key = (runtime.database.url, runtime.settings.secret_keys, source_id)
        cached = self._found.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.TTL_SECONDS:
            return cached[1]
        return self.refresh(runtime, source_id)

    def refresh(self, runtime: Services, source_id: str) -> KnownSource | None:
        """Read the source again; raises ``SealedWithUnknownKey`` when no configured
        secret key opens its stored secret."""
        key = (runtime.database.url, runtime.settings.secret_keys, source_id)
        with runtime.database.unit_of_work() as session:
            row = session.get(Source, source_id)
        if row is None:
            self._found.pop(key, None)
            return None
        box = SecretBox(runtime.settings.secret_keys)
        ends = row.previous_secret_expires_at
        previous = None
        if row.previous_secret_encrypted is not None and ends is not None and ends > utcnow():
            try:
                previous = box.open(row.previous_secret_encrypted)
            except SealedWithUnknownKey:
                # The former secret is only a courtesy: without it the current one works.
                log.warning("the former secret of source %s cannot be opened", source_id)
        known = KnownSource(
            row.id,
            row.org_id,
            box.open(row.secret_encrypted),
            previous_secret=previous,
            previous_secret_expires_at=ends if previous is not None else None,
            disabled=row.disabled_at is not None,
            secret_rotated_at=row.secret_rotated_at,
        )
        if len(self._found) > 10_000:
            self._found.clear()
        self._found[key] = (time.monotonic(), replace(known, fresh=False))
        return known


known_sources = SourceCache()


def validate_notifications(
    document: Any, webhook_id: str, nul_possible: bool = True, request_id: str | None = None
) -> list[IncomingNotification]:
    """Every notification of the body, validated, as the inbox stores it.

    Raises ``ShapeRejected`` for a body of the wrong shape (the API answers 400) and
    ``NotificationsInvalid`` for a notification that fails validation (422), with details
    keyed by field and, in a batch, by index. ``nul_possible=False`` (the raw body holds no
    ``\\u0000`` escape) skips the U+0000 walk. ``request_id`` (the webhook request's) is
    kept with each notification, so that the worker's log lines name it even when the
    notification is processed in another request's batch.
    """
    schema = notification_schema if nul_possible else nul_free_notification_schema
    if not isinstance(document, dict):
        raise ShapeRejected("the body must be a JSON object")
    if "notifications" in document:
        try:
            items = webhook_body_schema.load(document)["notifications"]
        except ValidationError as exc:
            raise ShapeRejected("the batch envelope is malformed", exc.messages) from None
        batch = True
    else:
        items = [document]
        batch = False

    loaded: list[dict[str, Any]] = []
    errors: dict[str, Any] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors[str(index)] = {"_schema": ["A notification must be a JSON object."]}
            continue
        fast = load_valid(schema, item)
        if fast is not None:
            loaded.append(fast)
            continue
        try:
            loaded.append(schema.load(item))
        except ValidationError as exc:
            errors[str(index)] = exc.messages
    if errors:
        details = errors if batch else errors["0"]
        raise NotificationsInvalid("a notification is invalid", details)

    return [
        IncomingNotification(
            external_id=item.get("id") or f"{webhook_id}:{index}",
            kind=item["kind"],
            entity_type=item["entity"]["type"],
            entity_id=item["entity"]["id"],
            occurred_at=item["occurred_at"],
            sequence=item["sequence"],
            payload=stored_payload(item, request_id),
        )
        for index, item in enumerate(loaded)
    ]


def stored_payload(item: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    """The normalised notification as the worker will read it back (JSON only). The request
    id is bookkeeping for logs: no event is derived from it (``worker.derive`` reads fields
    by name), and senders cannot set it (it is not a notification field)."""
    payload = dict(item)
    payload["occurred_at"] = rfc3339(item["occurred_at"])
    if request_id:
        payload["request_id"] = request_id
    return payload
