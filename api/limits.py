"""Rate limits per webhook source and per API key (Flask-Limiter).

Counters live in Redis when ``REDIS_URL`` is set (shared by every web process) and in
memory otherwise. A limiter that cannot reach Redis lets requests through on an
in-memory fallback: a webhook is never refused because the counter store is down.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Flask, request
from flask_limiter import Limiter
from redis.backoff import NoBackoff
from redis.retry import Retry

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
        headers_enabled=True,  # Retry-After on every 429 comes from here
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
    return limiter
