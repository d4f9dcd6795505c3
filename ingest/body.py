"""The one strict JSON decoder of every request body the service takes.

The webhook (``api.webhooks``) and every JSON endpoint of the API (through
``api.rest.ArgumentsParser``: ``POST /v1/exports``, restore, any later one) decode with
``parse_body`` / ``parse_text``, so a body is refused the same way wherever it is sent, and
nothing a parser can raise escapes as a 500. There are two kinds of refusal:

- ``BodyRejected`` (400): the bytes are not a JSON document this service reads: not UTF-8
  (one leading BOM is tolerated), malformed, a key twice in one object, ``NaN`` or
  ``Infinity``, nesting deeper than ``MAX_DEPTH`` (a nesting bomb of any depth included:
  the parser's RecursionError is caught).
- ``ValuesRefused`` (422; a ``BodyRejected`` too, so a caller that only knows the parent
  still refuses): well-formed JSON holding values that no store can hold the same way on
  PostgreSQL and SQLite, which the webhook refuses as validation failures: numbers that
  are not I-JSON (RFC 7493 §2.2: an integer beyond ±(2^53 − 1), a number that overflows a
  double such as ``1e999``), and strings or object keys holding a lone surrogate
  (``"\\ud800"``: not Unicode, so not encodable as UTF-8 at all). An integer's digits are
  counted before anything converts them, so one of 5,000 digits is such a refusal too,
  never Python's int-string digit-limit ValueError. Each value is reported at its path;
  ``ValuesRefused.details`` nests the paths by key and list index as marshmallow nests its
  messages, and keys a batch by the notification's index. These are a 422 rather than a
  400 because the document parses and the sender can be told which field to fix; they are
  refused while decoding (before the webhook's envelope and schema checks), so that no
  later step ever sees such a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

#: Deeper than any valid notification (details objects included) will ever need.
MAX_DEPTH = 32

#: RFC 7493 §2.2: the integers that every I-JSON receiver holds exactly (IEEE 754 doubles).
MAX_EXACT_INTEGER = 2**53 - 1

#: JSON integers have no leading zeros, so one with more digits than this is out of range.
MAX_EXACT_DIGITS = len(str(MAX_EXACT_INTEGER))

INFINITY = float("inf")

#: Values listed in one refusal: a body may hold thousands, the answer stays small.
MAX_REPORTED = 100

NOT_AN_EXACT_INTEGER = f"Not an I-JSON number: integers are within ±{MAX_EXACT_INTEGER}."
NOT_A_FINITE_NUMBER = "Not an I-JSON number: it is too large for a 64-bit float."
NOT_UNICODE = "Not Unicode text: a lone surrogate (\\ud800 to \\udfff) cannot be stored."
NOT_UNICODE_KEY = "Not Unicode text: this key holds a lone surrogate, which cannot be stored."

_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BodyRejected(ValueError):
    """A body that is not a JSON document this service reads (a 400, ``code`` says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: The keys and list indexes (as strings) from a document's root to one of its values.
FieldPath = tuple[str, ...]


class ValuesRefused(BodyRejected):
    """Well-formed JSON holding values no store can hold (a 422), each at its path.

    ``problems`` lists ``(path, message)`` in document order, at most ``MAX_REPORTED``;
    a path is the keys and list indexes (as strings) from the document's root.
    """

    def __init__(self, problems: list[tuple[FieldPath, str]]) -> None:
        path, reason = problems[0]
        where = ".".join(path) or "the document"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__("validation_failed", f"a value cannot be stored: {where}{more}: {reason}")
        self.problems = problems

    def details(self, envelope: str | None = None) -> dict[str, Any]:
        """The problems nested by path, as marshmallow nests messages: ``{key: {…: [msg]}}``.

        With ``envelope`` (a webhook batch's ``"notifications"``), a path into that list
        starts at the item's index, the way every 422 of a batch is keyed. A problem at
        the root itself, or at a place that already holds nested problems, is listed
        under ``_schema`` there, as marshmallow lists a whole object's errors.
        """
        nested: dict[str, Any] = {}
        for path, message in self.problems:
            if envelope is not None and len(path) > 1 and path[0] == envelope:
                path = path[1:]
            slot = nested
            for key in path[:-1]:
                child = slot.get(key)
                if not isinstance(child, dict):
                    child = {} if child is None else {"_schema": child}
                    slot[key] = child
                slot = child
            leaf = path[-1] if path else "_schema"
            found = slot.setdefault(leaf, [])
            (found.setdefault("_schema", []) if isinstance(found, dict) else found).append(message)
        return nested


class _Refused:
    """Stands in the parsed document for a number no store can hold, until the walk
    (``refused_values``) reports it with its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


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


def _shown(key: str) -> str:
    """A key as it can be written in an answer: a lone surrogate as its ``\\udXXX`` escape."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


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


def refused_values(document: Any) -> list[tuple[FieldPath, str]]:
    """Every value of a parsed document that no store can hold, with its path (at most
    ``MAX_REPORTED``). Recursive: callers pass documents already checked against
    ``MAX_DEPTH``."""
    problems: list[tuple[FieldPath, str]] = []

    def visit(node: Any, path: FieldPath) -> None:
        if len(problems) >= MAX_REPORTED:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                if _SURROGATE.search(key):
                    problems.append(((*path, _shown(key)), NOT_UNICODE_KEY))
                else:
                    visit(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                visit(value, (*path, str(index)))
        elif isinstance(node, _Refused):
            problems.append((path, node.reason))
        elif isinstance(node, str) and _SURROGATE.search(node):
            problems.append((path, NOT_UNICODE))

    visit(document, ())
    return problems[:MAX_REPORTED]


def decode_body(body: bytes) -> str:
    """The body as text; JSON is UTF-8, so anything else is refused."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRejected("invalid_json", f"the body is not UTF-8: {exc.reason}") from None


def parse_body(body: bytes) -> Any:
    """The JSON document of a request body; BodyRejected (400) or ValuesRefused (422)."""
    return parse_text(decode_body(body))


def parse_text(text: str) -> Any:
    """The JSON document of a body decoded by decode_body; raises as parse_body does.

    Numbers go through hooks: in range they are the int or float the standard parser
    gives; out of range they become placeholders that the walk (``refused_values``) then
    reports with their paths. Strict UTF-8 decoding refuses surrogate code points, so in
    such text a lone surrogate can only come from a ``\\uD800``–``\\uDFFF`` escape. The
    walk runs only when a hook refused a number or the text holds such an escape (a
    surrogate pair included), so an ordinary body is read in one pass.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    refused: list[_Refused] = []

    def parse_int(digits: str) -> Any:
        # Fifteen digits are always exact; longer ones are counted before any conversion.
        if len(digits) < MAX_EXACT_DIGITS or (
            len(digits.lstrip("-")) <= MAX_EXACT_DIGITS and abs(int(digits)) <= MAX_EXACT_INTEGER
        ):
            return int(digits)
        refused.append(_Refused(NOT_AN_EXACT_INTEGER))
        return refused[-1]

    def parse_float(digits: str) -> Any:
        value = float(digits)
        if value == INFINITY or value == -INFINITY:
            refused.append(_Refused(NOT_A_FINITE_NUMBER))
            return refused[-1]
        return value

    try:
        document = json.loads(
            text,
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
            parse_int=parse_int,
            parse_float=parse_float,
        )
    except RecursionError:
        raise BodyRejected("nesting_too_deep", "the JSON nesting is too deep") from None
    except json.JSONDecodeError as exc:
        raise BodyRejected("invalid_json", f"the body is not JSON: {exc}") from None
    if depth_of(document) > MAX_DEPTH:
        raise BodyRejected(
            "nesting_too_deep", f"the JSON nesting is deeper than {MAX_DEPTH} levels"
        )
    if refused or "\\ud" in text or "\\uD" in text:
        problems = refused_values(document)
        if problems:
            raise ValuesRefused(problems)
    return document
