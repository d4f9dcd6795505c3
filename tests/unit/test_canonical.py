"""RFC 8785 canonical JSON (storage.canonical) against the JCS author's published vectors.

tests/unit/jcs_vectors/ holds, byte for byte, the input/output pairs and the number
generator's static values of https://github.com/cyberphone/json-canonicalization at commit
19d51d7fe467d4706a3ff08adf8a748f29fc21e0 (see its README.md). From the same commit, below:
the SHA-256 checksums of the generated ES6 number test file (testdata/README.md) and the
number samples of python3/test/verify-numbers.py (also listed in testdata/README.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.canonical import EVENT_KEYS, canonical_json, event_leaf

VECTORS = Path(__file__).parent / "jcs_vectors"
NAMES = sorted(p.stem for p in (VECTORS / "input").glob("*.json"))

# testdata/README.md, "The following table records the expected hashes": SHA-256 of the
# first N lines ("<hex bits>,<expected serialisation>\n") of the ES6 number test file.
NUMBER_FILE_CHECKSUMS = {
    1000: ("be18b62b6f69cdab33a7e0dae0d9cfa869fda80ddc712221570f9f40a5878687", 37967),
    10000: ("b9f7a8e75ef22a835685a52ccba7f7d6bdc99e34b010992cbc5864cd12be6892", 399022),
    100000: ("22776e6d4b49fa294a0d0f349268e5c28808fe7e0cb2bcbe28f63894e494d4c7", 4031728),
}

# python3/test/verify-numbers.py: IEEE-754 bits in hex -> expected ("null": not allowed).
NUMBER_SAMPLES = [
    ("4340000000000001", "9007199254740994"),
    ("4340000000000002", "9007199254740996"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("8000000000000000", "0"),
    ("7fffffffffffffff", "null"),
    ("7ff0000000000000", "null"),
    ("fff0000000000000", "null"),
]


def double(bits: int) -> float:
    value: float = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
    return value


def number_sequence() -> Iterator[int]:
    """The bit patterns of testdata/numgen.go's sequence: static, 2000 serial, then SHA-256."""
    lines = (VECTORS / "numgen_static.txt").read_text().splitlines()
    yield from (int(line, 16) for line in lines if not line.startswith("#"))
    yield from (0x0010000000000000 + i for i in range(2000))
    block = bytes(32)
    while True:
        block = hashlib.sha256(block).digest()
        for offset in range(0, 32, 8):
            bits = int.from_bytes(block[offset : offset + 8], "little")
            value = double(bits)
            if value != 0 and math.isfinite(value):
                yield bits


class TestPublishedCanonicalisations:
    @pytest.mark.parametrize("name", NAMES)
    def test_input_canonicalises_to_the_published_output(self, name):
        parsed = json.loads((VECTORS / "input" / f"{name}.json").read_bytes())
        assert canonical_json(parsed) == (VECTORS / "output" / f"{name}.json").read_bytes()

    def test_every_published_pair_is_here(self):
        assert NAMES == ["arrays", "french", "structures", "unicode", "values", "weird"]
        assert sorted(p.stem for p in (VECTORS / "output").glob("*.json")) == NAMES

    @pytest.mark.parametrize("name", NAMES)
    def test_canonical_output_is_a_fixed_point(self, name):
        output = (VECTORS / "output" / f"{name}.json").read_bytes()
        assert canonical_json(json.loads(output)) == output


class TestNumbers:
    @pytest.mark.parametrize(("bits", "expected"), NUMBER_SAMPLES)
    def test_published_samples(self, bits, expected):
        value = double(int(bits, 16))
        if expected == "null":
            with pytest.raises(ValueError):
                canonical_json(value)
        else:
            assert canonical_json(value) == expected.encode()
            assert float(expected) == value

    def test_the_generated_number_file_has_the_published_checksums(self):
        rolling = hashlib.sha256()
        size = 0
        sequence = number_sequence()
        for count in range(1, max(NUMBER_FILE_CHECKSUMS) + 1):
            bits = next(sequence)
            line = f"{bits:x},".encode() + canonical_json(double(bits)) + b"\n"
            rolling.update(line)
            size += len(line)
            if count in NUMBER_FILE_CHECKSUMS:
                assert (rolling.hexdigest(), size) == NUMBER_FILE_CHECKSUMS[count], count

    def test_integers_beyond_double_precision_are_refused(self):
        assert canonical_json(2**53 - 1) == b"9007199254740991"
        assert canonical_json(-(2**53 - 1)) == b"-9007199254740991"
        for value in (2**53, -(2**53), 10**30):
            with pytest.raises(ValueError):
                canonical_json(value)


