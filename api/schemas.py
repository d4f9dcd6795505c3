"""Request and response schemas of the read API, and so of its OpenAPI document."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema
from marshmallow.validate import Length, OneOf, Range

from ingest.schemas import ActorSchema, Rfc3339DateTime
from storage.catalog import ENTITY_TYPES, EVENT_TYPES_BY_CODE

#: What ``str.strip`` removes around each item of an event-type list (``str.isspace``).
_SPACE = (
    "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000]*"
)
#: One item: a code of the catalog, or ``<entity type>.*`` for every code of that type.
EVENT_TYPE_ITEM = "{space}({codes}|({prefixes})\\.\\*){space}".format(
    space=_SPACE,
    codes="|".join(re.escape(code) for code in sorted(EVENT_TYPES_BY_CODE)),
    prefixes="|".join(sorted({code.split(".")[0] for code in EVENT_TYPES_BY_CODE})),
)
EVENT_TYPE_LIST_PATTERN = f"^{EVENT_TYPE_ITEM}(,{EVENT_TYPE_ITEM})*$"

_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"({_OCTET}\.){{3}}{_OCTET}"
_H = "[0-9a-fA-F]{1,4}"
_IPV6 = (
    f"(({_H}:){{7}}{_H}|({_H}:){{1,7}}:|({_H}:){{1,6}}:{_H}|({_H}:){{1,5}}(:{_H}){{1,2}}"
    f"|({_H}:){{1,4}}(:{_H}){{1,3}}|({_H}:){{1,3}}(:{_H}){{1,4}}|({_H}:){{1,2}}(:{_H}){{1,5}}"
    f"|{_H}:(:{_H}){{1,6}}|:((:{_H}){{1,7}}|:))"
)
#: An address or a CIDR network, IPv4 (dotted, no leading zeros) or IPv6 (no zone index).
NETWORK_PATTERN = rf"^({_IPV4}(/(3[0-2]|[12]?[0-9]))?|{_IPV6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"


class EventTypeList(fields.Field):
    """``person.property_updated,app.*``: exact codes and ``prefix.*``, as a set of codes."""

    default_error_messages = {
        "invalid": "A comma-separated list of event codes or prefixes ending in .*.",
        "unknown": "Unknown event type: {code}.",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> frozenset[str]:
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            items = value
        else:
            raise self.make_error("invalid")
        codes: set[str] = set()
        for item in (item.strip() for item in items):
            if not item:
                raise self.make_error("invalid")
            if item.endswith(".*") and len(item) > 2:
                matched = {code for code in EVENT_TYPES_BY_CODE if code.startswith(item[:-1])}
            else:
                matched = {item} if item in EVENT_TYPES_BY_CODE else set()
            if not matched:
                raise self.make_error("unknown", code=item)
            codes |= matched
        return frozenset(codes)


class NetworkField(fields.Field):
    """An IPv4 or IPv6 address or CIDR network; an address is its own /32 or /128.

    A zone index (``fe80::1%eth0``) is refused as the notification's ``ip_address`` refuses
    it: no recorded address has one, and PostgreSQL's ``cidr`` cannot hold one.
    """

    default_error_messages = {
        "invalid": "Not an IP address or CIDR network.",
        "zone": "An IP address with a zone index is not allowed.",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise self.make_error("invalid") from None
        if getattr(network.network_address, "scope_id", None) is not None:
            raise self.make_error("zone")
        return network


class LogFiltersSchema(Schema):
    """The filters shared by the three log endpoints and exports."""

    class Meta:
        unknown = RAISE

    entity_type = fields.String(validate=OneOf(ENTITY_TYPES))
    entity_id = fields.String(validate=Length(min=1, max=200))
    actor_id = fields.String(validate=Length(min=1, max=200))
    event_type = EventTypeList(
        metadata={
            "type": "string",
            "pattern": EVENT_TYPE_LIST_PATTERN,
            "example": "person.*,app.created",
            "description": "Codes of the catalog, comma-separated; `<type>.*` for all of a type.",
        }
    )
    ip = NetworkField(
        metadata={"type": "string", "pattern": NETWORK_PATTERN, "example": "203.0.113.0/24"}
    )
    since = Rfc3339DateTime(metadata={"type": "string", "format": "date-time"})
    until = Rfc3339DateTime(metadata={"type": "string", "format": "date-time"})

    @validates_schema
    def check_record(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "entity_id" in data and "entity_type" not in data:
            raise ValidationError("entity_id needs entity_type.", "entity_id")


class LogQueryArgsSchema(LogFiltersSchema):
    limit = fields.Integer(load_default=50, validate=Range(1, 500))
    cursor = fields.String(validate=Length(min=1, max=1000))


class AsOfQueryArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    as_of = Rfc3339DateTime(metadata={"type": "string", "format": "date-time"})


class NoQueryArgsSchema(Schema):
    class Meta:
        unknown = RAISE


class RecordRefSchema(Schema):
    type = fields.String(required=True)
    id = fields.String(required=True)
    name = fields.String(allow_none=True, required=True)


class EventActorSchema(Schema):
    type = fields.String(required=True)
    id = fields.String(required=True)
    name = fields.String(allow_none=True, required=True)
    email = fields.String(allow_none=True, required=True)


class EventSchema(Schema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    label = fields.String(required=True)
    occurred_at = fields.String(required=True, metadata={"format": "date-time"})
    recorded_at = fields.String(required=True, metadata={"format": "date-time"})
    entity = fields.Nested(RecordRefSchema, required=True)
    targets = fields.List(fields.Nested(RecordRefSchema), required=True)
    property = fields.String(allow_none=True, required=True)
    old_value = fields.Raw(allow_none=True, required=True)
    new_value = fields.Raw(allow_none=True, required=True)
    actor = fields.Nested(EventActorSchema, required=True)
    ip_address = fields.String(allow_none=True, required=True)
    origin = fields.String(required=True)
    source_id = fields.String(allow_none=True, required=True)
    notification_id = fields.String(allow_none=True, required=True)
    details = fields.Dict(required=True)
    #: The event's place in its organisation's log (1, 2, 3 …), null until it is sequenced.
    seq = fields.Integer(allow_none=True, required=True)


class EventPageSchema(Schema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class EventTypeSchema(Schema):
    type = fields.String(required=True)
    label = fields.String(required=True)
    entity_type = fields.String(required=True)
    extension = fields.Boolean(required=True)


class EntityStateSchema(Schema):
    entity = fields.Nested(RecordRefSchema, required=True)
    properties = fields.Dict(required=True)
    relationships = fields.Dict(required=True)
    deleted = fields.Boolean(required=True)
    updated_at = fields.String(allow_none=True, required=True, metadata={"format": "date-time"})


class RestoreRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = fields.String(required=True, validate=Length(min=1, max=100))
    actor = fields.Nested(ActorSchema, required=True)


class RestoreResultSchema(Schema):
    event = fields.Nested(EventSchema, allow_none=True, required=True)


class NotificationStatusSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=OneOf(["queued", "processed", "failed"]))
    attempts = fields.Integer(required=True)
    error = fields.String(allow_none=True, required=True)
    event_ids = fields.List(fields.String(), required=True)


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)
