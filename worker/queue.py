"""Celery wiring: the broker, the settings that make a lost worker lose no work, the tasks.

With ``REDIS_URL`` unset the broker is kombu's filesystem transport under ``var/broker``:
real worker processes on a machine with no server installed.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery import Celery, signals
from celery.utils import uuid
from kombu.transport import redis as redis_transport

from storage.db import Database
from storage.logformat import configure_logging, current_request_id
from storage.runtime import Publish, StartExport
from storage.settings import Settings
from worker import shutdown

PROCESS_NOTIFICATIONS = "auditlog.process_notifications"
REQUEUE_STALE = "auditlog.requeue_stale_notifications"
BUILD_EXPORT = "auditlog.build_export"
EXPIRE_EXPORTS = "auditlog.expire_exports"
SEQUENCE_LOG = "auditlog.sequence_log"
CATCH_UP_OVERDUE = "auditlog.catch_up_overdue"
QUEUE = "auditlog"

#: Longer than any task can run; Redis redelivers an unacknowledged message after it.
VISIBILITY_TIMEOUT_SECONDS = 3600
#: How long an idle worker waits on the broker before it looks again for a shutdown (Redis:
#: the BRPOP timeout, fractional since Redis 6; the filesystem transport: how often it lists
#: its folder).
BROKER_POLLING_SECONDS = 0.25


def broker_settings(settings: Settings) -> dict[str, Any]:
    if settings.redis_url:
        return {
            "broker_url": settings.redis_url,
            "broker_transport_options": {
                "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
                "socket_connect_timeout": 3,
                "socket_timeout": 10,
                "polling_interval": BROKER_POLLING_SECONDS,
            },
        }
    folder = (settings.var_dir / "broker").resolve()
    for name in ("queue", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://localhost/",
        "broker_transport": f"{shutdown.__name__}:FilesystemTransport",
        "broker_transport_options": {
            "polling_interval": BROKER_POLLING_SECONDS,
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
    }


class PublishingChannel(redis_transport.Channel):
    """kombu's Redis channel, keeping one client for what it sends instead of making a new
    one for every message (a fifth of a webhook's time went to building Redis clients)."""

    _publishing_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._publishing_client is None:
            self._publishing_client = super()._create_client()
        return self._publishing_client

    def _disconnect_pools(self) -> None:
        # kombu drops its pools after a fork or on close; the client built on them goes too.
        self._publishing_client = None
        super()._disconnect_pools()


class PublishingTransport(redis_transport.Transport):
    Channel = PublishingChannel


def create_celery(settings: Settings, fail_fast: bool = False) -> Celery:
    """The Celery app. ``fail_fast`` is for processes that only publish (web, CLI): one
    connection attempt, so that a dead broker costs a request milliseconds, not seconds."""
    app = Celery("auditlog", set_as_current=False)
    broker = broker_settings(settings)
    if fail_fast:
        broker["broker_transport_options"].update(max_retries=1, interval_start=0)
        if broker["broker_url"].startswith("redis://"):
            broker["broker_transport"] = f"{__name__}:PublishingTransport"
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
        # The ETA timer's thread (blocking loop only) wakes this often; stopping waits for it.
        worker_timer_precision=BROKER_POLLING_SECONDS,
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
            "catch-up-overdue": {
                "task": CATCH_UP_OVERDUE,
                "schedule": timedelta(seconds=1),
                # Only the newest pass matters: one that waited in the queue is skipped.
                "options": {"expires": 3},
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


class _Sender:
    """Sends one task's messages through a producer the process keeps, one per thread and
    rebuilt after a fork.

    ``Celery.send_task`` routes, merges options and builds a result object on every call:
    about 0.25 ms of Python per webhook, half of what the publish cost. This takes the same
    two steps of Celery's own (``create_task_message``, then ``send_task_message``, which
    fires the publish signals) with the route worked out once and its queue bound once to
    the producer's channel (kombu copies an unbound queue on every publish only to find it
    declared). The message is the one ``send_task`` sends, a task's parent and root
    included when a task publishes (unit tests hold them equal). No retries: a dead broker
    fails fast, and the sweeper publishes again. Make one per process and task, not per
    call: each holds a broker connection.
    """

    def __init__(self, app: Celery, name: str) -> None:
        self.app = app
        self.name = name
        self.route = app.amqp.router.route({}, name, None, None)
        self.local = threading.local()

    def producer(self) -> tuple[Any, dict[str, Any]]:
        """This thread's producer, and the route with its queue bound to that producer."""
        held = getattr(self.local, "held", None)
        if held is None or held[0] != os.getpid():
            connection = self.app.connection_for_write()
            producer = self.app.amqp.Producer(connection, auto_declare=False)
            route = dict(self.route)
            if route.get("queue") is not None:
                route["queue"] = route["queue"].bind(producer.channel)
            held = (os.getpid(), producer, route)
            self.local.held = held
        return held[1], held[2]

    def __call__(
        self,
        args: list[Any],
        kwargs: dict[str, Any] | None = None,
        argsrepr: str | None = None,
        kwargsrepr: str | None = None,
    ) -> None:
        """``argsrepr``, ``kwargsrepr``: the arguments as Celery's ``saferepr`` writes them,
        when the caller has them cheaper; None for Celery to write them."""
        amqp = self.app.amqp
        root_id = parent_id = None
        parent = self.app.current_worker_task
        if parent:  # published by a task (the sweeper): its lineage, as send_task records it
            root_id = parent.request.root_id or parent.request.id
            parent_id = parent.request.id
        # As send_task builds it: results are ignored by the configuration, not the message.
        message = amqp.create_task_message(
            uuid(),
            self.name,
            args,
            kwargs,
            reply_to=self.app.thread_oid,
            ignore_result=None,
            root_id=root_id,
            parent_id=parent_id,
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
        )
        producer, route = self.producer()
        with producer.connection._reraise_as_library_errors():
            amqp.send_task_message(producer, self.name, message, retry=False, **route)


def _kwargs_repr(kwargs: dict[str, str] | None, most: int) -> str | None:
    """What Celery's ``saferepr`` writes of ``{"request_id": …}``, where repr writes the
    same (no quote or backslash in the id, nothing to shorten); None for Celery to write it.
    saferepr is Python walking a generator per value, where repr is one call in C."""
    kwargs = kwargs or {}  # as Celery takes None
    for value in kwargs.values():
        # Printable ASCII (as api.edge admits) without a quote or backslash: repr's escapes
        # of anything else are not saferepr's.
        if not (value.isascii() and value.isprintable()) or "'" in value or "\\" in value:
            return None
    text = repr(kwargs)
    return text if len(text) < most else None


def publisher(app: Celery) -> Publish:
    """One message per call; no retries here, so a dead broker fails fast (the sweeper retries)."""
    send = _Sender(app, PROCESS_NOTIFICATIONS)
    most = app.amqp.argsrepr_maxsize
    most_kwargs = app.amqp.kwargsrepr_maxsize

    def publish(pks: Sequence[int]) -> None:
        # The request being served (if any) travels with the message, for the worker's logs.
        request_id = current_request_id.get()
        args = [list(pks)]
        # A list of ints: repr writes what Celery's saferepr does, unless it must shorten it.
        text = repr(args)
        kwargs = {"request_id": request_id} if request_id else None
        send(
            args,
            kwargs,
            argsrepr=text if len(text) < most else None,
            kwargsrepr=_kwargs_repr(kwargs, most_kwargs),
        )

    return publish


def export_starter(app: Celery) -> StartExport:
    """Queue the building of an export (the sweeper restarts one whose message is lost)."""
    send = _Sender(app, BUILD_EXPORT)

    def start(export_id: str) -> None:
        send([export_id])

    return start


_databases: dict[str, Database] = {}


def database_for(app: Celery) -> Database:
    """The process's engine for this app's settings, created on first use (after any fork)."""
    settings: Settings = app.auditlog_settings
    database = _databases.get(settings.database_url)
    if database is None:
        database = _databases[settings.database_url] = Database(settings.database_url)
    return database


@signals.worker_process_init.connect
def _dispose_inherited_engines(**_: Any) -> None:
    """A forked pool process must not reuse its parent's connections."""
    for database in _databases.values():
        database.dispose()


@signals.worker_process_init.connect
def _freeze_what_the_process_starts_with(**_: Any) -> None:
    """Leave the objects a pool process starts with (every imported module's, about
    130,000) out of the garbage collector's full passes. Batches of a thousand notifications
    make so many short-lived objects that a full pass runs about every other batch, and
    each walked all of those again: 20-30 ms a time, some 5% of the batches' time."""
    gc.collect()  # what is garbage now would never be freed once frozen
    gc.freeze()


@signals.setup_logging.connect
def _log_json_lines(loglevel: Any = None, **_: Any) -> None:
    """Worker and beat log like the web (``storage.logformat``) instead of Celery's format."""
    configure_logging(Settings.log_format_from_env(), loglevel or "INFO")


_task_contexts: dict[str, Any] = {}


@signals.task_prerun.connect
def _enter_request_context(task_id: str = "", kwargs: Any = None, **_: Any) -> None:
    """A task published while serving a request logs with that request's id."""
    request_id = (kwargs or {}).get("request_id")
    _task_contexts[task_id] = current_request_id.set(request_id if request_id else None)


@signals.task_postrun.connect
def _leave_request_context(task_id: str = "", **_: Any) -> None:
    token = _task_contexts.pop(task_id, None)
    if token is not None:
        current_request_id.reset(token)
