"""``GET /metrics``: Prometheus text format (no API key), with the official ``prometheus_client``.

Two kinds of figures:

- ``auditlog_http_requests_total{method, route, status}``, counted in this process by an
  ``after_request`` hook. ``route`` is the URL rule (``/v1/webhooks/<source_id>``), or
  ``unmatched``, never the raw path, so the series stay few whatever the traffic. Under
  gunicorn each worker counts its own requests: with ``PROMETHEUS_MULTIPROC_DIR`` set
  (before the process starts) the counts go to files there and every scrape sums them all
  through ``MultiProcessCollector``, whichever worker answers it.
- The state of the database, read at scrape time by ``DatabaseCollector`` (a few
  aggregate queries), so every process reports the same truth and nothing needs
  multiprocess handling: notifications and exports by status, the age of the oldest
  queued notification, the events the sequencer has numbered, and how far it lags.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select, text, tuple_
from sqlalchemy.orm import Session

from api.context import services
from storage import exports as export_states
from storage import inbox
from storage.db import Database
from storage.models import Event, Export, LogTree, Notification, SequencerState

log = logging.getLogger(__name__)

blueprint = Blueprint("metrics", __name__)

#: The classic text format, which ``generate_latest`` writes (whatever the library version).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Decided once, as ``prometheus_client`` itself decides when its values are created.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
if MULTIPROCESS:  # a folder that is missing would fail every count (emptying it is the caller's)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

#: The scrape's queries are aggregates over indexed columns; this bounds them regardless.
SCRAPE_STATEMENT_TIMEOUT_MS = 5000

NOTIFICATION_STATUSES = (inbox.QUEUED, inbox.PROCESSED, inbox.FAILED)
EXPORT_STATUSES = (
    export_states.QUEUED,
    export_states.RUNNING,
    export_states.SUCCEEDED,
    export_states.FAILED,
    export_states.EXPIRED,
)
#: Any other method (an arbitrary token a client sends) is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: In no registry of its own: each scrape builds a fresh one (see ``scrape``).
HTTP_REQUESTS = Counter(
    "auditlog_http_requests",
    "HTTP requests answered, by method, URL rule and status code.",
    ["method", "route", "status"],
    registry=None,
)


_count_failed = False


@blueprint.after_app_request
def count_request(response: Response) -> Response:
    """Counts every response of the app, errors included; a count that fails (say, the
    multiprocess folder became unwritable) is logged once and never fails the response."""
    global _count_failed
    rule = request.url_rule
    method = request.method if request.method in METHODS else "other"
    route = rule.rule if rule is not None else "unmatched"
    try:
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
    except Exception:
        if not _count_failed:
            _count_failed = True
            log.exception("metrics: a request could not be counted")
    return response


@blueprint.route("/metrics", methods=["GET"])
def metrics() -> Response:
    """Every metric in the Prometheus text format."""
    response = Response(generate_latest(scrape_registry(services().database)))
    response.headers["Content-Type"] = CONTENT_TYPE
    response.headers["Cache-Control"] = "no-store"
    return response


def scrape_registry(database: Database) -> CollectorRegistry:
    """A fresh registry per scrape: this process's counter, or in multiprocess mode every
    process's (as prometheus_client's documentation prescribes), and the database's state."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(HTTP_REQUESTS)
    registry.register(DatabaseCollector(database))
    return registry


