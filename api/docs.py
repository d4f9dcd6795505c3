"""``/v1/docs``: the OpenAPI document in Swagger UI, served from vendored files.

Swagger UI is vendored under ``api/static/vendor/`` (see ``api/static/vendor/README.md``), so
the page needs no network and no Node.js. The page has no inline script or style: its one
script of its own, ``docs.js``, points Swagger UI at ``/v1/openapi.json``.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template, url_for

#: The vendored Swagger UI release (``swagger-ui-dist`` on the npm registry).
SWAGGER_UI_VERSION = "5.35.0"

blueprint = Blueprint(
    "docs",
    __name__,
    url_prefix="/v1/docs",
    static_folder="static",
    template_folder="templates",
)

#: Only this origin's scripts, styles and requests; Swagger UI's icons are data: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@blueprint.route("", methods=["GET"], strict_slashes=False)
def swagger_ui() -> str:
    """The API reference, interactive (no key needed to read it)."""
    return render_template(
        "docs/swagger_ui.html",
        version=SWAGGER_UI_VERSION,
        spec_url=url_for("api-docs.openapi_json"),
    )


@blueprint.after_request
def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
