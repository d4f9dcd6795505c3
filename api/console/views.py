"""The console's pages: the log, a record, an actor, an event, rewind and export.

Server-rendered with Jinja; htmx (vendored) only follows new events and an export's progress,
so every page reads and works without JavaScript. Filters live in the URL with the read
API's names and go through the API's own schema and query functions, so a filter, a cursor
and an error message mean the same thing here as there.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from api.console import access, present
from api.console.access import Viewer, viewer
from api.context import client_ip, request_id, services
from api.cursors import CursorRejected
from api.exports import file_response, note_download, queue_export
from api.logs import event_filter, page_of_events, state_of_record
from api.schemas import AsOfQueryArgsSchema, LogQueryArgsSchema
from storage import console, exports, merkle, queries, tlog
from storage.canonical import event_leaf
from storage.catalog import ENTITY_TYPES, PROPERTY_EVENT_CODES, RELATIONSHIPS
from storage.history import subject_of
from storage.queries import EventFilter
from storage.timefmt import rfc3339
from worker.restore import AccessContext, RestoreRefused, restore_property

blueprint = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)

#: URL parameters of the console itself; every other one is a filter of the read API.
OWN_PARAMETERS = ("live", "tab", "as_of", "fragment")
#: Exports a session remembers having started (the only ones it may open).
REMEMBERED_EXPORTS = 20
OPEN_ENDPOINTS = ("console.enter", "console.static")


# -- the session ------------------------------------------------------------------------


@blueprint.before_request
def require_session() -> Any:
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    found = access.current_viewer()
    if found is None:
        return render_template("console/signed_out.html"), 401
    if found.key_id is not None:
        with services().database.unit_of_work() as db:
            live = console.key_is_live(db, found.key_id)
        if not live:  # revoking a key ends the sessions its links opened
            session.clear()
            return render_template("console/signed_out.html"), 401
    g.console_viewer = found
    return None


@blueprint.after_request
def security_headers(response: Response) -> Response:
    """No inline script, no framing but by ``CONSOLE_FRAME_ANCESTORS``, no referrer leaks."""
    ancestors = services().settings.console_frame_ancestors
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.errorhandler(HTTPException)
def error_page(error: HTTPException) -> Any:
    if isinstance(error, RequestRedirect):
        return error
    return (
        render_template("console/error.html", error=error, viewer=g.get("console_viewer")),
        error.code or 500,
    )


@blueprint.route("/enter/<token>")
def enter(token: str) -> Any:
    """Open a link once: start the session and go to the scope's page (the token stays here)."""
    runtime = services()
    try:
        with runtime.database.unit_of_work(write=True) as db:
            grant = console.open_link(
                db,
                runtime.settings.secret_keys,
                token,
                datetime.now(UTC),
                ip_address=client_ip(),
                request_id=request_id(),
            )
            db.commit()
    except console.LinkRejected as exc:
        page = render_template("console/link_rejected.html", reason=str(exc))
        return page, 403, {"Referrer-Policy": "no-referrer"}
    access.start_session(grant)
    g.console_viewer = access.current_viewer()
    endpoint, values = viewer().home
    return redirect(url_for(endpoint, **values), 303), {"Referrer-Policy": "no-referrer"}


@blueprint.app_template_global()
def can_see_record(entity_type: str, entity_id: str) -> bool:
    found: Viewer | None = g.get("console_viewer")
    return found is not None and found.sees_record(entity_type, entity_id)


@blueprint.app_template_global()
def can_see_actor(actor_id: str | None) -> bool:
    found: Viewer | None = g.get("console_viewer")
    return found is not None and found.sees_actor(actor_id)


@blueprint.app_template_global()
def rewindable(event: dict[str, Any]) -> bool:
    """Whether a restore would accept this event (and the session may restore)."""
    found: Viewer | None = g.get("console_viewer")
    return (
        found is not None
        and found.may("restore")
        and event["type"] in PROPERTY_EVENT_CODES
        and event["property"] is not None
    )


@blueprint.app_template_global()
def this_page() -> str:
    """This page's path, encoded again from its route (ids may hold ``?``, ``#`` or ``%``)."""
    assert request.endpoint is not None
    return url_for(request.endpoint, **(request.view_args or {}))


@blueprint.app_template_global()
def this_view() -> str:
    """This page's path and query, as the export form names the view it exports."""
    query = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "fragment"])
    return this_page() + (f"?{query}" if query else "")


@blueprint.app_template_global()
def url_with(**changes: Any) -> str:
    """This page's URL with some parameters changed (None removes one); paging restarts."""
    query = {key: value for key, value in request.args.items() if key != "cursor"}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return this_page() + ("?" + urlencode(query) if query else "")


