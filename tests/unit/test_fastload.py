"""The fast load (``ingest.fastload``) says exactly what marshmallow says, or defers to it.

Over generated notifications, each valid or broken in a few places, ``load_valid`` must
return what ``NotificationSchema.load`` returns whenever marshmallow accepts the
notification, and None whenever marshmallow refuses it: the schema of record decides.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from ingest.fastload import load_valid
from ingest.schemas import (
    MAX_ID,
    MAX_SEQUENCE,
    notification_schema,
    nul_free_notification_schema,
)
from storage.catalog import ACTIONS, ACTOR_TYPES, ENTITY_TYPES, KINDS, ORIGINS, RELATIONSHIPS
from tests.factories import notification, title_change

JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
IDS = st.sampled_from([True] * 4 + [False]).flatmap(
    lambda plain: (
        st.text(min_size=1, max_size=12)
        if plain
        else st.sampled_from(["", "x" * MAX_ID, "x" * (MAX_ID + 1), "a\x00b"])
    )
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
TIMESTAMPS = st.sampled_from([True] * 3 + [False]).flatmap(
    lambda listed: (
        st.sampled_from(
            [
                "2026-11-25T10:00:00Z",
                "2026-11-25t10:00:00z",
                "2026-11-25 10:00:00+02:00",
                "2026-11-25T10:00:00.123456789-05:30",
                "2026-11-25T10:00:00.1Z",
                "0001-01-01T00:00:00+01:00",
                "9999-12-31T23:59:59-01:00",
                "2026-02-30T10:00:00Z",
                "2026-11-25T10:00:00",
                "2026-11-25",
            ]
        )
        if listed
        else st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat())
    )
)
IPS = st.sampled_from(
    ["203.0.113.7", "2001:db8::1", "::ffff:10.0.0.1", "fe80::1%eth0", "300.1.1.1", "", "x"]
)


#: True about one time in ten. Hypothesis favours a strategy's first, simplest values, so
#: the rare outcome is the last one.
RARELY = st.sampled_from([False] * 9 + [True])


def maybe(strategy: st.SearchStrategy[Any], junk_weight: int = 1) -> st.SearchStrategy[Any]:
    """Mostly the strategy's values, sometimes something of the wrong kind. (Not ``one_of``:
    it flattens JUNK's own branches beside the strategy, which would then be the rare one.)"""
    choices = [True] * (10 - junk_weight) + [False] * junk_weight
    return st.sampled_from(choices).flatmap(lambda valid: strategy if valid else JUNK)


@st.composite
def references(draw: Any, types: Any) -> Any:
    reference = {"type": draw(maybe(st.sampled_from(types))), "id": draw(maybe(IDS))}
    if draw(RARELY):
        reference.pop(draw(st.sampled_from(["type", "id"])))
    if draw(RARELY):
        reference["extra"] = 1
    return reference


@st.composite
def relationships(draw: Any, entity_type: str, kind: str) -> Any:
    names = [*RELATIONSHIPS.get(entity_type, {}), "bogus"]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
    ids = st.lists(maybe(IDS), max_size=4)
    value: st.SearchStrategy[Any]
    if kind == "patch":
        value = st.fixed_dictionaries({}, optional={"add": ids, "remove": ids, "other": ids})
    else:
        value = ids
    return {name: draw(maybe(st.booleans() if name == "org" else value)) for name in chosen}


