"""Standard Webhooks signature verification over the raw body bytes.

The ``standardwebhooks`` package computes the signature; this module adds what the
package leaves out: a configurable tolerance in both directions, rejection of malformed
headers without an exception escaping, and constant-time comparison of every ``v1``
entry so that any one valid signature passes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook
from werkzeug.datastructures import Headers

TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
MAX_WEBHOOK_ID = 200


class SignatureRejected(ValueError):
    pass


def _signatures(header: str) -> list[bytes]:
    found = []
    for entry in header.split(" "):
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify_signature(
    secret: str,
    body: bytes | str,
    headers: Mapping[str, str] | Headers,
    tolerance_seconds: int,
    now: datetime | None = None,
) -> str:
    """Check the three ``webhook-*`` headers; return the webhook id or raise SignatureRejected.

    ``body`` is the raw bytes, or their UTF-8 text when the caller decoded them already
    (signing the text re-encodes exactly those bytes); a non-UTF-8 body is not JSON anyway.
    """
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature")
    for name, value in (
        ("webhook-id", msg_id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signature),
    ):
        if not value:
            raise SignatureRejected(f"the {name} header is missing")
    assert msg_id is not None and timestamp is not None and signature is not None
    if len(msg_id) > MAX_WEBHOOK_ID:
        raise SignatureRejected(f"webhook-id is longer than {MAX_WEBHOOK_ID} characters")
    if not TIMESTAMP.match(timestamp):
        raise SignatureRejected("webhook-timestamp is not a Unix time in seconds")
    sent_at = int(timestamp)
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - sent_at) > tolerance_seconds:
        raise SignatureRejected("webhook-timestamp is outside the allowed tolerance")

    candidates = _signatures(signature)
    if not candidates:
        raise SignatureRejected("webhook-signature has no v1 signature")
    expected = Webhook(secret).sign(
        msg_id=msg_id,
        timestamp=datetime.fromtimestamp(sent_at, UTC),
        data=body if isinstance(body, str) else body.decode("utf-8"),
    )
    expected_bytes = base64.b64decode(expected.split(",", 1)[1])
    matched = False
    for candidate in candidates:
        # Compare every entry (no early exit) so timing says nothing about which matched.
        matched |= hmac.compare_digest(expected_bytes, candidate)
    if not matched:
        raise SignatureRejected("no signature matches")
    return msg_id
