"""RFC 8785 (JCS) canonical JSON, and the exact bytes of an event's Merkle leaf.

What it promises. ``canonical_json(value)`` is the RFC 8785 serialisation of a JSON value given as
Python data (dict with str keys, list or tuple, str, int, float, bool, None): object members
sorted by the UTF-16 code units of their names, no whitespace, strings escaped as ECMAScript
does, numbers as ECMAScript's Number-to-String of their IEEE-754 double, UTF-8 output. It
raises ``ValueError`` (``rfc8785.CanonicalizationError``) for what has no such form: NaN or
an infinity, an integer beyond ±(2^53 − 1), a non-str key, a lone surrogate, any other type.
``event_leaf(event)`` is the canonical JSON of the public event object and is the leaf that
``storage.merkle.leaf_hash`` hashes into the log; it insists on exactly the event object's
keys (``EVENT_KEYS``), ``seq`` included, and raises ``ValueError`` naming any missing or
extra key.

Reason. A leaf must be recomputable, byte for byte, by anyone holding the event as the API
serves it, in any language: RFC 8785 is the published, implementation-independent answer
(the ``rfc8785`` package, tested here against its author's vectors). Fixing the key set
means a field added to the event object later cannot silently change, or escape, what the
log commits to: changing the leaf is a deliberate change of this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import rfc8785

#: The keys of the public event object, each required, no other allowed.
EVENT_KEYS: tuple[str, ...] = (
    "id",
    "type",
    "label",
    "occurred_at",
    "recorded_at",
    "entity",
    "targets",
    "property",
    "old_value",
    "new_value",
    "actor",
    "ip_address",
    "origin",
    "source_id",
    "notification_id",
    "details",
    "seq",
)


#: Integers I-JSON keeps exact, and so print the same in Python and ECMAScript.
_SAFE_INTEGER = 2**53 - 1


def _plain(value: Any) -> bool:
    """Whether compact, key-sorted JSON of ``value`` is already its RFC 8785 form.

    It is when there is no float (ECMAScript prints numbers its own way), every integer is
    exact in a double, and no key holds a character beyond U+FFFF (below it, code-point
    order is UTF-16 order). Strings are escaped alike by both: the two-character escapes
    and lowercase ``\\u00xx`` for the other control characters, nothing else.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if -_SAFE_INTEGER <= item <= _SAFE_INTEGER:
                continue
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
                if not key.isascii() and max(map(ord, key)) > 0xFFFF:
                    return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical JSON of ``value``, as UTF-8 bytes; ``ValueError`` if none.

    The log canonicalises every event it sequences, so the common case (no float) takes
    orjson, whose compact, key-sorted output is then the standard library's to the byte;
    anything else, and anything it cannot encode (a lone surrogate), goes to the
    ``rfc8785`` package. A property test holds the two equal.
    """
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass  # orjson.JSONEncodeError: the reference implementation says what is wrong
    return rfc8785.dumps(value)


def event_leaf(event: Mapping[str, Any]) -> bytes:
    """The log leaf of ``event``: the canonical JSON of exactly the ``EVENT_KEYS`` object."""
    if not isinstance(event, Mapping):
        raise ValueError(f"an event is a JSON object, not {type(event).__name__}")
    missing = [key for key in EVENT_KEYS if key not in event]
    extra = sorted(repr(key) for key in event if key not in EVENT_KEYS)
    if missing or extra:
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if extra:
            problems.append("unexpected " + ", ".join(extra))
        raise ValueError("not an event object: " + "; ".join(problems))
    return canonical_json(dict(event))
