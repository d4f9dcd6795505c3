"""Celery wiring: the broker, the settings that make a lost worker lose no work, the tasks.

With ``REDIS_URL`` unset the broker is kombu's filesystem transport under ``var/broker``:
real worker processes on a machine with no server installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from storage.db import Database
from storage.runtime import Publish, StartExport
from storage.settings import Settings

PROCESS_NOTIFICATIONS = "auditlog.process_notifications"
REQUEUE_STALE = "auditlog.requeue_stale_notifications"
BUILD_EXPORT = "auditlog.build_export"
EXPIRE_EXPORTS = "auditlog.expire_exports"
SEQUENCE_LOG = "auditlog.sequence_log"
QUEUE = "auditlog"

#: Longer than any task can run; Redis redelivers an unacknowledged message after it.
VISIBILITY_TIMEOUT_SECONDS = 3600


def broker_settings(settings: Settings) -> dict[str, Any]:
    if settings.redis_url:
        return {
            "broker_url": settings.redis_url,
            "broker_transport_options": {
                "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
                "socket_connect_timeout": 3,
                "socket_timeout": 10,
            },
        }
    folder = (settings.var_dir / "broker").resolve()
    for name in ("queue", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
    }


def create_celery(settings: Settings, fail_fast: bool = False) -> Celery:
    """The Celery app. ``fail_fast`` is for processes that only publish (web, CLI): one
    connection attempt, so that a dead broker costs a request milliseconds, not seconds."""
    app = Celery("auditlog", set_as_current=False)
    broker = broker_settings(settings)
    if fail_fast:
        broker["broker_transport_options"].update(max_retries=1, interval_start=0)
    app.conf.update(
        broker,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A message is acknowledged only once its work is committed; a worker that dies
        # mid-task gives the message back instead of losing it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        worker_hijack_root_logger=False,
        # Beat keeps its schedule in memory: every periodic task here is an interval sweep
        # that is safe to run again, so nothing is worth a file, and a fresh host (no
        # ``var/`` folder) can start beat with nothing but its environment. Of several
        # beats, only the one holding the schedule lock sends (worker.beatlock).
        beat_scheduler="worker.beatlock:LockedScheduler",
        beat_schedule={
            "requeue-stale-notifications": {
                "task": REQUEUE_STALE,
                "schedule": timedelta(seconds=settings.sweep_interval_seconds),
            },
            "sequence-log": {
                "task": SEQUENCE_LOG,
                "schedule": timedelta(seconds=1),
                # A pass that waited longer is pointless: the next one does its work.
                "options": {"expires": 5},
            },
            "expire-exports": {
                "task": EXPIRE_EXPORTS,
                "schedule": timedelta(seconds=max(settings.sweep_interval_seconds, 60)),
            },
        },
    )
    app.auditlog_settings = settings
    from worker import tasks

    tasks.register(app)
    return app


def publisher(app: Celery) -> Publish:
    """One message per call; no retries here, so a dead broker fails fast (the sweeper retries)."""

    def publish(pks: Sequence[int]) -> None:
        app.send_task(PROCESS_NOTIFICATIONS, args=[list(pks)], retry=False)

    return publish


def export_starter(app: Celery) -> StartExport:
    """Queue the building of an export (the sweeper restarts one whose message is lost)."""

    def start(export_id: str) -> None:
        app.send_task(BUILD_EXPORT, args=[export_id], retry=False)

    return start


_databases: dict[str, Database] = {}


def database_for(app: Celery) -> Database:
    """The process's engine for this app's settings, created on first use (after any fork)."""
    settings: Settings = app.auditlog_settings
    database = _databases.get(settings.database_url)
    if database is None:
        database = _databases[settings.database_url] = Database(settings.database_url)
    return database


@worker_process_init.connect
def _dispose_inherited_engines(**_: Any) -> None:
    """A forked pool process must not reuse its parent's connections."""
    for database in _databases.values():
        database.dispose()
