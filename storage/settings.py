"""The one place that reads the environment.

Every variable has a working default so the service runs on a machine with nothing
installed: SQLite under ``var/`` and a filesystem Celery transport. Tests build their own
``Settings`` instead of touching ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from storage.logformat import parse_log_format


class ConfigurationError(ValueError):
    """The environment cannot run the service; the message says what to set."""


def _log_format(raw: str | None) -> str:
    try:
        return parse_log_format(raw)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def normalise_database_url(url: str) -> str:
    """Map ``postgres://`` and ``postgresql://`` to the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def parse_forwarded_allow_ips(raw: str | None) -> tuple[str, ...]:
    """``FORWARDED_ALLOW_IPS``: comma-separated addresses or networks, or ``*``; unset or
    empty, no peer is trusted. gunicorn reads the same variable with the same meaning."""
    entries = tuple(entry.strip() for entry in (raw or "").split(",") if entry.strip())
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address, a network or *"
            ) from None
    return entries


def _read_or_create_secret(path: Path) -> str:
    """Return the key kept in ``path``, creating it once; concurrent starters agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            value = path.read_text().strip()
            if value:
                return value
            # Another process created the file and is about to write it.
            time.sleep(0.02)
        raise RuntimeError(f"{path} exists but is empty") from None
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


#: The values of ``EXPORT_STORAGE``.
EXPORT_STORAGES = ("database", "filesystem")


@dataclass(frozen=True)
class Settings:
    var_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str | None = None
    export_dir: Path = Path()  # default: var_dir / "exports"
    export_ttl_seconds: int = 604800
    webhook_tolerance_seconds: int = 300
    max_body_bytes: int = 2 * 1024 * 1024
    secret_key: str = ""
    #: Former secret keys, newest first, still accepted so SECRET_KEY can be rotated.
    secret_key_fallbacks: tuple[str, ...] = ()
    port: int = 8000
    # Operational tuning, documented in the README beside the variables above.
    requeue_after_seconds: int = 60
    sweep_interval_seconds: float = 30.0
    max_attempts: int = 5
    webhook_rate_limit: str = "100/second"
    api_rate_limit: str = "50/second"
    #: The console's ``frame-ancestors`` (CSP): who may embed it in a frame.
    console_frame_ancestors: str = "'self'"
    #: The service's address as its users reach it; links minted outside a request use it.
    public_url: str = ""
    #: Checkpoints name their log ``<log_origin>/<org_id>``; the signing key is named so.
    log_origin: str = ""
    #: A C2SP note private key (``PRIVATE+KEY+…``); unset, one is generated and stored.
    log_signing_key: str = ""
    #: ``False`` only to measure what sequencing costs (``SEQUENCER=off``, benchmarks):
    #: events then never get a seq.
    sequencer_enabled: bool = True
    #: ``json`` (one object per line) or ``text``, for web, worker and beat alike.
    log_format: str = "json"
    #: Peers whose ``X-Forwarded-*`` headers are believed (addresses, networks or ``*``).
    forwarded_allow_ips: tuple[str, ...] = ()
    #: Where finished export files live: ``database`` (reachable from every host) or
    #: ``filesystem`` (``export_dir``, for web and worker sharing one folder).
    export_storage: str = "database"
    #: How long beat's schedule lock outlives a beat that stopped renewing it.
    beat_lock_seconds: int = 15

    def __post_init__(self) -> None:
        if self.export_dir == Path():
            object.__setattr__(self, "export_dir", self.var_dir / "exports")
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(self.var_dir / 'auditlog.sqlite3')}"
            )
        object.__setattr__(self, "database_url", normalise_database_url(self.database_url))
        if not self.log_origin:
            object.__setattr__(self, "log_origin", socket.gethostname())
        if self.export_storage not in EXPORT_STORAGES:
            raise ConfigurationError(
                f"EXPORT_STORAGE must be one of {', '.join(EXPORT_STORAGES)}, "
                f"got {self.export_storage!r}"
            )
        if self.beat_lock_seconds < 2:
            raise ConfigurationError(
                f"BEAT_LOCK_SECONDS must be 2 or more, got {self.beat_lock_seconds}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("AUDITLOG_VAR_DIR", "var"))

        def integer(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None

        database_url = env.get("DATABASE_URL", "").strip()
        secret_key = env.get("SECRET_KEY", "").strip()
        if not secret_key:
            if normalise_database_url(database_url).startswith("postgresql"):
                # Hosts share the database: a key generated on one host would not open
                # what another one signed or sealed.
                raise ConfigurationError(
                    "SECRET_KEY must be set when DATABASE_URL is PostgreSQL: every web, "
                    "worker and beat process must use the same key"
                )
            secret_key = _read_or_create_secret(var_dir / "secret_key")
        if "," in secret_key:
            raise ConfigurationError(
                "SECRET_KEY cannot hold a comma: SECRET_KEY_FALLBACKS is a comma-separated list, "
                "so such a key could never be rotated"
            )
        fallbacks = tuple(
            key.strip() for key in env.get("SECRET_KEY_FALLBACKS", "").split(",") if key.strip()
        )
        return cls(
            var_dir=var_dir,
            database_url=database_url,
            redis_url=env.get("REDIS_URL", "").strip() or None,
            export_dir=Path(env.get("EXPORT_DIR", "").strip() or var_dir / "exports"),
            export_ttl_seconds=integer("EXPORT_TTL_SECONDS", 604800),
            webhook_tolerance_seconds=integer("WEBHOOK_TOLERANCE_SECONDS", 300),
            max_body_bytes=integer("MAX_BODY_BYTES", 2 * 1024 * 1024),
            secret_key=secret_key,
            secret_key_fallbacks=fallbacks,
            port=integer("PORT", 8000),
            requeue_after_seconds=integer("REQUEUE_AFTER_SECONDS", 60),
            sweep_interval_seconds=float(integer("SWEEP_INTERVAL_SECONDS", 30)),
            max_attempts=integer("MAX_ATTEMPTS", 5),
            webhook_rate_limit=env.get("WEBHOOK_RATE_LIMIT", "").strip() or "100/second",
            api_rate_limit=env.get("API_RATE_LIMIT", "").strip() or "50/second",
            console_frame_ancestors=env.get("CONSOLE_FRAME_ANCESTORS", "").strip() or "'self'",
            public_url=env.get("PUBLIC_URL", "").strip().rstrip("/"),
            log_origin=env.get("LOG_ORIGIN", "").strip() or socket.gethostname(),
            log_signing_key=env.get("LOG_SIGNING_KEY", "").strip(),
            sequencer_enabled=env.get("SEQUENCER", "on").strip().lower() != "off",
            log_format=_log_format(env.get("LOG_FORMAT")),
            forwarded_allow_ips=parse_forwarded_allow_ips(env.get("FORWARDED_ALLOW_IPS")),
            export_storage=env.get("EXPORT_STORAGE", "").strip().lower() or "database",
            beat_lock_seconds=integer("BEAT_LOCK_SECONDS", 15),
        )

    @staticmethod
    def log_format_from_env(environ: Mapping[str, str] | None = None) -> str:
        """``LOG_FORMAT`` alone, for configuring logging before anything else is read."""
        env = os.environ if environ is None else environ
        return _log_format(env.get("LOG_FORMAT"))

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """``SECRET_KEY`` first, then its fallbacks: new things are signed with the first."""
        return (self.secret_key, *self.secret_key_fallbacks)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def settings_or_exit(exit_code: int = 2) -> Settings:
    """``Settings.from_env()`` for a process entry point: a configuration the service
    cannot run with ends the process with the reason on stderr, not a traceback."""
    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        print(f"auditlog: {exc}", file=sys.stderr)
        raise SystemExit(exit_code) from None
