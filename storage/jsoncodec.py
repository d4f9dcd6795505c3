"""JSON to and from the database, through orjson where it gives what ``json`` gives.

The worker and the sequencer decode and encode a few JSON documents for every record and
event: with the standard library that was a fifth of a batch's time in process. orjson's C
(Rust) code does the same several times faster, but it is not the standard library in two
places, and those take the standard library's path here:

- ``loads``: orjson reads an integer beyond 64 bits as a float, where ``json`` keeps it an
  exact ``int``. PostgreSQL's ``jsonb`` prints a large number such as ``1e30`` as its
  decimal digits, so a document with a run of 19 digits or more (strings included: the
  test is a plain search, never wrong in the unsafe direction) is read by ``json``. Any
  text orjson refuses (invalid UTF-8, a lone surrogate, a number past a double) is read by
  ``json`` too, so it fails, or not, as it always did.
- ``dumps``: orjson refuses a non-``str`` key and an integer beyond 64 bits, which ``json``
  writes; those values are written by ``json``. Datetimes and dataclasses, which ``json``
  refuses, orjson is told to refuse too. Where the two still differ no caller goes, since
  what is written here is plain JSON data that ingest validated or the worker built from
  it: orjson writes NaN and the infinities as ``null`` (``json`` writes ``NaN``, which
  PostgreSQL refuses; ingest refuses them), writes a UUID or an ``Enum`` (``json``
  raises), and reads a ``dict`` subclass's own storage rather than its ``items()``.

The text written may differ from ``json.dumps``'s in white space and in escaping no
character beyond ASCII; ``jsonb`` stores the same value either way. Nothing whose bytes are
evidence (export files, their manifests, the log's leaves) goes through here.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: A run of 19 digits or more, found as 19 zeros once every digit is a zero (the ``re``
#: module's search for it cost more than orjson's whole parse): every integer beyond 64
#: bits has at least 20.
_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_DECODER = json.JSONDecoder()
#: What ``json`` refuses to write, orjson must not write either: it hands these types to
#: ``default``, which (absent) makes it raise, and ``json`` then raises as it always did.
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def loads(data: bytes | str) -> Any:
    """What ``json.loads(data)`` returns."""
    if isinstance(data, str):
        return _DECODER.decode(data)  # psycopg hands bytes: text is not the hot path
    # Shorter than the run: most of the worker's and the sequencer's documents are.
    if len(data) < len(_LONG_RUN) or _LONG_RUN not in data.translate(_ZEROS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the standard library says what it always said
    return _DECODER.decode(data.decode("utf-8"))


def dumps_bytes(value: Any) -> bytes:
    """Compact JSON of ``value`` as UTF-8: orjson's, or ``json``'s for what orjson refuses."""
    try:
        return orjson.dumps(value, option=_STRICT)
    except TypeError:  # orjson.JSONEncodeError: a non-str key, an int beyond 64 bits, …
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def dumps(value: Any) -> str:
    """``dumps_bytes`` as text."""
    return dumps_bytes(value).decode("utf-8")
