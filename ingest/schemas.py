"""The notification object, validated with marshmallow.

``NotificationSchema().load`` returns a normalised notification: timestamps as aware UTC
datetimes, relationship lists de-duplicated, ``null`` properties of a snapshot dropped
(a snapshot is the complete set: an absent key and a null one mean the same).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validates_schema,
)
from marshmallow.validate import Equal, Length, OneOf, Range

from ingest.body import MAX_EXACT_INTEGER
from storage.catalog import (
    ACTIONS,
    ACTOR_TYPES,
    ENTITY_TYPES,
    KINDS,
    ORIGINS,
    PARENTED_TYPES,
    RELATIONSHIPS,
)

MAX_ID = 200
MAX_PROPERTIES = 1000
MAX_PROPERTY_KEY = 200
MAX_PROPERTY_VALUE_BYTES = 16 * 1024
MAX_DETAILS_BYTES = 16 * 1024
MAX_RELATIONSHIP_IDS = 10_000
#: I-JSON's integer range (RFC 7493): ingest.body refuses larger integers while decoding.
MAX_SEQUENCE = MAX_EXACT_INTEGER

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


class Rfc3339DateTime(fields.Field):
    """An RFC 3339 timestamp with an offset, loaded as an aware UTC datetime (µs precision)."""

    default_error_messages = {"invalid": "Not an RFC 3339 timestamp with an offset."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or not RFC3339.match(value):
            raise self.make_error("invalid")
        text = value.upper().replace(" ", "T")
        if "." in text:
            # datetime keeps microseconds: drop further digits rather than reject them.
            head, _, rest = text.partition(".")
            digits = re.match(r"\d+", rest)
            assert digits is not None
            text = head + "." + digits.group(0)[:6].ljust(6, "0") + rest[digits.end() :]
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise self.make_error("invalid") from None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise self.make_error("invalid") from None


class UnscopedIP(fields.IP):
    """An IPv4 or IPv6 address without a zone index (``fe80::1%eth0``).

    A zone names a network interface of the sender's own host: it means nothing here, and
    PostgreSQL's ``inet`` (where the worker records the address) cannot hold one.
    """

    default_error_messages = {"zone": "An IP address with a zone index is not allowed."}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        address = super()._deserialize(value, attr, data, **kwargs)
        if getattr(address, "scope_id", None) is not None:
            raise self.make_error("zone")
        return address


def contains_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def compact_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


class EntityRefSchema(Schema):
    type = fields.String(required=True, validate=OneOf(ENTITY_TYPES))
    id = fields.String(required=True, validate=Length(min=1, max=MAX_ID))


class ParentRefSchema(Schema):
    type = fields.String(required=True, validate=Equal("app"))
    id = fields.String(required=True, validate=Length(min=1, max=MAX_ID))


class ActorSchema(Schema):
    type = fields.String(required=True, validate=OneOf(ACTOR_TYPES))
    id = fields.String(required=True, validate=Length(min=1, max=MAX_ID))
    name = fields.String(allow_none=True, validate=Length(max=200))
    email = fields.String(allow_none=True, validate=Length(max=320))


class ActionSchema(Schema):
    type = fields.String(required=True, validate=OneOf(tuple(ACTIONS)))
    details = fields.Dict(load_default=dict)


class NotificationSchema(Schema):
    """One notification object of a webhook body."""

    class Meta:
        unknown = RAISE

    #: Walk every string for U+0000 (see NulFreeNotificationSchema for when that is skipped).
    check_nul = True

    id = fields.String(validate=Length(min=1, max=MAX_ID))
    kind = fields.String(required=True, validate=OneOf(KINDS))
    entity = fields.Nested(EntityRefSchema, required=True)
    parent = fields.Nested(ParentRefSchema)
    occurred_at = Rfc3339DateTime(required=True)
    sequence = fields.Integer(strict=True, load_default=0, validate=Range(0, MAX_SEQUENCE))
    origin = fields.String(load_default="api", validate=OneOf(ORIGINS))
    actor = fields.Nested(ActorSchema)
    ip_address = UnscopedIP()
    # JSON object keys are always strings: no per-key field is needed (it costs per key).
    properties = fields.Dict()
    relationships = fields.Dict()
    event = fields.Nested(ActionSchema)

    @validates_schema(skip_on_field_errors=True)
    def check_fits_kind(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        kind = data["kind"]
        entity_type = data["entity"]["type"]

        if entity_type in PARENTED_TYPES and "parent" not in data:
            errors["parent"] = [f"Required for a {entity_type}."]
        if entity_type not in PARENTED_TYPES and "parent" in data:
            errors["parent"] = [f"A {entity_type} has no parent."]

        if kind == "event":
            action = data.get("event")
            if action is None:
                errors["event"] = ["Required when kind is event."]
            elif ACTIONS[action["type"]] != entity_type:
                errors["event"] = [f"{action['type']} is not an action of a {entity_type}."]
            elif compact_size(action["details"]) > MAX_DETAILS_BYTES:
                errors["event"] = [f"details is larger than {MAX_DETAILS_BYTES} bytes."]
        elif "event" in data:
            errors["event"] = ["Only allowed when kind is event."]

        if kind in ("delete", "event"):
            for name in ("properties", "relationships"):
                if name in data:
                    errors[name] = [f"Not allowed when kind is {kind}."]
        else:
            if "properties" in data:
                problems = self._property_problems(data["properties"])
                if problems:
                    errors["properties"] = problems
            if "relationships" in data:
                problems = self._relationship_problems(entity_type, kind, data["relationships"])
                if problems:
                    errors["relationships"] = problems

        if self.check_nul:
            for name, value in data.items():
                if name not in errors and contains_nul(value):
                    errors[name] = ["Strings may not contain U+0000."]
        if errors:
            raise ValidationError(errors)

    @staticmethod
    def _property_problems(properties: dict[str, Any]) -> list[str]:
        problems = []
        if len(properties) > MAX_PROPERTIES:
            problems.append(f"At most {MAX_PROPERTIES} properties.")
        for key, value in properties.items():
            if not key or len(key) > MAX_PROPERTY_KEY:
                problems.append(f"Property names are 1 to {MAX_PROPERTY_KEY} characters.")
                break
            too_big = (
                len(value) * 4 > MAX_PROPERTY_VALUE_BYTES
                and len(value.encode("utf-8")) > MAX_PROPERTY_VALUE_BYTES
                if isinstance(value, str)
                else isinstance(value, dict | list)
                and compact_size(value) > MAX_PROPERTY_VALUE_BYTES
            )
            if too_big:
                problems.append(f"{key}: values are at most {MAX_PROPERTY_VALUE_BYTES} bytes.")
                break
        return problems

    @staticmethod
    def _relationship_problems(entity_type: str, kind: str, relationships: dict[str, Any]) -> Any:
        known = RELATIONSHIPS[entity_type]
        problems: dict[str, list[str]] = {}
        for name, value in relationships.items():
            if name not in known:
                allowed = ", ".join(known) or "none"
                problems[name] = [f"Unknown relationship of a {entity_type} (allowed: {allowed})."]
                continue
            if name == "org":
                if not isinstance(value, bool):
                    problems[name] = ["Must be a boolean."]
                continue
            if kind == "patch":
                if not isinstance(value, dict) or set(value) - {"add", "remove"}:
                    problems[name] = ['Must be {"add": [ids], "remove": [ids]} in a patch.']
                    continue
                lists = [value.get("add", []), value.get("remove", [])]
            else:
                if not isinstance(value, list):
                    problems[name] = [f"Must be a list of ids in a {kind}."]
                    continue
                lists = [value]
            for ids in lists:
                if not isinstance(ids, list) or not all(
                    isinstance(item, str) and 0 < len(item) <= MAX_ID for item in ids
                ):
                    problems[name] = [f"Must be a list of ids of 1 to {MAX_ID} characters."]
                elif len(ids) > MAX_RELATIONSHIP_IDS:
                    problems[name] = [f"At most {MAX_RELATIONSHIP_IDS} ids."]
            if kind == "patch" and name not in problems:
                both = set(value.get("add", [])) & set(value.get("remove", []))
                if both:
                    problems[name] = [f"Both added and removed: {', '.join(sorted(both))}."]
        return problems

    @post_load
    def normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "ip_address" in data:
            data["ip_address"] = str(data["ip_address"])
        if data["kind"] in ("snapshot", "baseline") and "properties" in data:
            data["properties"] = {k: v for k, v in data["properties"].items() if v is not None}
        relationships = data.get("relationships")
        if relationships:
            for name, value in relationships.items():
                if isinstance(value, list):
                    relationships[name] = list(dict.fromkeys(value))
                elif isinstance(value, dict):
                    relationships[name] = {
                        "add": list(dict.fromkeys(value.get("add", []))),
                        "remove": list(dict.fromkeys(value.get("remove", []))),
                    }
        return data


class WebhookBodySchema(Schema):
    """``{"notifications": [...]}``: the batch envelope (its items are checked one by one)."""

    class Meta:
        unknown = RAISE

    notifications = fields.List(fields.Raw(), required=True, validate=Length(min=1, max=1000))


class NulFreeNotificationSchema(NotificationSchema):
    """For bodies known to hold no U+0000: JSON can only carry one as the escape
    ``\\u0000`` (raw control characters are invalid JSON), so a body without that escape
    needs no walk over every string."""

    check_nul = False


class NotificationBatchSchema(Schema):
    """The batch form of a webhook body (for the OpenAPI document)."""

    notifications = fields.List(
        fields.Nested(NotificationSchema), required=True, validate=Length(min=1, max=1000)
    )


class ReceiptSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=OneOf(["queued", "duplicate"]))


class WebhookAcceptedSchema(Schema):
    accepted = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    notifications = fields.List(fields.Nested(ReceiptSchema), required=True)


notification_schema = NotificationSchema()
nul_free_notification_schema = NulFreeNotificationSchema()
webhook_body_schema = WebhookBodySchema()
