"""Exports: queue one, watch its progress, download it and its evidence."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from marshmallow import Schema, fields
from marshmallow.validate import OneOf
from werkzeug.exceptions import Conflict, Forbidden, Gone, NotFound

from api.auth import ENDPOINT_SCOPES, has_scope, require_api_key
from api.context import api_key, client_ip, org_id, request_id, services
from api.errors import reject
from api.logs import event_filter
from api.rest import Blueprint
from api.schemas import LogFiltersSchema, NoQueryArgsSchema
from storage import access, accounts, blobs, exports
from storage.credentials import signing_keys
from storage.models import Export
from storage.timefmt import rfc3339
from worker.exports import evidence_chunks

log = logging.getLogger(__name__)

blp = Blueprint("exports", __name__, url_prefix="/v1", description="Exports of the log")

LINK_SECONDS = 15 * 60


class ExportRequestSchema(LogFiltersSchema):
    """The log filters, as a JSON body; ``event_type`` may also be a list.

    ``format`` is what the file holds (not a filter): CSV cells, or one event object per
    line in the log's order (``jsonl``).
    """

    format = fields.String(load_default="csv", validate=OneOf(exports.FORMATS))


class DownloadQueryArgsSchema(NoQueryArgsSchema):
    token = fields.String()


class ExportSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True)
    filters = fields.Dict(required=True)
    rows_written = fields.Integer(required=True)
    rows_total = fields.Integer(allow_none=True, required=True)
    progress = fields.Float(required=True)
    created_at = fields.String(required=True)
    started_at = fields.String(allow_none=True, required=True)
    finished_at = fields.String(allow_none=True, required=True)
    expires_at = fields.String(allow_none=True, required=True)
    download_url = fields.String(allow_none=True, required=True)
    error = fields.String(allow_none=True, required=True)
    format = fields.String(required=True)
    #: The log's size the export holds (events with seq ≤ tree_size), once it is built.
    tree_size = fields.Integer(allow_none=True, required=True)
    #: The signed checkpoint of exactly that size.
    checkpoint = fields.String(allow_none=True, required=True)


class EvidenceRowSchema(Schema):
    line = fields.Integer(required=True)
    seq = fields.Integer(required=True)
    proof = fields.List(fields.String(), required=True)


class EvidenceSchema(Schema):
    """What ``auditlog verify`` proves an export file with (see worker.exports)."""

    format = fields.String(required=True)
    export_id = fields.String(required=True)
    export_format = fields.String(required=True)
    org_id = fields.String(required=True)
    filters = fields.Dict(required=True)
    complete = fields.Boolean(required=True)
    tree_size = fields.Integer(required=True)
    checkpoint = fields.String(required=True)
    rows_total = fields.Integer(required=True)
    #: Complete exports: the leaf hash of every seq 1 … tree_size (base64).
    leaf_hashes = fields.List(fields.String())
    #: Filtered exports: each row's seq and inclusion proof, in file order.
    rows = fields.List(fields.Nested(EvidenceRowSchema))
    #: CSV exports: each row's event object, in file order.
    events = fields.List(fields.Dict())


class ExportListSchema(Schema):
    exports = fields.List(fields.Nested(ExportSchema), required=True)


def link_signer() -> URLSafeTimedSerializer:
    keys = signing_keys(services().settings.secret_keys)
    return URLSafeTimedSerializer(keys, salt="auditlog.export-link.v1")


@blp.before_request
def authenticate() -> None:
    """A signed link downloads without a key; everything else needs one."""
    if request.endpoint == "exports.download_export" and "token" in request.args:
        if "Authorization" not in request.headers:
            return
    require_api_key()


def progress_of(export: Export, status: str) -> float:
    if status in (exports.SUCCEEDED, exports.EXPIRED):
        return 1.0
    if not export.rows_total:
        return 0.0
    return min(1.0, export.rows_written / export.rows_total)


def export_document(export: Export) -> dict[str, Any]:
    """The export as shown: ``expired`` from ``expires_at`` on, not from beat's next sweep."""

    def moment(value: datetime | None) -> str | None:
        return rfc3339(value) if value is not None else None

    status = exports.status_at(export, datetime.now(UTC))
    download_url = None
    # A key that may not download gets no link that would let it.
    if status == exports.SUCCEEDED and has_scope(ENDPOINT_SCOPES["exports.download_export"]):
        key = api_key()
        token = link_signer().dumps({"export": export.id, "org": export.org_id, "key": key.key_id})
        download_url = url_for(
            "exports.download_export", export_id=export.id, token=token, _external=True
        )
    return {
        "id": export.id,
        "status": status,
        "filters": export.filters,
        "rows_written": export.rows_written,
        "rows_total": export.rows_total,
        "progress": progress_of(export, status),
        "created_at": moment(export.created_at),
        "started_at": moment(export.started_at),
        "finished_at": moment(export.finished_at),
        "expires_at": moment(export.expires_at),
        "download_url": download_url,
        "error": export.error,
        "format": export.format or "csv",
        "tree_size": export.tree_size,
        "checkpoint": export.checkpoint,
    }


