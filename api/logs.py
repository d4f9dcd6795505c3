"""The read API: the log three ways, the catalog, records, restore, notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import jsonify
from sqlalchemy.orm import Session
from werkzeug.exceptions import Conflict, NotFound, UnprocessableEntity

from api.auth import require_api_key
from api.context import api_key, client_ip, org_id, request_id, services
from api.cursors import CursorRejected, Cursors
from api.errors import reject
from api.rest import Blueprint, event_links
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
from worker.restore import AccessContext, RecordDeleted, RestoreSuperseded, restore_property

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


def page_of_events(
    org: str, args: dict[str, Any], flt: EventFilter
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the log and the cursor of the next (None on the last page).

    Raises ``CursorRejected`` for a cursor that was altered or made for another page. The
    API and the console page through this one function, so a cursor means the same in both.
    """
    runtime = services()
    cursors = Cursors(runtime.settings.secret_keys)
    scope = flt.to_json()
    after = cursors.decode(args["cursor"], org, scope) if "cursor" in args else None
    limit = args["limit"]
    with runtime.database.statement_at_a_time() as session:  # one SELECT
        rows = queries.events_page(session, org, flt, limit + 1, after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(org, scope, rows[-1].occurred_at, rows[-1].id)
    return [queries.event_document(row) for row in rows], next_cursor


def log_page(args: dict[str, Any], flt: EventFilter) -> Any:
    try:
        events, next_cursor = page_of_events(org_id(), args, flt)
    except CursorRejected as exc:
        reject(UnprocessableEntity, "invalid_cursor", str(exc), {"cursor": [str(exc)]})
    return jsonify(events=events, next_cursor=next_cursor)


def state_of_record(
    session: Session, org: str, entity_type: str, entity_id: str, as_of: datetime | None
) -> dict[str, Any] | None:
    """``{"properties", "relationships", "deleted", "updated_at"}`` now or at ``as_of``;
    None before the record's first known state. The API and the console both show this."""
    row = queries.find_entity(session, org, entity_type, entity_id)
    if as_of is not None:
        log = queries.record_log(session, org, entity_type, entity_id, as_of)
        return state_as_of((entity_type, entity_id), row.baseline if row else None, log, as_of)
    if row is None or not row.known:
        return None
    return {
        "properties": row.properties,
        "relationships": queries.relationships_of(session, org, entity_type, entity_id),
        "deleted": row.deleted,
        "updated_at": row.updated_at,
    }


def known_type(entity_type: str) -> None:
    if entity_type not in ENTITY_TYPES:
        reject(NotFound, "not_found", f"no record type {entity_type!r}")


@blp.route("/events", methods=["GET"])
@blp.arguments(LogQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
@blp.errors(400, 401, 422)
@blp.doc(operationId="list_events", responses={"200": {"links": event_links("/events/0")}})
def list_events(args: dict[str, Any]) -> Any:
    """The aggregate log, newest first."""
    return log_page(args, event_filter(args))


# Ids may hold "/" (LDAP names, paths), so every id is a werkzeug ``path`` segment, and
# "a//b" or "a/b/" must not be merged or redirected away (``merge_slashes=False``); "%2F"
# arrives decoded, as "/". The routing rule: a record's path ending in "/history" is its
# history (GET) and one ending in "/restore" its restore (POST) — werkzeug prefers a rule's
# static suffix to a longer id — so what precedes the suffix is the id. The history of the
# record "x/history" is ".../x/history/history"; its state is the one thing that path cannot
# name (".../x/history" is the history of "x"). A GET of ".../x/restore" is the state of
# the record "x/restore". An id cannot start with "/" (the converter's one limit).
@blp.route("/entities/<entity_type>/<path:entity_id>/history", methods=["GET"], merge_slashes=False)
@blp.arguments(LogQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
@blp.errors(400, 401, 404, 422)
@blp.doc(operationId="record_history", responses={"200": {"links": event_links("/events/0")}})
def record_history(args: dict[str, Any], entity_type: str, entity_id: str) -> Any:
    """A record's history: events whose entity or any target is that record."""
    known_type(entity_type)
    return log_page(args, event_filter(args, records=((entity_type, entity_id),)))


@blp.route("/actors/<path:actor_id>/activity", methods=["GET"], merge_slashes=False)
@blp.arguments(LogQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
@blp.errors(400, 401, 422)
@blp.doc(operationId="actor_activity", responses={"200": {"links": event_links("/events/0")}})
def actor_activity(args: dict[str, Any], actor_id: str) -> Any:
    """What an actor did: events whose actor is that id."""
    return log_page(args, event_filter(args, actor_ids=(actor_id,)))


@blp.route("/event-types", methods=["GET"])
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, EventTypeSchema(many=True))
@blp.errors(400, 401)
@blp.doc(operationId="event_types")
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


@blp.route("/entities/<entity_type>/<path:entity_id>", methods=["GET"], merge_slashes=False)
@blp.arguments(AsOfQueryArgsSchema, location="query")
@blp.response(200, EntityStateSchema)
@blp.errors(400, 401, 404, 422)
@blp.doc(operationId="record_state")
def record_state(args: dict[str, Any], entity_type: str, entity_id: str) -> Any:
    """A record as it stands, or as it stood at ``as_of`` (rebuilt from the log)."""
    known_type(entity_type)
    with services().database.unit_of_work() as session:
        state = state_of_record(session, org_id(), entity_type, entity_id, args.get("as_of"))
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


@blp.route(
    "/entities/<entity_type>/<path:entity_id>/restore", methods=["POST"], merge_slashes=False
)
@blp.arguments(RestoreRequestSchema)
@blp.response(201, RestoreResultSchema)
@blp.alt_response(200, schema=RestoreResultSchema, description="the value is already current")
@blp.errors(400, 401, 404, 409, 422)
@blp.doc(operationId="restore")
def restore(body: dict[str, Any], entity_type: str, entity_id: str) -> Any:
    """Set a property back to the old value of one of the record's update events.

    201 with the event; 200 ``{"event": null}`` when the property already holds that value;
    409 ``restore_superseded`` when a change dated after now already set it (the restore,
    dated now, would lose to it); 422 ``record_deleted`` for a deleted record. The deleted
    and superseded checks are made in the write transaction; refused, nothing is recorded.
    """
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
    try:
        restored = restore_property(
            runtime.database,
            org_id=org_id(),
            record=record,
            parent_id=entity.parent_id,
            prop=event.property,
            value=event.old_value,
            restored_from=body["event_id"],
            actor=body["actor"],
            ip_address=client_ip(),
            now=datetime.now(UTC),
            performed_by={"key_id": api_key().key_id, "key_name": api_key().name},
            audit=AccessContext(performed_by=api_key().performed_by(), request_id=request_id()),
        )
    except RecordDeleted as exc:  # checked on the row the write locked
        reject(UnprocessableEntity, exc.code, str(exc))
    except RestoreSuperseded as exc:
        reject(Conflict, exc.code, f"{exc}; nothing was recorded")
    response = jsonify(event=restored)
    response.status_code = 200 if restored is None else 201
    return response


@blp.route(
    "/sources/<source_id>/notifications/<path:notification_id>",
    methods=["GET"],
    merge_slashes=False,
)
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, NotificationStatusSchema)
@blp.errors(400, 401, 404)
@blp.doc(operationId="notification_status")
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
