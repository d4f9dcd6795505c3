"""flask-smorest wiring: one error shape for parsing errors too, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import flask_smorest
from flask import Flask, Request
from marshmallow import Schema, ValidationError
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import BadRequest, UnprocessableEntity

from api.errors import reject
from api.schemas import ErrorSchema
from ingest.body import BodyRejected, ValuesRefused, parse_body

UNKNOWN_FIELD = "Unknown field."


class ArgumentsParser(FlaskParser):
    """Unknown parameters are a 400, malformed values a 422, both in the one error shape.

    A JSON body is read by the webhook's strict decoder (``ingest.body``), for every
    endpoint that takes one: 400 ``invalid_json`` for a body that is not UTF-8 JSON (a
    duplicate key, ``NaN``, nesting deeper than 32 and nesting bombs included), 422
    ``validation_failed`` with each field's path for numbers that are not I-JSON and
    strings or keys with a lone surrogate. webargs' own loading would let a 5,000-digit
    integer or 200,000 nested ``[`` escape as a 500, and keep values no store can hold.
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
            return parse_body(body)
        except ValuesRefused as exc:
            reject(UnprocessableEntity, "validation_failed", exc.message, exc.details())
        except BodyRejected as exc:
            reject(BadRequest, "invalid_json", exc.message)

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


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema


def create_api(app: Flask) -> Api:
    app.config.update(
        API_TITLE="auditlog",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": "Audit logs: webhook ingestion, read API, exports."},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}],
        },
    )
    return Api(app)