@blueprint.app_context_processor
def template_helpers() -> dict[str, Any]:
    return {
        "present": present,
        "csrf_field": access.CSRF_FIELD,
        "viewer": g.get("console_viewer"),
        "preset_since": present.preset_since,
    }


# -- filters ----------------------------------------------------------------------------


class Listing:
    """One page of events under the URL's filters, or the messages that refused them."""

    def __init__(self, records: tuple[tuple[str, str], ...], actor_ids: tuple[str, ...]) -> None:
        self.raw = {
            key: value
            for key, value in request.args.items()
            if key not in OWN_PARAMETERS and value.strip()
        }
        self.errors: dict[str, list[str]] = {}
        self.events: list[dict[str, Any]] = []
        self.next_cursor: str | None = None
        self.filter: EventFilter | None = None
        try:
            args = LogQueryArgsSchema().load(self.raw)
        except ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {"": exc.messages}
            self.errors = {key: _texts(value) for key, value in messages.items()}
            return
        self.filter = event_filter(args, records=records, actor_ids=actor_ids)
        try:
            self.events, self.next_cursor = page_of_events(viewer().org_id, args, self.filter)
        except CursorRejected as exc:
            self.errors = {"cursor": [str(exc)]}

    @property
    def status(self) -> int:
        return 422 if self.errors else 200

    def older_url(self) -> str | None:
        if self.next_cursor is None:
            return None
        query = {k: v for k, v in request.args.items() if k not in ("live", "fragment")}
        query["cursor"] = self.next_cursor
        return f"{this_page()}?{urlencode(query)}"

    def filters_echo(self) -> dict[str, Any]:
        return {k: v for k, v in self.raw.items() if k not in ("cursor", "limit")}


def _texts(messages: Any) -> list[str]:
    if isinstance(messages, dict):
        return [text for value in messages.values() for text in _texts(value)]
    if isinstance(messages, list):
        return [text for value in messages for text in _texts(value)]
    return [str(messages)]


def render_listing(template: str, listing: Listing, **context: Any) -> Any:
    """The page, or only its list of events when htmx asks for it (following new events)."""
    if request.args.get("fragment") == "events":
        return render_template("console/_events.html", listing=listing, **context)
    return render_template(template, listing=listing, **context), listing.status


def _known_type(entity_type: str) -> None:
    if entity_type not in ENTITY_TYPES:
        abort(404)


def scope_of_view(endpoint: str, view_args: dict[str, Any], tab: str | None) -> Any:
    """(records, actor_ids) of a list page: what the page itself narrows the log to."""
    current = viewer()
    if endpoint == "console.log":
        if not current.whole_organisation:
            abort(404)
        return (), ()
    if endpoint == "console.record":
        entity_type, entity_id = view_args["entity_type"], view_args["entity_id"]
        _known_type(entity_type)
        if not current.sees_record(entity_type, entity_id):
            abort(404)
        if entity_type == "person" and tab == "activity":
            # What the person did concerns other records: not part of a record's scope.
            if not current.whole_organisation:
                abort(404)
            return (), (entity_id,)
        return ((entity_type, entity_id),), ()
    if endpoint == "console.actor":
        if not current.sees_actor(view_args["actor_id"]):
            abort(404)
        return (), (view_args["actor_id"],)
    abort(404)


# -- pages ------------------------------------------------------------------------------


@blueprint.route("/")
def log() -> Any:
    """The aggregate log, with tabs by entity type."""
    records, actor_ids = scope_of_view("console.log", {}, None)
    listing = Listing(records, actor_ids)
    return render_listing("console/log.html", listing, tabs=present.TABS)


@blueprint.route("/entities/<entity_type>/<path:entity_id>")
def record(entity_type: str, entity_id: str) -> Any:
    """A record: its state (now, or as of an instant), its History and a person's Activity."""
    tab = request.args.get("tab", "history")
    if tab not in ("history", "activity") or (tab == "activity" and entity_type != "person"):
        abort(404)
    records, actor_ids = scope_of_view(
        "console.record", {"entity_type": entity_type, "entity_id": entity_id}, tab
    )
    as_of, as_of_errors = None, []
    raw_as_of = request.args.get("as_of", "").strip()
    if raw_as_of:
        try:
            as_of = AsOfQueryArgsSchema().load({"as_of": raw_as_of})["as_of"]
        except ValidationError as exc:
            as_of_errors = _texts(exc.messages)
    org = viewer().org_id
    with services().database.unit_of_work() as db:
        row = queries.find_entity(db, org, entity_type, entity_id)
        state = None if as_of_errors else state_of_record(db, org, entity_type, entity_id, as_of)
        current = state if as_of is None else state_of_record(db, org, entity_type, entity_id, None)
        related = related_records(db, org, entity_type, state)
    listing = Listing(records, actor_ids)
    if row is None and not listing.events and not listing.errors:
        abort(404)
    baseline_at = None
    if row is not None and row.baseline:
        baseline_at = datetime.fromtimestamp(row.baseline["clock"][0] / 1_000_000, UTC)
    relationships = RELATIONSHIPS[entity_type]
    name = (current or state or {}).get("properties", {}).get("name")
    return render_listing(
        "console/record.html",
        listing,
        entity_type=entity_type,
        entity_id=entity_id,
        name=name if isinstance(name, str) and name else None,
        state=state,
        current=current,
        as_of=as_of,
        raw_as_of=raw_as_of,
        as_of_errors=as_of_errors,
        baseline_at=baseline_at,
        relationships=relationships,
        related=related,
        tab=tab,
    )


