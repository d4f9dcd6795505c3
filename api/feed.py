"""The feed and the verifiable log: events in commit order, checkpoints, proofs, keys.

``GET /v1/feed`` is what a SIEM follows: every event of the organisation exactly once, in
``seq`` order, whatever order their transactions committed in. The tree over those events
(RFC 9162) is signed in checkpoints (C2SP signed notes, Ed25519) that anyone holding the
public key from ``GET /v1/log/keys`` can check, with inclusion and consistency proofs.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

from flask import jsonify
from marshmallow import Schema, ValidationError, fields, validates_schema
from marshmallow.validate import Range
from werkzeug.exceptions import NotFound, UnprocessableEntity

from api.auth import require_api_key
from api.context import org_id, services
from api.errors import reject
from api.rest import Blueprint, event_links
from api.schemas import EventSchema, NoQueryArgsSchema
from storage import queries, tlog

blp = Blueprint("feed", __name__, url_prefix="/v1", description="Feed and verifiable log")
keys_blp = Blueprint("log_keys", __name__, url_prefix="/v1", description="Log signing keys")

#: How often a long-poll looks again for new events.
POLL_SECONDS = 0.2


@blp.before_request
def authenticate() -> None:
    require_api_key()


class FeedQueryArgsSchema(NoQueryArgsSchema):
    after = fields.Integer(load_default=0, validate=Range(min=0, max=2**63 - 1))
    limit = fields.Integer(load_default=100, validate=Range(1, 1000))
    wait = fields.Float(load_default=0.0, validate=Range(0, 30))


class FeedSchema(Schema):
    events = fields.List(fields.Nested(EventSchema), required=True)
    next_after = fields.Integer(required=True)


class InclusionQueryArgsSchema(NoQueryArgsSchema):
    seq = fields.Integer(required=True, validate=Range(min=1, max=2**63 - 1))
    tree_size = fields.Integer(required=True, validate=Range(min=1, max=2**63 - 1))

    @validates_schema
    def seq_in_tree(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["seq"] > data["tree_size"]:
            raise ValidationError("seq must be at most tree_size.", "seq")


class ConsistencyQueryArgsSchema(NoQueryArgsSchema):
    first = fields.Integer(required=True, validate=Range(min=1, max=2**63 - 1))
    second = fields.Integer(required=True, validate=Range(min=1, max=2**63 - 1))

    @validates_schema
    def ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["first"] > data["second"]:
            raise ValidationError("first must be at most second.", "first")


class InclusionProofSchema(Schema):
    leaf_index = fields.Integer(required=True)
    tree_size = fields.Integer(required=True)
    hashes = fields.List(fields.String(), required=True)


class ConsistencyProofSchema(Schema):
    first = fields.Integer(required=True)
    second = fields.Integer(required=True)
    hashes = fields.List(fields.String(), required=True)


class CheckpointSchema(Schema):
    tree_size = fields.Integer(required=True)
    root_hash = fields.String(required=True)
    checkpoint = fields.String(required=True)
    created_at = fields.String(required=True)


class LogKeySchema(Schema):
    name = fields.String(required=True)
    key_id = fields.String(required=True)
    public_key = fields.String(required=True)
    vkey = fields.String(required=True)
    created_at = fields.String(required=True)
    retired_at = fields.String(allow_none=True, required=True)


class LogKeysSchema(Schema):
    keys = fields.List(fields.Nested(LogKeySchema), required=True)


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@blp.route("/feed", methods=["GET"])
@blp.arguments(FeedQueryArgsSchema, location="query")
@blp.response(200, FeedSchema)
@blp.errors(400, 401, 422)
@blp.doc(operationId="feed", responses={"200": {"links": event_links("/events/0")}})
def feed(args: dict[str, Any]) -> Any:
    """Events after ``after`` in seq order; ``wait`` holds the request until one arrives."""
    database = services().database
    deadline = time.monotonic() + args["wait"]
    while True:
        with database.unit_of_work() as session:
            rows = tlog.feed_rows(session, org_id(), args["after"], args["limit"])
        if rows or time.monotonic() >= deadline:
            break
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    found = [queries.event_document(row) for row in rows]
    return jsonify(events=found, next_after=found[-1]["seq"] if found else args["after"])


def _latest(session: Any) -> tlog.Checkpoint:
    checkpoint = tlog.latest_checkpoint(session, org_id())
    if checkpoint is None:
        reject(NotFound, "no_checkpoint", "the log has no signed checkpoint yet")
    return checkpoint


def _within(size: int, latest: tlog.Checkpoint, name: str) -> None:
    if size > latest.tree_size:
        message = f"{name} is beyond the latest checkpoint ({latest.tree_size})"
        reject(UnprocessableEntity, "beyond_checkpoint", message, {name: [message]})


@blp.route("/log/checkpoint", methods=["GET"])
@blp.arguments(NoQueryArgsSchema, location="query")
@blp.response(200, CheckpointSchema)
@blp.errors(400, 401, 404)
@blp.doc(
    operationId="latest_checkpoint",
    responses={
        "200": {
            "links": {
                "inclusion_proof": {
                    "operationId": "inclusion_proof",
                    "parameters": {"seq": 1, "tree_size": "$response.body#/tree_size"},
                },
                "consistency_proof": {
                    "operationId": "consistency_proof",
                    "parameters": {"first": 1, "second": "$response.body#/tree_size"},
                },
            }
        }
    },
)
def latest_checkpoint(args: dict[str, Any]) -> Any:
    """The latest signed checkpoint of the organisation's log."""
    with services().database.unit_of_work() as session:
        return jsonify(_latest(session).document())


