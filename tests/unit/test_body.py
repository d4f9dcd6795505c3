from __future__ import annotations

import pytest

from ingest.body import MAX_DEPTH, BodyRejected, parse_body


class TestParseBody:
    def test_a_plain_document(self):
        assert parse_body(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}

    def test_a_utf8_bom_is_tolerated(self):
        assert parse_body("\ufeff{}".encode()) == {}

    @pytest.mark.parametrize(
        "body, code",
        [
            (b"[" * 100_000, "nesting_too_deep"),
            (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nesting_too_deep"),
            (b'{"a": 1, "a": 2}', "duplicate_key"),
            (b'{"a": Infinity}', "invalid_json"),
            (b"\xff\xfe", "invalid_json"),
            (b"", "invalid_json"),
        ],
    )
    def test_rejections(self, body, code):
        with pytest.raises(BodyRejected) as caught:
            parse_body(body)
        assert caught.value.code == code

    def test_the_maximum_depth_is_allowed(self):
        body = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
        assert parse_body(body) is not None
