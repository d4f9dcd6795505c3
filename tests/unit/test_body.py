from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.body import (
    MAX_DEPTH,
    MAX_EXACT_INTEGER,
    MAX_REPORTED,
    NOT_A_FINITE_NUMBER,
    NOT_AN_EXACT_INTEGER,
    NOT_UNICODE,
    NOT_UNICODE_KEY,
    BodyRejected,
    ValuesRefused,
    parse_body,
)

#: Any document the decoder must accept: I-JSON numbers, Unicode text (hypothesis' text
#: excludes surrogates), at most MAX_DEPTH levels.
i_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_EXACT_INTEGER, MAX_EXACT_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


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


def refusal(body: bytes) -> ValuesRefused:
    with pytest.raises(ValuesRefused) as caught:
        parse_body(body)
    return caught.value


class TestValuesNoStoreCanHoldAreRefusedWithTheirPath:
    def test_an_integer_one_past_the_i_json_range_is_refused(self):
        refused = refusal(b'{"a": {"b": [1, 9007199254740992]}}')
        assert refused.details() == {"a": {"b": {"1": [NOT_AN_EXACT_INTEGER]}}}

    def test_a_negative_integer_past_the_range_is_refused(self):
        assert refusal(b'{"a": -9007199254740992}').details() == {"a": [NOT_AN_EXACT_INTEGER]}

    @pytest.mark.parametrize("value", [MAX_EXACT_INTEGER, -MAX_EXACT_INTEGER, 0, -1])
    def test_the_integers_at_the_edges_of_the_range_are_kept(self, value):
        assert parse_body(json.dumps({"a": value}).encode()) == {"a": value}

    @pytest.mark.parametrize("digits", [5000, 4301, 100_000])
    def test_an_integer_past_the_int_string_digit_limit_is_a_refusal(self, digits):
        refused = refusal(b'{"n": [' + b"9" * digits + b"]}")
        assert refused.details() == {"n": {"0": [NOT_AN_EXACT_INTEGER]}}

    @pytest.mark.parametrize("number", [b"1e999", b"-1e400", b"1.7976931348623159e308"])
    def test_a_number_that_overflows_a_double_is_refused(self, number):
        assert refusal(b'{"x": ' + number + b"}").details() == {"x": [NOT_A_FINITE_NUMBER]}

    @pytest.mark.parametrize("number", [b"1e308", b"1e-999", b"9007199254740993.5", b"-0"])
    def test_finite_numbers_are_kept(self, number):
        assert parse_body(b"[" + number + b"]") == [json.loads(number)]

    def test_a_lone_surrogate_in_a_value_is_refused(self):
        refused = refusal(b'{"name": "Ada \\ud800", "ok": "\\ud83d\\ude00"}')
        assert refused.details() == {"name": [NOT_UNICODE]}

    @pytest.mark.parametrize("escape", [b"\\ud800", b"\\uDBFF", b"\\udc00", b"\\uDFFF"])
    def test_every_kind_of_lone_surrogate_escape_is_refused(self, escape):
        assert refusal(b'["' + escape + b'"]').details() == {"0": [NOT_UNICODE]}

    def test_a_lone_surrogate_in_a_key_is_refused_at_that_key(self):
        refused = refusal(b'{"properties": {"a\\udc00": 1}}')
        assert refused.details() == {"properties": {"a\\udc00": [NOT_UNICODE_KEY]}}

    def test_a_surrogate_pair_is_one_character(self):
        assert parse_body(b'["\\ud83d\\ude00", "\\uD83D\\uDE00"]') == ["\U0001f600"] * 2

    def test_an_escaped_backslash_is_not_the_start_of_an_escape(self):
        assert parse_body(b'["\\\\ud800"]') == ["\\ud800"]

    def test_a_high_surrogate_followed_by_another_high_one_is_refused(self):
        assert refusal(b'["\\ud800\\ud800\\udc00"]').details() == {"0": [NOT_UNICODE]}

    def test_a_value_at_the_root_is_listed_under_schema(self):
        assert refusal(b"1e999").details() == {"_schema": [NOT_A_FINITE_NUMBER]}

    def test_a_batch_is_keyed_by_the_index_of_the_notification(self):
        body = b'{"notifications": [{"a": 1}, {"a": 1e999, "b": ["\\ud800"]}]}'
        assert refusal(body).details(envelope="notifications") == {
            "1": {"a": [NOT_A_FINITE_NUMBER], "b": {"0": [NOT_UNICODE]}}
        }

    def test_the_message_names_the_first_path(self):
        refused = refusal(b'{"a": [1, 1e999], "b": 1e999}')
        assert refused.message.startswith("a value cannot be stored: a.1 (and 1 more)")

    def test_the_number_of_values_listed_is_bounded(self):
        body = json.dumps({"n": ["@"] * 1000}).replace('"@"', "1e999").encode()
        assert len(refusal(body).problems) == MAX_REPORTED

    def test_a_nesting_bomb_is_too_deep_before_any_value_is_looked_at(self):
        with pytest.raises(BodyRejected) as caught:
            parse_body(b"[" * 200_000 + b"1e999")
        assert caught.value.code == "nesting_too_deep"
        assert not isinstance(caught.value, ValuesRefused)

    @settings(max_examples=100, deadline=None)
    @given(document=i_json_values)
    def test_any_i_json_document_reads_back_as_itself(self, document):
        for ensure_ascii in (True, False):
            body = json.dumps(document, ensure_ascii=ensure_ascii).encode()
            assert parse_body(body) == document
