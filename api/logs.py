"""The read API (CONTRACT §5): the log three ways, the catalog, records, restore, notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import jsonify, request
from werkzeug.exceptions import NotFound, UnprocessableEntity

from api.auth import require_api_key
from api.context import org_id, services
from api.cursors import CursorRejected, Cursors
from api.errors import reject
from api.rest import Blueprint
from api.schemas import (
    AsOfQueryArgsSchema,
    EntityStateSchema,
    EventPageSchema,
    EventTypeSchema,
    LogQueryArgsSchema,
    NoQueryArgsSchema,
    NotificationStatusSchema,
    RestoreRequestSchema,
    RestoreResultSchema,
)
from storage import inbox, queries
from storage.catalog import ENTITY_TYPES, EVENT_TYPES, PROPERTY_EVENT_CODES
from storage.history import state_as_of, subject_of
from storage.models import Source
from storage.queries import EventFilter
from storage.timefmt import rfc3339
from worker.restore import restore_property

blp = Blueprint("logs", __name__, url_prefix="/v1", description="Audit log, records and restore")
blp.before_request(require_api_key)


def event_filter(
    args: dict[str, Any],
    records: tuple[tuple[str, str], ...] = (),
    actor_ids: tuple[str, ...] = (),
) -> EventFilter:
    """The filter of a request: the endpoint's own scope AND its query parameters."""
    if "entity_id" in args:
        records += ((args["entity_type"], args["entity_id"]),)
        entity_type = None
    else:
        entity_type = args.get("entity_type")
    if "actor_id" in args:
        actor_ids += (args["actor_id"],)
    return EventFilter(
        records=records,
        entity_type=entity_type,
        actor_ids=actor_ids,
        types=args.get("event_type"),
        network=args.get("ip"),
        since=args.get("since"),
        until=args.get("until"),
    )