class TestWhatHasNoCanonicalForm:
    @pytest.mark.parametrize(
        "value",
        [math.nan, math.inf, {1: "x"}, {"a": "\ud800"}, "\udfff", b"bytes", {1.5}, object()],
        ids=["nan", "inf", "int-key", "surrogate-value", "surrogate", "bytes", "set", "object"],
    )
    def test_is_a_value_error(self, value):
        with pytest.raises(ValueError):
            canonical_json(value)


def sample_event(**changes: Any) -> dict[str, Any]:
    event = {
        "id": "evt_01J9Z",
        "type": "user.updated",
        "label": "User updated",
        "occurred_at": "2026-11-26T12:00:00Z",
        "recorded_at": "2026-11-26T12:00:01.250Z",
        "entity": {"type": "user", "id": "u_1", "name": "Zoë"},
        "targets": [{"type": "app", "id": "slack"}],
        "property": "role",
        "old_value": "member",
        "new_value": "admin",
        "actor": {"type": "user", "id": "u_2", "name": None, "email": "a@example.com"},
        "ip_address": "2001:db8::1",
        "origin": "webhook",
        "source_id": "src_1",
        "notification_id": "n_1",
        "details": {"b": 1.0, "a": [1, 0.5, True]},
        "seq": 42,
    }
    event.update(changes)
    return event


class TestEventLeaves:
    def test_the_leaf_is_the_canonical_json_of_the_event_object(self):
        expected = (
            '{"actor":{"email":"a@example.com","id":"u_2","name":null,"type":"user"},'
            '"details":{"a":[1,0.5,true],"b":1},'
            '"entity":{"id":"u_1","name":"Zoë","type":"user"},'
            '"id":"evt_01J9Z","ip_address":"2001:db8::1","label":"User updated",'
            '"new_value":"admin","notification_id":"n_1",'
            '"occurred_at":"2026-11-26T12:00:00Z","old_value":"member","origin":"webhook",'
            '"property":"role","recorded_at":"2026-11-26T12:00:01.250Z","seq":42,'
            '"source_id":"src_1","targets":[{"id":"slack","type":"app"}],"type":"user.updated"}'
        )
        assert event_leaf(sample_event()) == expected.encode("utf-8")

    def test_key_order_does_not_matter(self):
        event = sample_event()
        assert event_leaf(dict(reversed(list(event.items())))) == event_leaf(event)

    def test_every_field_is_committed(self):
        leaves = {event_leaf(sample_event())}
        for key in EVENT_KEYS:
            leaves.add(event_leaf(sample_event(**{key: "changed"})))
        assert len(leaves) == len(EVENT_KEYS) + 1

    def test_the_keys_are_exactly_those_of_the_event_object(self):
        assert len(EVENT_KEYS) == len(set(EVENT_KEYS)) == 17
        assert set(EVENT_KEYS) == set(sample_event())

    def test_missing_keys_are_named(self):
        event = sample_event()
        del event["seq"], event["actor"]
        with pytest.raises(ValueError, match="missing actor, seq"):
            event_leaf(event)

    def test_extra_keys_are_named(self):
        with pytest.raises(ValueError, match="unexpected 'org_id'"):
            event_leaf(sample_event(org_id="org_1"))
        event: dict[Any, Any] = sample_event()
        event[7] = "x"
        with pytest.raises(ValueError, match="unexpected 7"):
            event_leaf(event)

    def test_values_without_a_canonical_form_are_refused(self):
        with pytest.raises(ValueError):
            event_leaf(sample_event(details={"n": math.nan}))
        with pytest.raises(ValueError):
            event_leaf(sample_event(seq=2**60))

    def test_an_event_that_is_not_an_object_is_refused(self):
        with pytest.raises(ValueError):
            event_leaf([("id", 1)])  # type: ignore[arg-type]


#: JSON values as the log holds them, floats included, text from every plane.
_texts = st.text(st.characters(codec=None), max_size=6)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_texts, children, max_size=4),
    max_leaves=20,
)


class TestTheFastPathIsTheReference:
    @settings(max_examples=1000, deadline=None)
    @given(_json_values)
    def test_canonical_json_equals_the_rfc8785_package_for_any_value(self, value):
        try:
            expected = rfc8785.dumps(value)
        except (rfc8785.CanonicalizationError, UnicodeEncodeError):  # a lone surrogate
            with pytest.raises(ValueError):
                canonical_json(value)
            return
        assert canonical_json(value) == expected

    def test_keys_beyond_the_basic_plane_sort_by_utf16_code_units(self):
        value = {"\U00010000": 1, "\ue000": 2}
        assert canonical_json(value) == rfc8785.dumps(value)
        assert canonical_json(value).index("\ue000".encode()) > 0
