"""Rate limits per webhook source and per API key (Flask-Limiter).

Counters live in Redis when ``REDIS_URL`` is set (shared by every web process) and in
memory otherwise. A limiter that cannot reach Redis lets requests through on an
in-memory fallback: a webhook is never refused because the counter store is down.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from flask import Blueprint, Flask, request
from flask_limiter import Limiter, RateLimitExceeded
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.errors import error_response
from storage.settings import Settings


def source_key() -> str:
    return "source:" + str((request.view_args or {}).get("source_id", ""))


def api_key_identity() -> str:
    """The caller's key (hashed), its signed link, or else its address."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()[:32]
    if "token" in request.args:
        return "link:" + hashlib.sha256(request.args["token"].encode()).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "unknown")


def install_limits(
    app: Flask, settings: Settings, webhooks: Blueprint, api_blueprints: list[Blueprint]
) -> Limiter:
    storage_options: dict[str, object] = {}
    if settings.redis_url:
        # One quick attempt: a Redis outage must cost a request milliseconds, not seconds.
        storage_options = {
            "socket_connect_timeout": 0.5,
            "socket_timeout": 0.5,
            "retry": Retry(NoBackoff(), 0),
        }
    limiter = Limiter(
        key_func=api_key_identity,
        app=app,
        storage_uri=settings.redis_url or "memory://",
        storage_options=storage_options,  # type: ignore[arg-type]
        strategy="moving-window",
        # No X-RateLimit-* headers on every response: each costs a second Redis call per
        # request (the window's state). A 429 says when to retry (below).
        headers_enabled=False,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        key_prefix="auditlog",
    )
    # Shared limits: one budget per source, and one per key across every read endpoint.
    webhook_limit = limiter.shared_limit(
        lambda: settings.webhook_rate_limit, scope="webhooks", key_func=source_key
    )
    webhook_limit(webhooks)
    api_limit = limiter.shared_limit(
        lambda: settings.api_rate_limit, scope="api", key_func=api_key_identity
    )
    for blueprint in api_blueprints:
        api_limit(blueprint)

    @app.errorhandler(RateLimitExceeded)
    def too_many_requests(exception: RateLimitExceeded) -> Any:
        response = error_response(
            429, "too_many_requests", exception.description or "too many requests"
        )
        response.headers["Retry-After"] = str(retry_after(limiter))
        return response

    return limiter


def retry_after(limiter: Limiter) -> int:
    """Whole seconds until the breached limit's window lets a request through (at least 1)."""
    breached = limiter.current_limit
    try:
        reset_at = breached.reset_at if breached is not None else 0
    except Exception:  # the counter store went away meanwhile
        return 1
    return max(1, int(reset_at - time.time()))
