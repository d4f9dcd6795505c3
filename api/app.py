"""The app factory: webhook receiver, read API and console in one Flask app."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request, request
from werkzeug.exceptions import NotFound, UnprocessableEntity
from werkzeug.routing import MapAdapter

from api.access_log import blp as access_log_blueprint
from api.auth import check_endpoint_scopes
from api.console.access import configure_sessions
from api.console.links import blp as console_sessions_blueprint
from api.console.views import blueprint as console_blueprint
from api.edge import RequestIds, TrustedProxies
from api.errors import register_error_handlers, reject
from api.exports import blp as exports_blueprint
from api.feed import blp as feed_blueprint
from api.feed import keys_blp as log_keys_blueprint
from api.health import blueprint as health_blueprint
from api.limits import install_limits
from api.logs import blp as logs_blueprint
from api.metrics import blueprint as metrics_blueprint
from api.rest import create_api
from api.webhooks import blueprint as webhooks_blueprint
from ingest.schemas import NotificationBatchSchema, NotificationSchema
from storage.db import Database
from storage.runtime import Publish, Services, StartExport
from storage.settings import Settings, settings_or_exit
from worker.queue import create_celery, export_starter, publisher


class AuditlogFlask(Flask):
    """Flask, with links made for the service's public address when ``PUBLIC_URL`` is set.

    ``url_for(..., _external=True)`` (export download links) then names ``PUBLIC_URL``'s
    scheme, host and path whatever host the request came in by; without it, the request's
    own, which behind a trusted proxy are the ones the client used (``api.edge``).
    """

    public_url: str = ""

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        adapter = super().create_url_adapter(request)
        if adapter is not None and request is not None and self.public_url:
            public = urlsplit(self.public_url)
            adapter.url_scheme = public.scheme
            adapter.server_name = public.netloc
            if public.path.strip("/"):
                adapter.script_name = public.path.rstrip("/") + "/"
        return adapter


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    publish: Publish | None = None,
    start_export: StartExport | None = None,
) -> Flask:
    """Build the app; tests pass their own settings, database or publisher."""
    settings = settings or settings_or_exit()
    app = AuditlogFlask(__name__)
    app.public_url = settings.public_url
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    celery = create_celery(settings, fail_fast=True)
    app.extensions["auditlog"] = Services(
        settings=settings,
        database=database or Database(settings.database_url),
        publish=publish or publisher(celery),
        start_export=start_export or export_starter(celery),
    )
    api = create_api(app)
    api.spec.components.schema("Notification", schema=NotificationSchema)
    api.spec.components.schema("NotificationBatch", schema=NotificationBatchSchema)
    api.register_blueprint(webhooks_blueprint)
    api.register_blueprint(logs_blueprint)
    api.register_blueprint(exports_blueprint)
    api.register_blueprint(console_sessions_blueprint)
    api.register_blueprint(feed_blueprint)
    api.register_blueprint(log_keys_blueprint)
    api.register_blueprint(access_log_blueprint)
    # The console's pages are HTML for people, not part of the OpenAPI document.
    app.register_blueprint(console_blueprint)
    # Probes and metrics (no key, no rate limit, not in the OpenAPI document); the metrics
    # blueprint also counts every response of the app.
    app.register_blueprint(health_blueprint)
    app.register_blueprint(metrics_blueprint)
    configure_sessions(app, settings.secret_key, settings.public_url, settings.secret_key_fallbacks)
    install_limits(
        app,
        settings,
        webhooks_blueprint,
        [
            logs_blueprint,
            exports_blueprint,
            console_sessions_blueprint,
            feed_blueprint,
            access_log_blueprint,
        ],
    )
    app.before_request(refuse_nul)
    # After the Api, whose own HTTPException handler this replaces.
    register_error_handlers(app)
    check_endpoint_scopes(app)
    # Outermost, so that every response of the process carries its request id.
    proxied: Any = TrustedProxies(app.wsgi_app, settings.forwarded_allow_ips)
    app.wsgi_app = RequestIds(proxied)  # type: ignore[method-assign]
    return app


def refuse_nul() -> None:
    """U+0000 can be in no id nor filter (PostgreSQL text cannot hold it): refused here,
    for every path and query parameter, before any route runs."""
    if "\x00" in request.path:
        reject(NotFound, "not_found", "no such resource")
    bad = sorted({key for key, value in request.args.items(multi=True) if "\x00" in key + value})
    if bad:
        message = "U+0000 is not allowed."
        reject(UnprocessableEntity, "validation_failed", message, {key: [message] for key in bad})