class DatabaseCollector(Collector):
    """The figures read from the database when scraped.

    ``auditlog_events_recorded_total`` is the sum of ``log_trees.size``: the events the
    sequencer has given a ``seq``, over every organisation (one row each, so no scan of
    ``events``); an event just recorded is counted once it is sequenced, moments later.
    ``auditlog_sequencing_lag_seconds`` is the age (``recorded_at``) of the first event
    past the sequencer's watermark, 0 when every event is sequenced. If the database does
    not answer, ``auditlog_database_up`` is 0 and the database's figures are left out.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        try:
            with self.database.unit_of_work() as session:
                figures = read_figures(session, datetime.now(UTC))
        except Exception as exc:  # a scrape must still answer, with the process's counters
            log.warning("metrics: the database does not answer: %s", exc)
            figures = None
        up = GaugeMetricFamily(
            "auditlog_database_up", "1 if the scrape could read the database, else 0."
        )
        up.add_metric([], 0 if figures is None else 1)
        yield up
        if figures is None:
            return
        notifications = GaugeMetricFamily(
            "auditlog_notifications", "Notifications in the inbox, by status.", labels=["status"]
        )
        for status, count in sorted(figures["notifications"].items()):
            notifications.add_metric([status], count)
        yield notifications
        yield GaugeMetricFamily(
            "auditlog_oldest_queued_seconds",
            "Age of the oldest queued notification (now minus its received_at), 0 if none.",
            value=figures["oldest_queued_seconds"],
        )
        yield CounterMetricFamily(
            "auditlog_events_recorded",
            "Events recorded and numbered by the sequencer (the sum of log_trees.size).",
            value=figures["events_recorded"],
        )
        yield GaugeMetricFamily(
            "auditlog_sequencing_lag_seconds",
            "Age of the oldest event the sequencer has not numbered yet, 0 if none.",
            value=figures["sequencing_lag_seconds"],
        )
        exports = GaugeMetricFamily(
            "auditlog_exports", "Exports, by status as the API shows it.", labels=["status"]
        )
        for status, count in sorted(figures["exports"].items()):
            exports.add_metric([status], count)
        yield exports


def read_figures(session: Session, now: datetime) -> dict[str, Any]:
    """The database's figures, in one read-only transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {SCRAPE_STATEMENT_TIMEOUT_MS}"))
    notifications = dict.fromkeys(NOTIFICATION_STATUSES, 0)
    statement = select(Notification.status, func.count()).group_by(Notification.status)
    for status, count in session.execute(statement):
        notifications[status] = int(count)
    oldest = session.scalar(
        select(func.min(Notification.received_at)).where(Notification.status == inbox.QUEUED)
    )
    # A succeeded export past expires_at is expired, as the API says, before beat records it.
    # Grouped by the label: PostgreSQL would not see two renderings of ``now`` as one.
    shown = case(
        (
            and_(Export.status == export_states.SUCCEEDED, Export.expires_at <= now),
            export_states.EXPIRED,
        ),
        else_=Export.status,
    ).label("shown_status")
    exports = dict.fromkeys(EXPORT_STATUSES, 0)
    for status, count in session.execute(select(shown, func.count()).group_by(shown)):
        exports[status] = exports.get(status, 0) + int(count)
    recorded = session.scalar(select(func.coalesce(func.sum(LogTree.size), 0)))
    return {
        "notifications": notifications,
        "oldest_queued_seconds": _age(oldest, now),
        "exports": exports,
        "events_recorded": int(recorded or 0),
        "sequencing_lag_seconds": _age(_first_unsequenced(session), now),
    }


def _first_unsequenced(session: Session) -> datetime | None:
    """When the first event past the sequencer's watermark was recorded (an index lookup:
    ``(txid, id)`` on PostgreSQL, the key on SQLite, as the sequencer itself reads)."""
    state = session.get(SequencerState, 1)
    txid, event_id = (state.txid, state.event_id) if state is not None else (0, 0)
    statement = select(Event.recorded_at)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.where(tuple_(Event.txid, Event.id) > tuple_(txid, event_id))
        statement = statement.order_by(Event.txid, Event.id)
    else:
        statement = statement.where(Event.id > event_id).order_by(Event.id)
    return session.scalar(statement.limit(1))


def _age(moment: datetime | None, now: datetime) -> float:
    return 0.0 if moment is None else max(0.0, (now - moment).total_seconds())
