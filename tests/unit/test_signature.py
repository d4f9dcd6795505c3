"""Standard Webhooks verification as a pure function (the HTTP vectors are in tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.signature import SignatureRejected, verify_signature
from tests.factories import signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BODY = b'{"kind":"snapshot"}'


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