#: Where an export's id leads, for clients (and stateful fuzzing) that follow links.
EXPORT_LINKS = {
    operation: {"operationId": operation, "parameters": {"export_id": "$response.body#/id"}}
    for operation in ("get_export", "download_export", "export_evidence")
}


def queue_export(
    org: str, filters: dict[str, Any], flt: Any, fmt: str, performed_by: dict[str, Any]
) -> Export:
    """Create an export (and its access-log entry) in one transaction, then queue its build.

    The API and the console both start exports through this."""
    runtime = services()
    now = datetime.now(UTC)
    with runtime.database.unit_of_work(write=True) as session:
        export = exports.create_export(session, org, filters, flt, now, format=fmt)
        access.record(
            session,
            org,
            "export.created",
            now,
            performed_by=performed_by,
            subject_id=export.id,
            ip_address=client_ip(),
            request_id=request_id(),
            details={"filters": filters, "format": fmt},
        )
        session.commit()
    try:
        runtime.start_export(export.id)
    except Exception:  # the sweeper starts exports whose message never left
        log.warning("queueing export %s failed; the sweeper will retry", export.id, exc_info=True)
    return export


def note_download(
    export: Export, performed_by: dict[str, Any], response: Response, part: str = "file"
) -> None:
    """The access-log entry of a download (its own transaction: a download changes nothing).

    A HEAD, a 304 or a 416 sends no rows and is not a download; a range of the file is.
    ``part`` is ``evidence`` for the evidence document, which holds the rows' events too."""
    if request.method == "HEAD" or response.status_code not in (200, 206):
        return
    with services().database.unit_of_work(write=True) as session:
        access.record(
            session,
            export.org_id,
            "export.downloaded",
            datetime.now(UTC),
            performed_by=performed_by,
            subject_id=export.id,
            ip_address=client_ip(),
            request_id=request_id(),
            details={"part": part, "format": export.format or "csv", "rows": export.rows_written},
        )
        session.commit()


@blp.route("/exports", methods=["POST"])
@blp.arguments(ExportRequestSchema, required=False)
@blp.response(202, ExportSchema)
@blp.errors(400, 401, 403, 422)
@blp.doc(operationId="create_export", responses={"202": {"links": EXPORT_LINKS}})
def create_export(args: dict[str, Any]) -> Any:
    """Queue an export of the events matching the filters, recorded until now."""
    body = request.get_json(silent=True) or {}
    export = queue_export(
        org_id(),
        {name: value for name, value in body.items() if name != "format"},
        event_filter(args),
        args["format"],
        performed_by=api_key().performed_by(),
    )
    response = jsonify(export_document(export))
    response.status_code = 202
    response.headers["Location"] = url_for("exports.get_export", export_id=export.id)
    return response


@blp.route("/exports", methods=["GET"])
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, ExportListSchema)
@blp.errors(400, 401)
@blp.doc(
    operationId="list_exports",
    responses={
        "200": {
            "links": {
                name: {**link, "parameters": {"export_id": "$response.body#/exports/0/id"}}
                for name, link in EXPORT_LINKS.items()
            }
        }
    },
)
def list_exports(args: dict[str, Any]) -> Any:
    """The organisation's exports, newest first."""
    with services().database.unit_of_work() as session:
        found = exports.list_exports(session, org_id())
    return jsonify(exports=[export_document(export) for export in found])


@blp.route("/exports/<export_id>", methods=["GET"])
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, ExportSchema)
@blp.errors(400, 401, 404)
@blp.doc(
    operationId="get_export",
    responses={"200": {"links": {k: v for k, v in EXPORT_LINKS.items() if k != "get_export"}}},
)
def get_export(args: dict[str, Any], export_id: str) -> Any:
    """One export, with its progress and, once it succeeded, a download link."""
    with services().database.unit_of_work() as session:
        export = exports.find_export(session, org_id(), export_id)
    if export is None:
        reject(NotFound, "not_found", "no such export")
    return jsonify(export_document(export))


