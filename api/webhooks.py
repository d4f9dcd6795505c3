"""``POST /v1/webhooks/<source_id>``: signed notifications into the durable inbox.

A 202 means every new notification of the request is committed in one transaction; the
queue message (one per request) is published after that commit. If publishing fails the
request still succeeds: the beat sweeper re-publishes notifications left queued.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import jsonify, request
from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
)

from api.context import services
from api.errors import reject
from api.rest import Blueprint
from ingest.body import BodyRejected, ValuesRefused, decode_body, parse_text
from ingest.notifications import (
    KnownSource,
    NotificationsInvalid,
    ShapeRejected,
    known_sources,
    validate_notifications,
)
from ingest.schemas import WebhookAcceptedSchema
from ingest.signature import SignatureRejected, verify_signature
from storage import inbox
from storage.credentials import SealedWithUnknownKey
from storage.logformat import current_request_id

log = logging.getLogger(__name__)

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

blueprint = Blueprint("webhooks", __name__, description="Signed entity-change notifications")


@blueprint.route("/v1/webhooks/<source_id>", methods=["POST"])
@blueprint.doc(
    security=[],
    parameters=[
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
        for name in SIGNATURE_HEADERS
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
@blueprint.errors(400, 401, 403, 404, 413, 415, 422)
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

    source = usable_source(runtime, source_id, cached=True)
    body = read_body(settings.max_body_bytes)
    # Over the bytes as received: nothing is decoded before the sender is known.
    signed = {name: value for name in SIGNATURE_HEADERS if (value := request.headers.get(name))}
    try:
        try:
            webhook_id = verify_with_any_secret(source, body, signed)
        except SignatureRejected:
            if source.fresh:
                raise
            # A secret rotated in since the cache read the source, or the source disabled.
            source = usable_source(runtime, source_id, cached=False)
            webhook_id = verify_with_any_secret(source, body, signed)
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

    try:
        incoming = validate_notifications(
            document,
            webhook_id,
            nul_possible="\\u0000" in text,
            request_id=current_request_id.get(),
        )
    except ShapeRejected as exc:
        reject(BadRequest, "invalid_shape", exc.message, exc.details)
    except NotificationsInvalid as exc:
        reject(UnprocessableEntity, "validation_failed", exc.message, exc.details)
    receipts = None
    for _ in range(STORE_ATTEMPTS):
        try:
            # Committed here: the 202 below reports a stored batch.
            receipts = inbox.accept(runtime.database, source, incoming, datetime.now(UTC))
        except inbox.SourceDisabled:
            source_disabled()
        except inbox.SourceRotated:
            # The secret this request was checked against may be the replaced one: read
            # the source again and check the signature with what holds now.
            source = usable_source(runtime, source_id, cached=False)
            try:
                verify_with_any_secret(source, body, signed)
            except SignatureRejected as exc:
                reject(Unauthorized, "invalid_signature", str(exc))
            continue
        break
    if receipts is None:  # rotated again and again while this request was being stored
        reject(ServiceUnavailable, "source_changing", "the source is being changed; retry")

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


#: Tries at storing a request whose source's secret keeps being rotated meanwhile.
STORE_ATTEMPTS = 3


def usable_source(runtime: Any, source_id: str, cached: bool) -> KnownSource:
    """The source (from the cache, or read again), or the request's end: 404 unknown,
    403 disabled, 401 when its secret opens with no configured key (the log says why)."""
    try:
        if cached:
            source = known_sources.get(runtime, source_id)
        else:
            source = known_sources.refresh(runtime, source_id)
    except SealedWithUnknownKey:
        log.error(
            "the secret of source %s opens with neither SECRET_KEY nor SECRET_KEY_FALLBACKS: "
            "put the former key back in SECRET_KEY_FALLBACKS, or rotate the source's secret",
            source_id,
        )
        # The sender learns nothing of the operator's keys; the log says what to do.
        reject(Unauthorized, "invalid_signature", "no signature matches")
    if source is None:
        reject(NotFound, "not_found", "no such webhook source")
    if source.disabled:
        source_disabled()
    return source


def source_disabled() -> NoReturn:
    reject(Forbidden, "source_disabled", "this webhook source is disabled")


def verify_with_any_secret(source: KnownSource, body: bytes, signed: dict[str, str]) -> str:
    """The webhook id if a secret valid now verifies the signature; else SignatureRejected."""
    tolerance = services().settings.webhook_tolerance_seconds
    now = datetime.now(UTC)
    return verify_signature(source.secrets_at(now), body, signed, tolerance, now=now)


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
