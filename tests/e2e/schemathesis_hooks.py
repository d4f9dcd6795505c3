"""Hooks of the schemathesis run against the served document (``SCHEMATHESIS_HOOKS``).

A page cursor is opaque and signed: only a ``next_cursor`` the service issued is valid,
and any other string is refused (422 ``invalid_cursor``), which no schema can describe.
Generated requests therefore page from the start, in every phase; paging itself is covered
by the read API's tests.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