@st.composite
def notifications(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    entity = draw(maybe(references(ENTITY_TYPES), junk_weight=0))
    entity_type = entity.get("type") if isinstance(entity.get("type"), str) else "person"
    item: dict[str, Any] = {
        "kind": draw(maybe(st.just(kind))),
        "entity": draw(maybe(st.just(entity))),
        "occurred_at": draw(maybe(TIMESTAMPS)),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "id": maybe(IDS),
        "parent": maybe(references(("app", "person"))),
        "sequence": maybe(st.sampled_from([0, 1, 7, MAX_SEQUENCE, MAX_SEQUENCE + 1, -1])),
        "origin": maybe(st.sampled_from(ORIGINS)),
        "actor": maybe(
            st.fixed_dictionaries(
                {"type": maybe(st.sampled_from(ACTOR_TYPES)), "id": maybe(IDS)},
                optional={
                    "name": maybe(st.one_of(st.none(), st.text(max_size=3), st.just("n" * 201))),
                    "email": maybe(st.one_of(st.none(), st.just("a@b.c"), st.just("e" * 321))),
                    "extra": JUNK,
                },
            )
        ),
        "ip_address": maybe(IPS),
        "properties": maybe(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=4)),
        "relationships": maybe(relationships(entity_type, kind)),
        "event": maybe(
            st.fixed_dictionaries(
                {"type": maybe(st.sampled_from(sorted(ACTIONS)))},
                optional={"details": maybe(st.dictionaries(st.text(max_size=3), JSON_VALUES))},
            )
        ),
        "unknown_field": JUNK,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=6)):
        if name != "unknown_field" or draw(RARELY):
            item[name] = draw(optional[name])
    if entity_type in ("license", "subscription") and not draw(RARELY):
        item.setdefault("parent", {"type": "app", "id": "app-1"})
    if kind == "event" and not draw(RARELY):
        action = next((a for a, t in ACTIONS.items() if t == entity_type), "app.file_uploaded")
        item.setdefault("event", {"type": action, "details": {"size": 1}})
    for name in ("kind", "entity", "occurred_at"):
        if draw(RARELY) and draw(RARELY):
            item.pop(name)
    return item


def marshmallow_load(schema: Any, item: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return schema.load(copy.deepcopy(item))
    except ValidationError:
        return None


@settings(max_examples=max(1000, settings().max_examples))
@given(notifications())
@example(notification())
@example(title_change()[1])
@example(notification("license", parent={"type": "app", "id": "a1"}))
@example(notification(kind="patch", relationships={"apps": {"add": ["a"], "remove": ["a"]}}))
# Each boundary, just inside and just outside.
@example(notification(sequence=MAX_SEQUENCE))
@example(notification(sequence=MAX_SEQUENCE + 1))
@example(notification(sequence=True))
@example(notification(id="x" * MAX_ID))
@example(notification(id="x" * (MAX_ID + 1)))
@example(notification(entity={"type": "person", "id": ""}))
@example(notification(actor={"type": "user", "id": "u", "name": "n" * 200, "email": None}))
@example(notification(actor={"type": "user", "id": "u", "name": "n" * 201}))
@example(notification(actor={"type": "user", "id": "u", "email": "e" * 321}))
@example(notification(ip_address="fe80::1%eth0"))
@example(notification(origin="elsewhere"))
@example(notification(event={"type": "app.file_uploaded", "details": None}))
@example(notification(occurred_at="9999-12-31T23:59:59-01:00"))
def test_the_fast_load_agrees_with_marshmallow(item: dict[str, Any]) -> None:
    for schema in (notification_schema, nul_free_notification_schema):
        expected = marshmallow_load(schema, item)
        given_item = copy.deepcopy(item)
        fast = load_valid(schema, given_item)
        assert fast == expected
        assert given_item == item  # the input is left as it came
        # The same keys in the same order, and values of the same types, all the way down.
        assert shape(fast) == shape(expected)


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value)


def test_the_notifications_of_the_tests_take_the_fast_path() -> None:
    items = [
        *title_change(),
        notification(
            "app",
            kind="event",
            event={"type": "app.file_uploaded", "details": {"name": "a.pdf"}},
            actor={"type": "user", "id": "u1", "name": "Ada", "email": None},
            ip_address="2001:db8::1",
            origin="workflow",
            sequence=3,
        ),
        notification(kind="delete", properties=None) | {"relationships": None},
    ]
    items[-1].pop("properties")
    items[-1].pop("relationships")
    for item in items:
        assert load_valid(notification_schema, item) == notification_schema.load(item)
