"""Opaque, signed page cursors, bound to one organisation and one filter."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from storage.credentials import signing_keys
from storage.timefmt import from_micros, to_micros


class CursorRejected(ValueError):
    pass


def fingerprint(scope: dict[str, Any]) -> str:
    canonical = json.dumps(scope, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Cursors:
    def __init__(self, secret_keys: str | Sequence[str]) -> None:
        """``secret_keys``: the current key first, then former ones still accepted."""
        self._serializer = URLSafeSerializer(signing_keys(secret_keys), salt="auditlog.cursor.v1")

    def encode(self, org_id: str, scope: dict[str, Any], occurred_at: datetime, pk: int) -> str:
        return str(self._serializer.dumps([org_id, fingerprint(scope), to_micros(occurred_at), pk]))

    def decode(self, token: str, org_id: str, scope: dict[str, Any]) -> tuple[datetime, int]:
        try:
            owner, print_, micros, pk = self._serializer.loads(token)
        except (BadSignature, ValueError, TypeError):
            raise CursorRejected("the cursor is not one this service issued") from None
        if owner != org_id or print_ != fingerprint(scope):
            raise CursorRejected("the cursor belongs to another organisation or filter")
        return from_micros(int(micros)), int(pk)
