"""storage.jsoncodec reads and writes the values the standard library does."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import jsoncodec

_texts = st.text(st.characters(codec=None), max_size=8)
#: Every JSON value Python's json round-trips, integers of any size included (jsonb prints
#: a large number such as 1e30 as its digits).
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_texts, children, max_size=4),
    max_leaves=20,
)


def same(a, b) -> bool:
    """Equal and of the same types throughout (1 == 1.0 == True in Python)."""
    return json.dumps(a) == json.dumps(b) and repr(a) == repr(b)


class TestLoads:
    @settings(max_examples=500, deadline=None)
    @given(_values)
    def test_reads_what_json_reads(self, value):
        # As the standard library writes it, and as jsonb prints it (", " and ": ").
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
            assert same(jsoncodec.loads(text), json.loads(text))
            try:
                raw = text.encode()
            except UnicodeEncodeError:  # a lone surrogate has no UTF-8: no bytes to read
                continue
            assert same(jsoncodec.loads(raw), json.loads(text))

    @pytest.mark.parametrize(
        "text",
        [
            "1000000000000000000000000000000",  # jsonb's 1e30: orjson alone reads a float
            "18446744073709551616",
            "-9223372036854775809",
            '{"a": [9223372036854775807, -9223372036854775808, 18446744073709551615]}',
            '"\\ud800"',  # a lone surrogate: orjson refuses, json reads it
            "1e400",  # beyond a double: orjson refuses, json reads inf
        ],
    )
    def test_what_orjson_reads_otherwise_is_read_as_json_reads_it(self, text):
        assert same(jsoncodec.loads(text.encode()), json.loads(text))

    def test_what_json_refuses_is_refused(self):
        with pytest.raises(ValueError):
            jsoncodec.loads(b"{")


class TestDumps:
    @settings(max_examples=500, deadline=None)
    @given(_values)
    def test_writes_what_json_reads_back_as_the_value(self, value):
        try:
            expected = json.dumps(value)
        except ValueError:
            return
        assert same(json.loads(jsoncodec.dumps(value)), json.loads(expected))

    @pytest.mark.parametrize("value", [{1: "a"}, [2**64], {"a": "\ud800"}])
    def test_what_orjson_refuses_is_written_by_json(self, value):
        assert jsoncodec.dumps(value) == json.dumps(value, separators=(",", ":"))

    @pytest.mark.parametrize("value", [datetime(2026, 1, 1, tzinfo=UTC), {1, 2}, object()])
    def test_what_json_cannot_write_is_refused(self, value):
        with pytest.raises(TypeError):
            jsoncodec.dumps({"x": value})
