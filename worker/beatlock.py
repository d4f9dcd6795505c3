"""One beat schedule across hosts: beat sends periodic tasks only while it holds a lock.

Beat may be started on several hosts (for availability, or by mistake). Each runs
``LockedScheduler``, which takes a lock before every tick and sends nothing while another
beat holds it; a standby tries again every ``STANDBY_RETRY_SECONDS`` and takes over once
the holder stops (it releases the lock on a clean stop) or dies (its lock then lapses).
The schedule itself stays in memory, so a fresh host needs no folder.

The lock is, in order of preference:

- with ``REDIS_URL``: a Redis key with a TTL (``BEAT_LOCK_SECONDS``) renewed on every tick,
  named after the database, so deployments that share a Redis server each keep their own;
- on PostgreSQL without Redis: a session advisory lock on a connection of its own, held
  as long as that connection lives;
- otherwise (SQLite, one host): an exclusive ``flock`` on ``<AUDITLOG_VAR_DIR>/beat.lock``.

Losing the lock (Redis unreachable, the key gone, the connection dropped) stops the sends at
the next tick. Every periodic task is safe to run twice, so the moment of overlap a lapse
can leave (a holder paused longer than the TTL) costs work, never correctness.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import redis
from celery.beat import Scheduler
from redis.exceptions import LockError, RedisError
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from storage.db import make_engine
from storage.settings import Settings

log = logging.getLogger(__name__)

#: How often a standby beat asks for the lock.
STANDBY_RETRY_SECONDS = 1.0
#: PostgreSQL's advisory lock key for the schedule ("beatlock" in ASCII).
ADVISORY_KEY = int.from_bytes(b"beatlock", "big")


class ScheduleLock(Protocol):
    def hold(self) -> bool:
        """Take the lock, or renew it if already held; whether this beat holds it now."""

    def release(self) -> None: ...


def lock_name(database_url: str) -> str:
    """The Redis key of a deployment's lock: its database, never its password."""
    url = make_url(database_url).render_as_string(hide_password=True)
    digest = hashlib.sha256(url.encode()).hexdigest()
    return f"auditlog:beat-lock:{digest[:16]}"


class RedisScheduleLock:
    def __init__(self, url: str, name: str, ttl_seconds: float) -> None:
        timeout = min(2.0, ttl_seconds / 3)
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        self.lock = self.client.lock(name, timeout=ttl_seconds, thread_local=False)
        self.held = False

    def hold(self) -> bool:
        try:
            if self.held:
                self.lock.reacquire()  # LockNotOwnedError once the key lapsed or changed hands
            else:
                self.held = bool(self.lock.acquire(blocking=False))
        except (LockError, RedisError) as exc:
            if self.held:
                log.warning("beat: lost the schedule lock (%s)", exc.__class__.__name__)
            self.held = False
            self.lock.local.token = None
        return self.held

    def release(self) -> None:
        if self.held:
            try:
                self.lock.release()
            except (LockError, RedisError):
                pass  # it lapses by itself
        self.held = False
        self.client.close()


class AdvisoryScheduleLock:
    """A session advisory lock on an autocommit connection (no transaction stays open)."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        self.connection: Connection | None = None

    def hold(self) -> bool:
        try:
            if self.connection is not None:
                self.connection.execute(text("SELECT 1"))
                return True
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            taken = connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
            )
            if taken:
                self.connection = connection
                return True
            connection.close()
        except SQLAlchemyError as exc:
            if self.connection is not None:
                log.warning("beat: lost the schedule lock (%s)", exc.__class__.__name__)
            self._drop()
        return False

    def release(self) -> None:
        if self.connection is not None:
            try:  # at once, rather than when the server notices the session's end
                self.connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY}
                )
            except SQLAlchemyError:
                pass
        self._drop()
        self.engine.dispose()

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.invalidate()
                self.connection.close()
            except SQLAlchemyError:
                pass
            self.connection = None


class FileScheduleLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def hold(self) -> bool:
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the flock goes with the descriptor
            self.fd = None


def schedule_lock(settings: Settings) -> ScheduleLock:
    if settings.redis_url:
        return RedisScheduleLock(
            settings.redis_url, lock_name(settings.database_url), settings.beat_lock_seconds
        )
    if settings.database_url.startswith("postgresql"):
        return AdvisoryScheduleLock(settings.database_url)
    return FileScheduleLock(settings.var_dir / "beat.lock")


class LockedScheduler(Scheduler):
    """Celery's in-memory scheduler, ticking only while this beat holds the schedule lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings: Settings = self.app.auditlog_settings
        self.schedule_lock = schedule_lock(settings)
        #: Renewed at least this often while held, well within the lock's TTL.
        self.renew_seconds = settings.beat_lock_seconds / 3
        self.holding: bool | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        held = self.schedule_lock.hold()
        if held != self.holding:
            if held:
                log.info("beat: holding the schedule lock; sending periodic tasks")
            else:
                log.info("beat: another beat holds the schedule lock; standing by")
            self.holding = held
        if not held:
            return STANDBY_RETRY_SECONDS
        return float(min(super().tick(*args, **kwargs), self.renew_seconds))

    def close(self) -> None:
        super().close()
        self.schedule_lock.release()
