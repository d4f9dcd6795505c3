"""``POST /v1/webhooks/<source_id>``: signed notifications into the durable inbox (CONTRACT §3).

A 202 means every new notification of the request is committed in one transaction; the
queue message (one per request) is published after that commit. If publishing fails the
request still succeeds: the beat sweeper re-publishes notifications left queued.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import (
    BadRequest,
    NotFound,
    RequestEntityTooLarge,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
)

from api.context import services
from api.errors import reject
from api.rest import Blueprint
from ingest.body import BodyRejected, ValuesRefused, decode_body, parse_text
from ingest.schemas import (
    WebhookAcceptedSchema,
    notification_schema,
    nul_free_notification_schema,
    webhook_body_schema,
)
from ingest.signature import SignatureRejected, verify_signature
from storage import inbox
from storage.credentials import SecretBox
from storage.inbox import IncomingNotification
from storage.models import Source
from storage.runtime import Services
from storage.timefmt import rfc3339

log = logging.getLogger(__name__)

blueprint = Blueprint("webhooks", __name__, description="Signed entity-change notifications")


@blueprint.route("/v1/webhooks/<source_id>", methods=["POST"])
@blueprint.doc(
    security=[],
    parameters=[
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    ],
    requestBody={
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Notification"},
                        {"$ref": "#/components/schemas/NotificationBatch"},
                    ]
                }
            }
        },
    },
)
@blueprint.response(202, WebhookAcceptedSchema)
@blueprint.errors(400, 401, 404, 413, 415, 422)
def receive_webhook(source_id: str) -> Any:
    """Receive signed entity-change notifications."""
    runtime = services()
    settings = runtime.settings
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        reject(
            RequestEntityTooLarge,
            "body_too_large",
            f"the body is larger than {settings.max_body_bytes} bytes",
        )
    if request.mimetype != "application/json":
        reject(
            UnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json"
        )

    source = known_sources.get(runtime, source_id)
    if source is None:
        reject(NotFound, "not_found", "no such webhook source")

    body = read_body(settings.max_body_bytes)
    try:
        # Over the bytes as received: nothing is decoded before the sender is known.
        webhook_id = verify_signature(
            source.secret, body, request.headers, settings.webhook_tolerance_seconds
        )
    except SignatureRejected as exc:
        reject(Unauthorized, "invalid_signature", str(exc))

    try:
        # Decoded once: the parser and the U+0000 test both read the text.
        text = decode_body(body)
        document = parse_text(text)
    except ValuesRefused as exc:
        # Well-formed JSON holding values no store can keep: a validation failure, keyed
        # by field path (by index in a batch) like the notifications' own 422s.
        reject(
            UnprocessableEntity,
            "validation_failed",
            exc.message,
            exc.details(envelope="notifications"),
        )
    except BodyRejected as exc:
        reject(BadRequest, exc.code, exc.message)

    incoming = validate_notifications(document, webhook_id, nul_possible="\\u0000" in text)
    with runtime.database.unit_of_work(write=True) as session:
        receipts = inbox.accept(session, source, incoming, datetime.now(UTC))
        session.commit()

    queued = [receipt.pk for receipt in receipts if receipt.pk is not None]
    if queued:
        try:
            runtime.publish(queued)
        except Exception:  # the broker is down: the sweeper re-publishes these later
            log.warning(
                "publishing %d notifications failed; the sweeper will retry",
                len(queued),
                exc_info=True,
            )
    response = jsonify(
        accepted=len(queued),
        duplicates=len(receipts) - len(queued),
        notifications=[{"id": r.external_id, "status": r.status} for r in receipts],
    )
    response.status_code = 202
    return response


@dataclass(frozen=True)
class KnownSource:
    id: str
    org_id: str
    secret: str


class SourceCache:
    """Sources by id, kept for a minute per process: a sender's every request would
    otherwise pay a database round trip and a decryption before its signature is checked.
    Sources are never changed once created, so a minute of staleness cannot admit a
    request that a fresh read would refuse (an unknown id is not cached)."""

    TTL_SECONDS = 60.0

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], tuple[float, KnownSource]] = {}

    def get(self, runtime: Services, source_id: str) -> KnownSource | None:
        key = (runtime.database.url, source_id)
        cached = self._found.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.TTL_SECONDS:
            return cached[1]
        with runtime.database.unit_of_work() as session:
            row = session.get(Source, source_id)
        if row is None:
            return None
        secret = SecretBox(runtime.settings.secret_key).open(row.secret_encrypted)
        known = KnownSource(row.id, row.org_id, secret)
        if len(self._found) > 10_000:
            self._found.clear()
        self._found[key] = (time.monotonic(), known)
        return known


known_sources = SourceCache()


def read_body(limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes before reading them all.

    With a Content-Length (already checked) Werkzeug reads exactly that much. A chunked
    body is read from the server's terminated stream, at most ``limit + 1`` bytes, so that
    one byte over the limit is a 413 rather than a silently truncated body.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        return b""
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while chunk := stream.read(min(64 * 1024, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            reject(
                RequestEntityTooLarge, "body_too_large", f"the body is larger than {limit} bytes"
            )
    return b"".join(chunks)


def validate_notifications(
    document: Any, webhook_id: str, nul_possible: bool = True
) -> list[IncomingNotification]:
    """Every notification of the body, validated; 400 for a wrong shape, 422 for a bad field.

    ``nul_possible=False`` (the raw body holds no ``\\u0000`` escape) skips the U+0000 walk.
    """
    schema = notification_schema if nul_possible else nul_free_notification_schema
    if not isinstance(document, dict):
        reject(BadRequest, "invalid_shape", "the body must be a JSON object")
    if "notifications" in document:
        try:
            items = webhook_body_schema.load(document)["notifications"]
        except ValidationError as exc:
            reject(BadRequest, "invalid_shape", "the batch envelope is malformed", exc.messages)
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
        try:
            loaded.append(schema.load(item))
        except ValidationError as exc:
            errors[str(index)] = exc.messages
    if errors:
        details = errors if batch else errors["0"]
        reject(UnprocessableEntity, "validation_failed", "a notification is invalid", details)

    return [
        IncomingNotification(
            external_id=item.get("id") or f"{webhook_id}:{index}",
            kind=item["kind"],
            entity_type=item["entity"]["type"],
            entity_id=item["entity"]["id"],
            occurred_at=item["occurred_at"],
            sequence=item["sequence"],
            payload=stored_payload(item),
        )
        for index, item in enumerate(loaded)
    ]


def stored_payload(item: dict[str, Any]) -> dict[str, Any]:
    """The normalised notification as the worker will read it back (JSON only)."""
    payload = dict(item)
    payload["occurred_at"] = rfc3339(item["occurred_at"])
    return payload
