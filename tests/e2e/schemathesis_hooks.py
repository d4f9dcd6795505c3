"""Hooks of the schemathesis run against the served document (``SCHEMATHESIS_HOOKS``).

A page cursor is opaque and signed: only a ``next_cursor`` the service issued is valid,
and any other string is refused (422 ``invalid_cursor``), which no schema can describe.
A generated cursor that fits the document (1 to 1000 characters) is therefore dropped, in
every phase, and the request pages from the start; one that does not fit is kept, so the
server must still refuse it. Paging itself is covered by the read API's tests.
"""

from __future__ import annotations

from typing import Any

import schemathesis

#: The longest cursor the document allows (``LogQueryArgsSchema.cursor``).
MAX_CURSOR = 1000


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    if isinstance(case.query, dict):
        cursor = case.query.get("cursor")
        if isinstance(cursor, str) and 1 <= len(cursor) <= MAX_CURSOR:
            del case.query["cursor"]