def log_page(args: dict[str, Any], flt: EventFilter) -> Any:
    runtime = services()
    cursors = Cursors(runtime.settings.secret_key)
    scope = flt.to_json()
    after = None
    if "cursor" in args:
        try:
            after = cursors.decode(args["cursor"], org_id(), scope)
        except CursorRejected as exc:
            reject(UnprocessableEntity, "invalid_cursor", str(exc), {"cursor": [str(exc)]})
    limit = args["limit"]
    with runtime.database.unit_of_work() as session:
        rows = queries.events_page(session, org_id(), flt, limit + 1, after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(org_id(), scope, rows[-1].occurred_at, rows[-1].id)
    return jsonify(events=[queries.event_document(row) for row in rows], next_cursor=next_cursor)


def known_type(entity_type: str) -> None:
    if entity_type not in ENTITY_TYPES:
        reject(NotFound, "not_found", f"no record type {entity_type!r}")


@blp.route("/events", methods=["GET"])
@blp.arguments(LogQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
@blp.errors(400, 401, 422)
def list_events(args: dict[str, Any]) -> Any:
    """The aggregate log, newest first."""
    return log_page(args, event_filter(args))


@blp.route("/entities/<entity_type>/<entity_id>/history", methods=["GET"])
@blp.arguments(LogQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
@blp.errors(400, 401, 404, 422)
def record_history(args: dict[str, Any], entity_type: str, entity_id: str) -> Any:
    """A record's history: events whose entity or any target is that record."""
    known_type(entity_type)
    return log_page(args, event_filter(args, records=((entity_type, entity_id),)))


@blp.route("/actors/<actor_id>/activity", methods=["GET"])
@blp.arguments(LogQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
@blp.errors(400, 401, 422)
def actor_activity(args: dict[str, Any], actor_id: str) -> Any:
    """What an actor did: events whose actor is that id."""
    return log_page(args, event_filter(args, actor_ids=(actor_id,)))


@blp.route("/event-types", methods=["GET"])
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, EventTypeSchema(many=True))
@blp.errors(400, 401)
def event_types(args: dict[str, Any]) -> Any:
    """The event catalog."""
    return jsonify(
        [
            {
                "type": event_type.code,
                "label": event_type.label,
                "entity_type": event_type.entity_type,
                "extension": event_type.extension,
            }
            for event_type in EVENT_TYPES
        ]
    )


@blp.route("/entities/<entity_type>/<entity_id>", methods=["GET"])
@blp.arguments(AsOfQueryArgsSchema, location="query")
@blp.response(200, EntityStateSchema)
@blp.errors(400, 401, 404, 422)
def record_state(args: dict[str, Any], entity_type: str, entity_id: str) -> Any:
    """A record as it stands, or as it stood at ``as_of`` (rebuilt from the log)."""
    known_type(entity_type)
    with services().database.unit_of_work() as session:
        row = queries.find_entity(session, org_id(), entity_type, entity_id)
        if "as_of" in args:
            log = queries.record_log(session, org_id(), entity_type, entity_id, args["as_of"])
            state = state_as_of(
                (entity_type, entity_id), row.baseline if row else None, log, args["as_of"]
            )
        elif row is not None and row.known:
            state = {
                "properties": row.properties,
                "relationships": queries.relationships_of(
                    session, org_id(), entity_type, entity_id
                ),
                "deleted": row.deleted,
                "updated_at": row.updated_at,
            }
        else:
            state = None
    if state is None:
        reject(NotFound, "not_found", "no such record (at that time)")
    name = state["properties"].get("name")
    return jsonify(
        entity={
            "type": entity_type,
            "id": entity_id,
            "name": name if isinstance(name, str) else None,
        },
        properties=state["properties"],
        relationships=state["relationships"],
        deleted=state["deleted"],
        updated_at=rfc3339(state["updated_at"]) if state["updated_at"] else None,
    )


@blp.route("/entities/<entity_type>/<entity_id>/restore", methods=["POST"])
@blp.arguments(RestoreRequestSchema)
@blp.response(201, RestoreResultSchema)
@blp.alt_response(200, schema=RestoreResultSchema, description="the value is already current")
@blp.errors(400, 401, 404, 422)
def restore(body: dict[str, Any], entity_type: str, entity_id: str) -> Any:
    """Set a property back to the old value of one of the record's update events."""
    known_type(entity_type)
    runtime = services()
    record = (entity_type, entity_id)
    pk = queries.event_pk(body["event_id"])
    with runtime.database.unit_of_work() as session:
        event = queries.find_event(session, org_id(), pk) if pk is not None else None
        entity = queries.find_entity(session, org_id(), entity_type, entity_id)
    if entity is None or not entity.clocks.get("exists"):
        reject(NotFound, "not_found", "no such record")
    if (
        event is None
        or event.type not in PROPERTY_EVENT_CODES
        or subject_of(event) != record
        or event.property is None
    ):
        reject(
            UnprocessableEntity,
            "not_restorable",
            "the event is not a property update of this record",
            {"event_id": ["Not a property update of this record."]},
        )
    if entity.deleted:
        reject(UnprocessableEntity, "record_deleted", "the record is deleted; nothing to restore")
    restored = restore_property(
        runtime.database,
        org_id=org_id(),
        record=record,
        parent_id=entity.parent_id,
        prop=event.property,
        value=event.old_value,
        restored_from=body["event_id"],
        actor=body["actor"],
        ip_address=request.remote_addr,
        now=datetime.now(UTC),
    )
    response = jsonify(event=restored)
    response.status_code = 200 if restored is None else 201
    return response


@blp.route("/sources/<source_id>/notifications/<path:notification_id>", methods=["GET"])
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, NotificationStatusSchema)
@blp.errors(400, 401, 404)
def notification_status(args: dict[str, Any], source_id: str, notification_id: str) -> Any:
    """Where a notification is: queued, processed (with its events) or failed."""
    with services().database.unit_of_work() as session:
        source = session.get(Source, source_id)
        found = (
            inbox.find_notification(session, org_id(), source_id, notification_id)
            if source is not None and source.org_id == org_id()
            else None
        )
        if found is None:
            reject(NotFound, "not_found", "no such notification")
        event_ids = inbox.event_ids_of(session, found.pk)
    return jsonify(
        id=found.external_id,
        status=found.status,
        attempts=found.attempts,
        error=found.error,
        event_ids=[queries.public_event_id(pk) for pk in event_ids],
    )
