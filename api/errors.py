"""The one error shape: ``{"error": {"code", "message", "details"}}``, for every error."""

from __future__ import annotations

import logging
import re
from typing import Any, NoReturn

from flask import Flask, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def reject(
    exception: type[HTTPException], code: str, message: str, details: Any = None
) -> NoReturn:
    """Raise an HTTP error that the app's error handler renders in the one error shape."""
    error = exception(description=message)
    error.error_code = code  # type: ignore[attr-defined]
    error.details = details or {}  # type: ignore[attr-defined]
    raise error


def error_response(status: int, code: str, message: str, details: Any = None) -> Any:
    response = jsonify(error={"code": code, "message": message, "details": details or {}})
    response.status_code = status
    return response


def _default_code(exception: HTTPException) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (exception.name or "error").lower()).strip("_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def handle_http_error(exception: HTTPException) -> Any:
        response = error_response(
            exception.code or 500,
            getattr(exception, "error_code", None) or _default_code(exception),
            exception.description or exception.name,
            getattr(exception, "details", None),
        )
        for header in ("Allow", "Retry-After"):
            original = exception.get_response().headers.get(header)
            if original:
                response.headers[header] = original
        return response

    @app.errorhandler(OperationalError)
    def handle_database_unavailable(exception: OperationalError) -> Any:
        log.error("database unavailable: %s", exception.orig)
        response = error_response(
            503, "database_unavailable", "the database is unavailable; try again shortly"
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exception: Exception) -> Any:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
