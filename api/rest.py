"""flask-smorest wiring: one error shape for parsing errors too, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import flask_smorest
from flask import Flask
from marshmallow import Schema, ValidationError
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest, UnprocessableEntity

from api.errors import reject
from api.schemas import ErrorSchema

UNKNOWN_FIELD = "Unknown field."


class ArgumentsParser(FlaskParser):
    """Unknown parameters are a 400, malformed values a 422, both in the one error shape."""

    # Let each schema's own ``unknown = RAISE`` decide, for query strings too.
    DEFAULT_UNKNOWN_BY_LOCATION: dict[str, str | None] = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,
        "querystring": None,
    }

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
        if unknown and len(unknown) == len(details):
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