#: Related records listed by name on a record's page; the rest are counted.
RELATED_SHOWN = 100


def related_records(
    db: Any, org: str, entity_type: str, state: dict[str, Any] | None
) -> dict[str, tuple[list[dict[str, Any]], int]]:
    """Each list relationship's first records as references with names, and how many more."""
    found: dict[str, tuple[list[dict[str, Any]], int]] = {}
    for rel_name, relationship in RELATIONSHIPS[entity_type].items():
        ids = (state or {}).get("relationships", {}).get(rel_name)
        if relationship.other is None or not ids:
            continue  # ``org`` is a flag, not a list of records
        shown = ids[:RELATED_SHOWN]
        names = queries.names_of(db, org, relationship.other, shown)
        refs = [{"type": relationship.other, "id": i, "name": names.get(i)} for i in shown]
        found[rel_name] = (refs, len(ids) - len(shown))
    return found


@blueprint.route("/actors/<path:actor_id>")
def actor(actor_id: str) -> Any:
    """What one actor did."""
    records, actor_ids = scope_of_view("console.actor", {"actor_id": actor_id}, None)
    listing = Listing(records, actor_ids)
    known = next((e["actor"] for e in listing.events if e["actor"]["id"] == actor_id), None)
    return render_listing("console/actor.html", listing, actor_id=actor_id, actor=known)


def _visible_event(event_id: str) -> tuple[Any, dict[str, Any]]:
    """The row and document of an event this session may see; else 404."""
    pk = queries.event_pk(event_id)
    if pk is None:
        abort(404)
    with services().database.unit_of_work() as db:
        row = queries.find_event(db, viewer().org_id, pk)
    if row is None:
        abort(404)
    document = queries.event_document(row)
    if not viewer().sees_event(document) and document["id"] not in session.get("restored", []):
        abort(404)
    return row, document


@blueprint.route("/events/<event_id>")
def event(event_id: str) -> Any:
    """One event, every field, and its JSON."""
    _, document = _visible_event(event_id)
    return render_template(
        "console/event.html",
        event=document,
        proof=inclusion_of(document),
        restored=request.args.get("restored") == "1",
    )


def inclusion_of(document: dict[str, Any]) -> dict[str, Any] | None:
    """The event's inclusion in the latest signed checkpoint, checked here and now.

    None while the event has no seq yet or no checkpoint covers it. The proof is verified
    against the checkpoint's root from the leaf recomputed from the event as shown, so the
    page says "verified" only if what it shows is what was signed.
    """
    seq = document.get("seq")
    if seq is None:
        return None
    org = viewer().org_id
    with services().database.unit_of_work() as db:
        checkpoint = tlog.latest_checkpoint(db, org)
        if checkpoint is None or checkpoint.tree_size < seq:
            return None
        hashes = tlog.inclusion_proof(db, org, seq - 1, checkpoint.tree_size)
    leaf = merkle.leaf_hash(event_leaf(document))
    return {
        "checkpoint": checkpoint,
        "hashes": [base64.b64encode(h).decode() for h in hashes],
        "verified": merkle.verify_inclusion(
            seq - 1, checkpoint.tree_size, leaf, hashes, checkpoint.root_hash
        ),
    }


# -- rewind -----------------------------------------------------------------------------


