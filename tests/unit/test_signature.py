"""Standard Webhooks verification as a pure function (the HTTP vectors are in tests/e2e)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from ingest.signature import SignatureRejected, verify_signature
from tests.factories import signed_headers, unique

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BODY = b'{"kind":"snapshot"}'


def raw_signed_headers(
    secret: str, body: bytes, timestamp: str | None = None, msg_id: str | None = None
) -> dict[str, str]:
    """Headers signing ``{id}.{timestamp}.{body}`` byte for byte, the timestamp as given.

    Computed here with hmac, independently of ingest.signature and of the standardwebhooks
    package (which signs text and re-formats the timestamp as an integer).
    """
    msg_id = msg_id or unique("msg")
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


def headers(**overrides: str) -> dict[str, str]:
    result = signed_headers(SECRET, BODY, msg_id="msg_1", timestamp=int(NOW.timestamp()))
    result.update(overrides)
    return result


class TestVerifySignature:
    def test_returns_the_webhook_id(self):
        assert verify_signature(SECRET, BODY, headers(), 300, now=NOW) == "msg_1"

    def test_the_published_standard_webhooks_vector(self):
        # The example of the Standard Webhooks reference implementations.
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        body = b'{"test": 2432232314}'
        vector = {
            "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp": "1614265330",
            "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        }
        now = datetime.fromtimestamp(1614265330, UTC)
        assert verify_signature(secret, body, vector, 300, now=now) == vector["webhook-id"]

    @pytest.mark.parametrize("skew", [300, -300])
    def test_the_tolerance_is_inclusive(self, skew):
        later = datetime.fromtimestamp(NOW.timestamp() + skew, UTC)
        verify_signature(SECRET, BODY, headers(), 300, now=later)

    @pytest.mark.parametrize("skew", [301, -301])
    def test_one_second_past_the_tolerance_fails_both_ways(self, skew):
        later = datetime.fromtimestamp(NOW.timestamp() + skew, UTC)
        with pytest.raises(SignatureRejected, match="tolerance"):
            verify_signature(SECRET, BODY, headers(), 300, now=later)

    @pytest.mark.parametrize(
        "signature",
        ["v1", "v1,", "v2,abc", "v1,not-base64!", "", "  "],
    )
    def test_malformed_signature_headers_are_rejections_not_errors(self, signature):
        with pytest.raises(SignatureRejected):
            verify_signature(SECRET, BODY, headers(**{"webhook-signature": signature}), 300, NOW)

    def test_an_overlong_webhook_id_is_refused(self):
        with pytest.raises(SignatureRejected, match="webhook-id"):
            verify_signature(SECRET, BODY, headers(**{"webhook-id": "m" * 201}), 300, NOW)

    @settings(max_examples=50, deadline=None)
    @given(body=st.text(max_size=200), msg_id=st.text("abcdefgh_0123456789", min_size=1))
    def test_agrees_with_the_standardwebhooks_package_on_text_bodies(self, body, msg_id):
        signature = Webhook(SECRET).sign(msg_id=msg_id, timestamp=NOW, data=body)
        sent = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(NOW.timestamp())),
            "webhook-signature": signature,
        }
        assert verify_signature(SECRET, body.encode(), sent, 300, now=NOW) == msg_id


class TestTheRawBytesAreVerified:
    """The signature covers the bytes as received, before anything decodes them."""

    BODY = b'{"kind": "snap\xffshot"}'

    def test_a_body_that_is_not_utf8_is_verified_over_its_bytes(self):
        sent = raw_signed_headers(SECRET, self.BODY, str(int(NOW.timestamp())), "msg_1")
        assert verify_signature(SECRET, self.BODY, sent, 300, now=NOW) == "msg_1"

    def test_a_wrong_signature_over_a_body_that_is_not_utf8_is_a_rejection(self):
        sent = raw_signed_headers(SECRET, b"{}", str(int(NOW.timestamp())), "msg_1")
        with pytest.raises(SignatureRejected, match="no signature matches"):
            verify_signature(SECRET, self.BODY, sent, 300, now=NOW)


class TestTheTimestampIsVerifiedAsSent:
    """``webhook-timestamp`` is signed as the literal header value, never re-formatted."""

    def test_a_zero_padded_timestamp_signed_as_sent_is_accepted(self):
        padded = "0" + str(int(NOW.timestamp()))
        sent = raw_signed_headers(SECRET, BODY, padded, "msg_1")
        assert verify_signature(SECRET, BODY, sent, 300, now=NOW) == "msg_1"

    def test_a_signature_over_the_plain_integer_does_not_cover_a_padded_header(self):
        sent = headers(**{"webhook-timestamp": "0" + str(int(NOW.timestamp()))})
        with pytest.raises(SignatureRejected, match="no signature matches"):
            verify_signature(SECRET, BODY, sent, 300, now=NOW)

    @pytest.mark.parametrize(
        "template",
        ["+{}", "-{}", " {}", "{} ", "{}\n", "\t{}", "{}.0", "{}e0", "1_{}", "\u0661{}"],
    )
    def test_a_timestamp_that_is_not_a_plain_integer_is_refused(self, template):
        value = template.format(int(NOW.timestamp()))
        sent = raw_signed_headers(SECRET, BODY, value, "msg_1")
        with pytest.raises(SignatureRejected, match="not a Unix time"):
            verify_signature(SECRET, BODY, sent, 300, now=NOW)
