"""flask-smorest wiring: one error shape for parsing errors too, and the OpenAPI document.

The document is OpenAPI 3.1 (JSON Schema 2020-12), generated from the marshmallow schemas
and then given the rules that those schemas check in code (``validates_schema``) and that
no field alone can say: ``entity_id`` only with ``entity_type``, a console scope of exactly
one key, a viewer with the ``restore`` permission. A client (or a fuzzer) that follows the
document then sends nothing the API refuses, and is refused whatever the document forbids.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import flask_smorest
from flask import Flask, Request, current_app
from marshmallow import Schema, ValidationError
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import BadRequest, UnprocessableEntity

from api.docs import blueprint as docs_blueprint
from api.errors import reject
from api.schemas import EVENT_TYPE_ITEM, ErrorSchema
from ingest.body import BodyRejected, ValuesRefused, parse_body
from ingest.schemas import contains_nul

UNKNOWN_FIELD = "Unknown field."


class ArgumentsParser(FlaskParser):
    """Unknown parameters are a 400, malformed values a 422, both in the one error shape.

    A JSON body is read by the webhook's strict decoder (``ingest.body``), for every
    endpoint that takes one: 400 ``invalid_json`` for a body that is not UTF-8 JSON (a
    duplicate key, ``NaN``, nesting deeper than 32 and nesting bombs included), 422
    ``validation_failed`` with each field's path for numbers that are not I-JSON and
    strings or keys with a lone surrogate. webargs' own loading would let a 5,000-digit
    integer or 200,000 nested ``[`` escape as a 500, and keep values no store can hold.
    U+0000 in any string or key is a 422 too, as in a webhook's notifications and in query
    parameters: PostgreSQL text cannot hold it.
    """

    # Let each schema's own ``unknown = RAISE`` decide, for query strings too.
    DEFAULT_UNKNOWN_BY_LOCATION: dict[str, str | None] = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,
        "querystring": None,
    }

    def load_json(self, req: Request, schema: Schema) -> Any:
        """The body's document; ``missing`` without a JSON content type or without a body
        (as webargs answers, so the schema's own required fields decide)."""
        if not is_json_request(req):
            return missing
        body = req.get_data(cache=True)
        if not body:
            return missing
        try:
            document = parse_body(body)
        except ValuesRefused as exc:
            reject(UnprocessableEntity, "validation_failed", exc.message, exc.details())
        except BodyRejected as exc:
            reject(BadRequest, "invalid_json", exc.message)
        # JSON can carry U+0000 only as the escape \u0000: without it, no walk is needed.
        if b"\\u0000" in body and contains_nul(document):
            message = "U+0000 is not allowed."
            fields = (
                sorted(key for key, value in document.items() if contains_nul([key, value]))
                if isinstance(document, dict)
                else ["_schema"]
            )
            reject(
                UnprocessableEntity, "validation_failed", message, {f: [message] for f in fields}
            )
        return document

    def handle_error(
        self,
        error: ValidationError,
        req: Any,
        schema: Schema,
        *,
        error_status_code: int | None,
        error_headers: Mapping[str, str] | None,
    ) -> NoReturn:
        messages = (
            error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
        )
        # webargs keys messages by location ("query", "json"); one location per schema here.
        details = next(iter(messages.values())) if len(messages) == 1 else messages
        if not isinstance(details, dict):
            details = {"_schema": details}
        unknown = sorted(name for name, found in details.items() if found == [UNKNOWN_FIELD])
        # A schema may say that its unknown fields are invalid values too (422).
        if (
            unknown
            and len(unknown) == len(details)
            and not getattr(schema, "unknown_is_invalid", False)
        ):
            reject(
                BadRequest, "unknown_parameter", f"unknown parameter: {', '.join(unknown)}", details
            )
        reject(UnprocessableEntity, "validation_failed", "a parameter is invalid", details)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ArgumentsParser()

    def errors(self, *codes: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Document the error responses an endpoint can give, all in the one shape."""

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            for code in codes:
                view = self.alt_response(code, schema=ErrorSchema, description="error")(view)
            return view

        return decorate


#: The filters of the three log endpoints, sent as query parameters: the document describes
#: them as one form-exploded object (``?entity_type=person&entity_id=p-1`` is exactly how
#: OpenAPI serialises it), so that the rule between two of them can be written down.
FILTERS_PARAMETER = "filters"
LOG_FILTERS = ("entity_type", "entity_id", "actor_id", "event_type", "ip", "since", "until")
#: ``entity_id`` names a record only together with its type (else 422).
ENTITY_ID_NEEDS_TYPE = {"entity_id": ["entity_type"]}

#: Rules each component's ``validates_schema`` checks, in JSON Schema 2020-12.
SCHEMA_RULES: dict[str, dict[str, Any]] = {
    "ExportRequest": {"dependentRequired": ENTITY_ID_NEEDS_TYPE},
    "ConsoleScope": {"minProperties": 1, "maxProperties": 1},
    # A viewer, or no ``restore`` among the permissions (said without ``not``, which some
    # generators handle poorly).
    "ConsoleSessionRequest": {
        "anyOf": [
            {"required": ["viewer"]},
            {"properties": {"permissions": {"items": {"enum": ["export"]}}}},
        ]
    },
}


def event_links(pointer: str) -> dict[str, Any]:
    """OpenAPI links from the event at ``pointer`` of a response to what its ids name.

    No link leads to a restore: only a property update can be restored, and an event of a
    page may be any type.
    """

    def at(path: str) -> str:
        return f"$response.body#{pointer}{path}"

    record = {"entity_type": at("/entity/type"), "entity_id": at("/entity/id")}
    return {
        "record_state": {"operationId": "record_state", "parameters": record},
        "record_history": {"operationId": "record_history", "parameters": record},
        "actor_activity": {
            "operationId": "actor_activity",
            "parameters": {"actor_id": at("/actor/id")},
        },
        "notification_status": {
            "operationId": "notification_status",
            "parameters": {
                "source_id": at("/source_id"),
                "notification_id": at("/notification_id"),
            },
        },
    }


def _filters_object(parameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log filters among ``parameters`` folded into one form-exploded object."""
    filters = [p for p in parameters if p.get("in") == "query" and p["name"] in LOG_FILTERS]
    if {p["name"] for p in filters} != set(LOG_FILTERS):
        return parameters
    properties = {p["name"]: p["schema"] for p in filters}
    folded = {
        "in": "query",
        "name": FILTERS_PARAMETER,
        "style": "form",
        "explode": True,
        "required": False,
        "description": (
            "The log filters, each its own query parameter (`?entity_type=person&entity_id=p-1`)."
            " They combine with AND; `entity_id` needs `entity_type`."
        ),
        "schema": {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
            "dependentRequired": ENTITY_ID_NEEDS_TYPE,
        },
    }
    rest = [p for p in parameters if p not in filters]
    return [folded, *rest]


#: No string the API takes may hold U+0000 (PostgreSQL text cannot hold it): a 422.
NO_NUL = "^[^\\u0000]*$"


def _strings_without_nul(schema: Any) -> None:
    """Give every string schema under ``schema`` that has no pattern of its own ``NO_NUL``."""
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("type")
            is_string = kind == "string" or (isinstance(kind, list) and "string" in kind)
            if is_string and "pattern" not in item and "enum" not in item:
                item["pattern"] = NO_NUL
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _event_type_in_body(document: dict[str, Any]) -> None:
    """In an export's body ``event_type`` may also be a list of codes and prefixes."""
    properties = document["components"]["schemas"]["ExportRequest"]["properties"]
    as_string = properties["event_type"]
    as_list = {"type": "array", "items": {"type": "string", "pattern": f"^{EVENT_TYPE_ITEM}$"}}
    properties["event_type"] = {"anyOf": [as_string, as_list]}


def _state_under_restore(document: dict[str, Any]) -> None:
    """A GET of ``…/<id>/restore`` is the state of the record whose id ends in ``/restore``
    (ids may hold ``/``): the document says so, since the server answers it."""
    paths = document["paths"]
    state = paths["/v1/entities/{entity_type}/{entity_id}"]["get"]
    paths["/v1/entities/{entity_type}/{entity_id}/restore"]["get"] = {
        **copy.deepcopy(state),
        "operationId": "record_state_under_restore",
        "summary": "The state of the record whose id is `{entity_id}/restore`.",
    }


def refine_document(document: dict[str, Any]) -> dict[str, Any]:
    """The generated document with the rules its schemas check in code (see the module)."""
    document = copy.deepcopy(document)
    for name, rules in SCHEMA_RULES.items():
        document["components"]["schemas"][name].update(rules)
    _event_type_in_body(document)
    _state_under_restore(document)
    for operations in document["paths"].values():
        for method, operation in operations.items():
            if method != "parameters" and "parameters" in operation:
                operation["parameters"] = _filters_object(operation["parameters"])
    # Path parameters too: an id holding U+0000 is a 404, like any id that does not exist.
    _strings_without_nul(document["paths"])
    _strings_without_nul(document["components"]["schemas"])
    return document


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema

    def _openapi_json(self) -> Any:
        return current_app.response_class(
            json.dumps(refine_document(self.spec.to_dict()), indent=2),
            mimetype="application/json",
        )


def create_api(app: Flask) -> Api:
    app.config.update(
        API_TITLE="auditlog",
        API_VERSION="1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Audit logs: webhook ingestion, read API, exports."},
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer"},
                    "downloadLink": {
                        "type": "apiKey",
                        "in": "query",
                        "name": "token",
                        "description": "the signed token of an export's `download_url`",
                    },
                }
            },
            "security": [{"bearerAuth": []}],
        },
    )
    api = Api(app)
    # The document in Swagger UI at /v1/docs (not an API operation: no key, not in the document).
    app.register_blueprint(docs_blueprint)
    return api
