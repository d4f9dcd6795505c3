"""Parsing webhook bodies safely: UTF-8 only, no duplicate keys, no NaN, bounded nesting."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

#: Deeper than any valid notification (details objects included) will ever need.
MAX_DEPTH = 32


class BodyRejected(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyRejected("duplicate_key", f"the key {key!r} appears twice in one object")
            seen.add(key)
    return document


def _refuse_constant(name: str) -> Any:
    raise BodyRejected("invalid_json", f"{name} is not valid JSON")


def depth_of(document: Any) -> int:
    """Nesting depth of a parsed document, without recursion."""
    if not isinstance(document, dict | list):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        children: Iterable[Any] = node.values() if isinstance(node, dict) else node
        # Only containers go on the stack: scalars cannot deepen anything.
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def decode_body(body: bytes) -> str:
    """The body as text; JSON is UTF-8, so anything else is refused."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRejected("invalid_json", f"the body is not UTF-8: {exc.reason}") from None


def parse_body(body: bytes) -> Any:
    """The JSON document of a request body, or BodyRejected with a 400-worthy reason."""
    return parse_text(decode_body(body))


def parse_text(text: str) -> Any:
    """The JSON document of a body already decoded (see decode_body)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        document = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise BodyRejected("nesting_too_deep", "the JSON nesting is too deep") from None
    except json.JSONDecodeError as exc:
        raise BodyRejected("invalid_json", f"the body is not JSON: {exc}") from None
    if depth_of(document) > MAX_DEPTH:
        raise BodyRejected(
            "nesting_too_deep", f"the JSON nesting is deeper than {MAX_DEPTH} levels"
        )
    return document
