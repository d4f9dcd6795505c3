"""``GET /v1/access-log``: who did what to the organisation's log itself, newest first."""

from __future__ import annotations

import re
from typing import Any

from flask import jsonify
from marshmallow import RAISE, Schema, fields
from marshmallow.validate import Length, Range
from werkzeug.exceptions import UnprocessableEntity

from api.auth import require_api_key
from api.context import org_id, services
from api.cursors import CursorRejected, Cursors
from api.errors import reject
from api.rest import Blueprint
from ingest.schemas import Rfc3339DateTime
from storage import access

blp = Blueprint(
    "access_log", __name__, url_prefix="/v1", description="Who did what to the log itself"
)
blp.before_request(require_api_key)


class ActionList(fields.Field):
    """A comma-separated list of access-log actions."""

    default_error_messages = {
        "invalid": "A comma-separated list of actions.",
        "unknown": "Unknown action: {action}.",
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> tuple[str, ...]:
        if not isinstance(value, str) or not value:
            raise self.make_error("invalid")
        actions = tuple(value.split(","))
        for action in actions:
            if action not in access.ACTIONS:
                raise self.make_error("unknown", action=action)
        return actions


ACTION = "|".join(re.escape(action) for action in access.ACTIONS)


class AccessLogQueryArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    action = ActionList(
        metadata={
            "type": "string",
            "description": "comma-separated actions (no spaces): " + ", ".join(access.ACTIONS),
            "pattern": f"^({ACTION})(,({ACTION}))*$",
            "example": "export.created,export.downloaded",
        }
    )
    since = Rfc3339DateTime(metadata={"type": "string", "format": "date-time"})
    until = Rfc3339DateTime(metadata={"type": "string", "format": "date-time"})
    limit = fields.Integer(load_default=50, validate=Range(1, 500))
    cursor = fields.String(validate=Length(min=1, max=1000))


class AccessEntrySchema(Schema):
    id = fields.String(required=True)
    occurred_at = fields.String(required=True, metadata={"format": "date-time"})
    action = fields.String(required=True, metadata={"enum": list(access.ACTIONS)})
    subject_id = fields.String(allow_none=True, required=True)
    performed_by = fields.Dict(required=True)
    ip_address = fields.String(allow_none=True, required=True)
    request_id = fields.String(allow_none=True, required=True)
    details = fields.Dict(required=True)


class AccessLogPageSchema(Schema):
    entries = fields.List(fields.Nested(AccessEntrySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


@blp.route("/access-log", methods=["GET"])
@blp.arguments(AccessLogQueryArgsSchema, location="query")
@blp.response(200, AccessLogPageSchema)
@blp.errors(400, 401, 403, 422)
def access_log(args: dict[str, Any]) -> Any:
    """Keys created and revoked, exports created and downloaded, console links and
    sessions, restores, source changes: newest first, paged by ``next_cursor``."""
    runtime = services()
    cursors = Cursors(runtime.settings.secret_keys)
    scope = {
        "access_log": True,
        "action": list(args.get("action", ())),
        "since": str(args.get("since")),
        "until": str(args.get("until")),
    }
    try:
        after = cursors.decode(args["cursor"], org_id(), scope) if "cursor" in args else None
    except CursorRejected as exc:
        reject(UnprocessableEntity, "invalid_cursor", str(exc), {"cursor": [str(exc)]})
    limit = args["limit"]
    with runtime.database.unit_of_work() as session:
        entries = access.page(
            session,
            org_id(),
            limit + 1,
            after=after,
            actions=tuple(args.get("action", ())),
            since=args.get("since"),
            until=args.get("until"),
        )
    next_cursor = None
    if len(entries) > limit:
        entries = entries[:limit]
        next_cursor = cursors.encode(org_id(), scope, entries[-1].occurred_at, entries[-1].id)
    return jsonify(entries=[access.document(entry) for entry in entries], next_cursor=next_cursor)