@blp.route("/exports/<export_id>/download", methods=["GET"])
@blp.arguments(DownloadQueryArgsSchema, location="query")
@blp.response(
    200, description="the file (application/x-ndjson for a jsonl export)", content_type="text/csv"
)
@blp.errors(400, 401, 403, 404, 409, 410)
@blp.doc(
    operationId="download_export",
    # Either credential: the bearer key, or the token of a signed ``download_url``.
    security=[{"bearerAuth": []}, {"downloadLink": []}],
)
def download_export(args: dict[str, Any], export_id: str) -> Any:
    """The file, with the bearer key or through a signed ``download_url``."""
    if "Authorization" in request.headers or "token" not in args:
        owner = org_id()
        downloader = api_key().performed_by()
    else:
        try:
            claims = link_signer().loads(args["token"], max_age=LINK_SECONDS)
        except BadSignature:
            reject(Forbidden, "invalid_link", "the link was altered or has expired")
        if not isinstance(claims, dict) or claims.get("export") != export_id:
            reject(Forbidden, "invalid_link", "the link is for another export")
        owner = claims["org"]
        downloader = {"type": "signed_link", "key_id": claims.get("key")}
        if "key" in claims:  # links made before keys were named in them carry none
            with services().database.unit_of_work() as session:
                allowed = accounts.key_allows(
                    session, claims["key"], owner, ENDPOINT_SCOPES["exports.download_export"]
                )
            if not allowed:
                reject(
                    Forbidden,
                    "invalid_link",
                    "the key this link was given to is revoked or may no longer download",
                )
    with services().database.unit_of_work() as session:
        export = exports.find_export(session, owner, export_id)
    if export is None:
        reject(NotFound, "not_found", "no such export")
    status = exports.status_at(export, datetime.now(UTC))  # expired from expires_at on
    if status == exports.EXPIRED:
        reject(Gone, "export_expired", "the export has expired")
    if status != exports.SUCCEEDED or not export.file_path:
        reject(Conflict, "export_not_ready", f"the export is {status}")
    response = file_response(export)
    if response is None:
        reject(Gone, "export_expired", "the export file is gone")
    note_download(export, downloader, response)
    return response


def file_response(export: Export) -> Response | None:
    """The export's file as a streamed attachment, wherever it is stored; None if gone.

    The body is read a chunk at a time as it is sent, with Content-Length known up front;
    werkzeug answers ``Range`` (206, 416) and ``If-None-Match`` (304) from the length and
    an ETag naming the stored attempt, and a HEAD reads nothing.
    """
    assert export.file_path is not None
    stored = blobs.open_file(services().database, export.id, export.file_path)
    if stored is None:
        return None
    fmt = export.format or "csv"
    response = Response(stored.chunks(), mimetype=exports.MEDIA_TYPES[fmt], direct_passthrough=True)
    response.content_length = stored.size
    response.headers.set("Content-Disposition", "attachment", filename=f"{export.id}.{fmt}")
    response.set_etag(hashlib.sha256(export.file_path.encode()).hexdigest()[:32])
    response.make_conditional(request, accept_ranges=True, complete_length=stored.size)
    return response


@blp.route("/exports/<export_id>/evidence", methods=["GET"])
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, EvidenceSchema)
@blp.errors(400, 401, 404, 409, 410)
@blp.doc(operationId="export_evidence")
def export_evidence(args: dict[str, Any], export_id: str) -> Any:
    """What proves the export's file against its signed checkpoint (``auditlog verify``).

    For an export without filters, the leaf hash of every event of its tree; otherwise an
    inclusion proof of each row; for a CSV export also each row's event object.
    """
    runtime = services()
    with runtime.database.unit_of_work() as session:
        export = exports.find_export(session, org_id(), export_id)
    if export is None:
        reject(NotFound, "not_found", "no such export")
    status = exports.status_at(export, datetime.now(UTC))
    if status == exports.EXPIRED:
        reject(Gone, "export_expired", "the export has expired")
    if status != exports.SUCCEEDED:
        reject(Conflict, "export_not_ready", f"the export is {status}")
    if export.tree_size is None or not export.checkpoint:
        reject(Conflict, "no_evidence", "the export was built before the log was signed")
    response = Response(evidence_chunks(runtime.database, export), mimetype="application/json")
    note_download(export, api_key().performed_by(), response, part="evidence")
    return response
