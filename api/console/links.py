"""``POST /v1/console-sessions`` and ``auditlog console-link``: single-use links into the console.

The host platform embeds the console by minting a link for the person looking (scoped to one
record or one actor if it likes, with ``export`` / ``restore`` if it trusts them) and
opening it in a frame or a new tab. The link opens once, within five minutes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema
from marshmallow.validate import Length, OneOf

from api.auth import require_api_key, require_scope
from api.context import api_key, client_ip, org_id, request_id, services
from api.rest import Blueprint
from storage import console
from storage.catalog import ENTITY_TYPES
from storage.db import Database
from storage.settings import Settings

blp = Blueprint(
    "console_sessions", __name__, url_prefix="/v1", description="Links into the console"
)
blp.before_request(require_api_key)

MAX_ID = 200


class ScopedRecordSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=OneOf(ENTITY_TYPES))
    id = fields.String(required=True, validate=Length(min=1, max=MAX_ID))


class ConsoleScopeSchema(Schema):
    """Absent: the whole organisation; else exactly one of ``entity`` and ``actor_id``."""

    class Meta:
        unknown = RAISE

    entity = fields.Nested(ScopedRecordSchema)
    actor_id = fields.String(validate=Length(min=1, max=MAX_ID))

    @validates_schema
    def exactly_one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if len(data) != 1:
            raise ValidationError("Give exactly one of entity and actor_id.")


class ViewerSchema(Schema):
    class Meta:
        unknown = RAISE

    id = fields.String(required=True, validate=Length(min=1, max=MAX_ID))
    name = fields.String(allow_none=True, validate=Length(max=200))
    email = fields.String(allow_none=True, validate=Length(max=320))


class ConsoleSessionRequestSchema(Schema):
    """Anything but these fields is a 422, unknown ones included."""

    class Meta:
        unknown = RAISE

    unknown_is_invalid = True

    scope = fields.Nested(ConsoleScopeSchema)
    permissions = fields.List(fields.String(validate=OneOf(console.PERMISSIONS)), load_default=list)
    viewer = fields.Nested(ViewerSchema)

    @validates_schema
    def restore_needs_a_viewer(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "restore" in data.get("permissions", []) and "viewer" not in data:
            raise ValidationError("A viewer is required with the restore permission.", "viewer")


class ConsoleSessionSchema(Schema):
    url = fields.String(required=True)
    expires_at = fields.String(required=True)


console_session_request_schema = ConsoleSessionRequestSchema()


def mint_link(
    database: Database,
    settings: Settings,
    org: str,
    request_: dict[str, Any],
    base_url: str,
    performed_by: dict[str, Any] | None = None,
    ip_address: str | None = None,
    request_id: str | None = None,
    key_id: str | None = None,
) -> dict[str, str]:
    """A new link for an already validated request: ``{"url", "expires_at"}``."""
    with database.unit_of_work(write=True) as session:
        token, expires_at = console.create_link(
            session,
            settings.secret_keys,
            org,
            scope=request_.get("scope") or {},
            permissions=request_.get("permissions") or [],
            viewer=request_.get("viewer"),
            now=datetime.now(UTC),
            performed_by=performed_by,
            ip_address=ip_address,
            request_id=request_id,
            key_id=key_id,
        )
        session.commit()
    return {
        "url": f"{base_url.rstrip('/')}/console/enter/{token}",
        "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
    }


@blp.route("/console-sessions", methods=["POST"])
@blp.arguments(ConsoleSessionRequestSchema, required=False)
@blp.response(201, ConsoleSessionSchema)
@blp.errors(400, 401, 403, 422)
def create_console_session(body: dict[str, Any]) -> Any:
    """A single-use link (five minutes) that opens a console session for one viewer."""
    for permission in body.get("permissions") or []:
        require_scope(permission)  # a session cannot do more than the key that opened it
    runtime = services()
    base_url = runtime.settings.public_url or request.host_url
    link = mint_link(
        runtime.database,
        runtime.settings,
        org_id(),
        body,
        base_url,
        performed_by=api_key().performed_by(),
        ip_address=client_ip(),
        request_id=request_id(),
        key_id=api_key().key_id,
    )
    response = jsonify(link)
    response.status_code = 201
    return response