@blueprint.route("/events/<event_id>/rewind", methods=["GET", "POST"])
def rewind(event_id: str) -> Any:
    """Confirm, then restore, the value a property had before this event."""
    if not viewer().may("restore"):
        abort(403, description="This session may not restore values.")
    row, document = _visible_event(event_id)
    if not rewindable(document):
        abort(404)
    entity_type, entity_id = subject_of(row)
    org = viewer().org_id
    with services().database.unit_of_work() as db:
        entity = queries.find_entity(db, org, entity_type, entity_id)
        current = state_of_record(db, org, entity_type, entity_id, None)
    refusal, status = None, 200
    if current is None or entity is None:
        refusal, status = "This record has no known state to restore into.", 409
    elif current["deleted"]:
        refusal, status = "The record is deleted: a restore would bring it back.", 422
    if request.method == "POST" and refusal is None:
        access.check_csrf()
        person = viewer().viewer or {}
        try:
            restored = restore_property(
                services().database,
                org_id=org,
                record=(entity_type, entity_id),
                parent_id=entity.parent_id if entity else None,
                prop=document["property"],
                value=document["old_value"],
                restored_from=document["id"],
                actor={
                    "type": "user",
                    "id": person.get("id"),
                    "name": person.get("name"),
                    "email": person.get("email"),
                },
                ip_address=client_ip(),
                now=datetime.now(UTC),
                audit=AccessContext(performed_by=console_performer(), request_id=request_id()),
            )
        except RestoreRefused as exc:
            refusal, status = (
                f"{exc}; nothing was recorded.",
                (422 if exc.code == "record_deleted" else 409),
            )
        else:
            if restored is not None:
                # Its actor is the viewer, which an actor-scoped session may not otherwise see.
                remembered = [restored["id"]] + list(session.get("restored", []))
                session["restored"] = remembered[:REMEMBERED_EXPORTS]
                return redirect(
                    url_for("console.event", event_id=restored["id"], restored="1"), 303
                )
            refusal = "The property already holds that value; nothing was recorded."
    elif request.method == "POST":
        access.check_csrf()
    properties = (current or {}).get("properties", {})
    return (
        render_template(
            "console/rewind.html",
            event=document,
            record=(entity_type, entity_id),
            has_current=document["property"] in properties,
            current_value=properties.get(document["property"]),
            refusal=refusal,
        ),
        status,
    )


# -- exports ----------------------------------------------------------------------------


def _view_of(url: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The list page a relative console URL names: (endpoint, view arguments, query)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        abort(400, description="The export names a page outside the console.")
    adapter = current_app.url_map.bind("localhost")
    try:
        endpoint, view_args = adapter.match(unquote(parts.path), method="GET")
    except HTTPException:
        abort(400, description="The export names no page of the console.")
    if endpoint not in ("console.log", "console.record", "console.actor"):
        abort(400, description="Only a list of events can be exported.")
    # The first value of a repeated parameter, as the page itself reads it.
    return str(endpoint), dict(view_args), MultiDict(parse_qsl(parts.query)).to_dict()


@blueprint.route("/exports", methods=["POST"])
def start_export() -> Any:
    """Export the events of a page, with its filters, as CSV."""
    if not viewer().may("export"):
        abort(403, description="This session may not export.")
    access.check_csrf()
    endpoint, view_args, query = _view_of(request.form.get("view", ""))
    records, actor_ids = scope_of_view(endpoint, view_args, query.get("tab"))
    raw = {k: v for k, v in query.items() if k not in OWN_PARAMETERS + ("cursor", "limit")}
    raw = {k: v for k, v in raw.items() if v.strip()}
    try:
        args = LogQueryArgsSchema().load(raw)
    except ValidationError:
        abort(422, description="The page's filters are invalid; correct them first.")
    flt = event_filter(args, records=records, actor_ids=actor_ids)
    echo = dict(raw)
    if records:
        echo.update(entity_type=records[0][0], entity_id=records[0][1])
    if actor_ids:
        echo["actor_id"] = actor_ids[0]
    export = queue_export(viewer().org_id, echo, flt, "csv", performed_by=console_performer())
    session["exports"] = ([export.id] + list(session.get("exports", [])))[:REMEMBERED_EXPORTS]
    return redirect(url_for("console.export", export_id=export.id), 303)


def console_performer() -> dict[str, Any]:
    """Who acts through a console session, for the access log: its viewer, if named."""
    return {"type": "console", "viewer": viewer().viewer, "key_id": viewer().key_id}


def _own_export(export_id: str) -> Any:
    if export_id not in session.get("exports", []):
        abort(404)
    with services().database.unit_of_work() as db:
        found = exports.find_export(db, viewer().org_id, export_id)
    if found is None:
        abort(404)
    return found


@blueprint.route("/exports/<export_id>")
def export(export_id: str) -> Any:
    """An export's progress, then its download link."""
    found = _own_export(export_id)
    template = (
        "console/_export_status.html"
        if request.args.get("fragment") == "status"
        else "console/export.html"
    )
    return render_template(
        template, export=found, status=exports.status_at(found, datetime.now(UTC)), rfc3339=rfc3339
    )


@blueprint.route("/exports/<export_id>/download")
def download_export(export_id: str) -> Any:
    found = _own_export(export_id)
    status = exports.status_at(found, datetime.now(UTC))
    if status == exports.EXPIRED:
        abort(410, description="This export has expired; start a new one.")
    if status != exports.SUCCEEDED or not found.file_path:
        abort(409, description=f"The export is {status}.")
    response = file_response(found)
    if response is None:
        abort(410, description="This export's file is gone; start a new one.")
    note_download(found, console_performer(), response)
    return response