@blp.route("/log/proof/inclusion", methods=["GET"])
@blp.arguments(InclusionQueryArgsSchema, location="query")
@blp.response(200, InclusionProofSchema)
@blp.errors(400, 401, 404, 422)
@blp.doc(operationId="inclusion_proof")
def inclusion_proof(args: dict[str, Any]) -> Any:
    """RFC 9162 inclusion proof of the event ``seq`` in the tree of ``tree_size``."""
    with services().database.unit_of_work() as session:
        latest = _latest(session)
        _within(args["tree_size"], latest, "tree_size")
        proof = tlog.inclusion_proof(session, org_id(), args["seq"] - 1, args["tree_size"])
    return jsonify(
        leaf_index=args["seq"] - 1, tree_size=args["tree_size"], hashes=[b64(h) for h in proof]
    )


@blp.route("/log/proof/consistency", methods=["GET"])
@blp.arguments(ConsistencyQueryArgsSchema, location="query")
@blp.response(200, ConsistencyProofSchema)
@blp.errors(400, 401, 404, 422)
@blp.doc(operationId="consistency_proof")
def consistency_proof(args: dict[str, Any]) -> Any:
    """RFC 9162 consistency proof between the trees of ``first`` and ``second`` events."""
    with services().database.unit_of_work() as session:
        latest = _latest(session)
        _within(args["second"], latest, "second")
        proof = tlog.consistency_proof(session, org_id(), args["first"], args["second"])
    return jsonify(first=args["first"], second=args["second"], hashes=[b64(h) for h in proof])


@keys_blp.route("/log/keys", methods=["GET"])
@keys_blp.doc(security=[])
@keys_blp.arguments(NoQueryArgsSchema, location="query")
@keys_blp.response(200, LogKeysSchema)
@keys_blp.errors(400)
@keys_blp.doc(operationId="log_keys")
def log_keys(args: dict[str, Any]) -> Any:
    """The public keys that sign checkpoints, retired ones included (no API key needed)."""

    def moment(value: Any) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value is not None else None

    runtime = services()
    with runtime.database.unit_of_work() as session:
        keys = tlog.all_keys(session)
    if not keys:  # a new deployment: make the key now, so it can be pinned before any use
        with runtime.database.unit_of_work(write=True) as session:
            tlog.active_signer(session, runtime.settings, datetime.now(UTC))
            session.commit()
            keys = tlog.all_keys(session)
    return jsonify(
        keys=[
            {
                "name": key.name,
                "key_id": key.key_id,
                "public_key": b64(bytes(key.public_key)),
                "vkey": key.vkey,
                "created_at": moment(key.created_at),
                "retired_at": moment(key.retired_at),
            }
            for key in keys
        ]
    )
