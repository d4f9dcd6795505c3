"""How the console shows values, times and the catalog: small pure functions for the templates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from storage import catalog
from storage.catalog import ENTITY_TYPES, EVENT_TYPES

#: Values longer than this are shortened in lists, with a way to see them whole.
SHORT_VALUE = 60

TYPE_NAMES = {
    "app": "App",
    "person": "Person",
    "team": "Team",
    "device": "Device",
    "license": "License",
    "subscription": "Subscription",
}

#: Codes whose ``new_value`` is the record's initial properties.
CREATED_CODES = frozenset(catalog.DEFAULT_CREATED.values()) | {
    code for variants in catalog.CREATED_CODES.values() for code in variants.values()
}

#: The aggregate log's tabs: (label, entity_type or None).
TABS = (
    ("All", None),
    ("Apps", "app"),
    ("People", "person"),
    ("Teams", "team"),
    ("Devices", "device"),
)


def value_text(value: Any) -> str:
    """A property value as a person reads it: strings as themselves, the rest as JSON."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def value_pretty(value: Any) -> str:
    """The whole value, JSON indented when it is an object or a list."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, indent=2)
    return value_text(value)


def is_long(value: Any) -> bool:
    return isinstance(value, dict | list) or len(value_text(value)) > SHORT_VALUE


def shortened(value: Any) -> str:
    text = " ".join(value_text(value).split())
    return text if len(text) <= SHORT_VALUE else text[: SHORT_VALUE - 1] + "…"


def utc_text(moment: str | datetime | None) -> str:
    """``2026-11-25 10:00:00 UTC`` from an RFC 3339 string or an aware datetime."""
    if moment is None:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + " UTC"


def preset_since(hours: int, now: datetime | None = None) -> str:
    """The ``since`` of a quick range: that many hours before now, to the second."""
    moment = (now or datetime.now(UTC)) - timedelta(hours=hours)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def catalog_groups() -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
    """The event catalog grouped by entity type: (type, group label, [(code, label)])."""
    for entity_type in ENTITY_TYPES:
        codes = [(t.code, t.label) for t in EVENT_TYPES if t.entity_type == entity_type]
        if codes:
            yield entity_type, TYPE_NAMES[entity_type], codes


def display_name(ref: dict[str, Any]) -> str:
    """A record's name, or its id when it never had one."""
    name = ref.get("name")
    return str(name) if name not in (None, "") else str(ref.get("id"))
