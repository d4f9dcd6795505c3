"""Standard Webhooks signature verification over the raw body bytes.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` exactly as received: the
body's bytes before anything decodes them (so a body that is not UTF-8 is still a 401 when
unsigned or wrongly signed, and a 400 only once its signature holds), and the timestamp
header's literal value. The ``standardwebhooks`` package cannot do either (it signs text,
and signs the timestamp re-formatted from a parsed number, so ``01700000000`` or
``+1700000000`` would verify against a signature made over ``1700000000``); the HMAC is
computed here the way the package computes it, with its key decoding. The timestamp must
be a plain decimal integer (ASCII digits only: no sign, no whitespace, no fraction), as
the Standard Webhooks specification defines it; anything else is refused before any HMAC.

Beyond the package: a configurable tolerance in both directions, rejection of malformed
headers without an exception escaping, and constant-time comparison of every ``v1``
entry so that any one valid signature passes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

#: Unix seconds as ASCII digits, matched against the whole header (``fullmatch``: no newline).
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SECRET_PREFIX = "whsec_"
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


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret: the base64 after the prefix, decoded as the
    ``standardwebhooks`` package decodes it (padding added, so unpadded secrets work)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")


def expected_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """HMAC-SHA256 of ``{msg_id}.{timestamp}.{body}``, the header values as sent."""
    signed = b".".join((msg_id.encode(), timestamp.encode(), body))
    return hmac.new(signing_key(secret), signed, hashlib.sha256).digest()


def verify_signature(
    secret: str | Sequence[str],
    body: bytes,
    headers: Mapping[str, str],
    tolerance_seconds: int,
    now: datetime | None = None,
) -> str:
    """Check the three ``webhook-*`` headers; return the webhook id or raise SignatureRejected.

    ``body`` is the raw bytes as received: call this before decoding them. ``secret`` may
    be several secrets (a source during a rotation's overlap): any one of them verifies.
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
    if not TIMESTAMP.fullmatch(timestamp):
        raise SignatureRejected("webhook-timestamp is not a Unix time in seconds")
    sent_at = int(timestamp)
    current = (now or datetime.now(UTC)).timestamp()
    if abs(current - sent_at) > tolerance_seconds:
        raise SignatureRejected("webhook-timestamp is outside the allowed tolerance")

    candidates = _signatures(signature)
    if not candidates:
        raise SignatureRejected("webhook-signature has no v1 signature")
    matched = False
    for each in [secret] if isinstance(secret, str) else secret:
        expected_bytes = expected_signature(each, msg_id, timestamp, body)
        for candidate in candidates:
            # Compare every entry (no early exit) so timing says nothing about which matched.
            matched |= hmac.compare_digest(expected_bytes, candidate)
    if not matched:
        raise SignatureRejected("no signature matches")
    return msg_id
