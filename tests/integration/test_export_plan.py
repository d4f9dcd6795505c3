"""On PostgreSQL, an export of an organisation's whole log, or of a time window of it, reads
its rows in the log's order from the (org_id, occurred_at, id) index as they stream, never
all of them sorted first, even on tables loaded moments ago and never analysed."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest

from bench.data import fill_events
from storage.db import driver_of
from storage.queries import EventFilter, csv_copy_query
from tests.factories import make_settings
from worker.exports import in_time_order, prepare_export_read
from worker.sequencer import sequence_pending

pytestmark = pytest.mark.postgres

ORG = "org_0"
WINDOW = EventFilter(since=datetime(2026, 2, 1, tzinfo=UTC), until=datetime(2026, 2, 3, tzinfo=UTC))


def test_only_the_whole_log_or_a_time_window_is_read_in_index_order():
    assert in_time_order(EventFilter())
    assert in_time_order(WINDOW)
    assert in_time_order(EventFilter(until=datetime(2026, 2, 3, tzinfo=UTC)))
    for narrower in (
        EventFilter(actor_ids=("actor7",)),
        EventFilter(records=(("person", "e42"),)),
        EventFilter(entity_type="person"),
        EventFilter(types=frozenset({"person.created"})),
        EventFilter(network=ipaddress.ip_network("10.0.0.0/8")),
        EventFilter(actor_ids=("actor7",), since=WINDOW.since),
    ):
        assert not in_time_order(narrower), narrower


@pytest.mark.parametrize("flt", [EventFilter(), WINDOW], ids=["whole log", "time window"])
def test_an_export_streams_in_index_order_without_sorting(postgres_url, tmp_path, flt):
    from storage.db import Database

    database = Database(postgres_url)
    settings = make_settings(tmp_path / "var", database_url=postgres_url)
    try:
        with database.engine.begin() as connection:
            fill_events(connection, 20_000, orgs=2, analyze=False)
        sequence_pending(database, settings)
        with database.unit_of_work() as reader:
            size = int(
                reader.connection()
                .exec_driver_sql("SELECT max(seq) FROM log_leaves WHERE org_id = %s", (ORG,))
                .scalar_one()
            )
            query, params = csv_copy_query(reader, ORG, flt, max_seq=size)
            select = query.removeprefix("COPY (").removesuffix(") TO STDOUT WITH (FORMAT csv)")
            prepare_export_read(reader, flt)
            with driver_of(reader) as driver, driver.cursor() as cursor:
                cursor.execute("EXPLAIN " + select, params)
                plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Sort" not in plan.replace("Gather Merge", ""), plan
        assert "ix_events_org_time" in plan, plan
    finally:
        database.engine.dispose()


@pytest.mark.parametrize(
    "flt", [EventFilter(), EventFilter(actor_ids=("actor7",))], ids=["whole log", "an actor"]
)
def test_an_export_is_read_without_jit_and_the_settings_end_with_it(postgres_url, flt):
    """JIT compiling an export's expressions, in each parallel worker, cost a quarter of a
    second before the first row; the settings are the reading transaction's alone."""
    from storage.db import Database

    database = Database(postgres_url)
    try:
        with database.unit_of_work() as reader, driver_of(reader) as driver:
            with driver.cursor() as cursor:
                cursor.execute("SELECT current_setting('jit'), current_setting('enable_sort')")
                before = cursor.fetchone()
                prepare_export_read(reader, flt)
                cursor.execute("SELECT current_setting('jit'), current_setting('enable_sort')")
                assert cursor.fetchone() == ("off", "off" if in_time_order(flt) else "on")
            driver.rollback()
            with driver.cursor() as cursor:
                cursor.execute("SELECT current_setting('jit'), current_setting('enable_sort')")
                assert cursor.fetchone() == before
    finally:
        database.engine.dispose()
