"""On PostgreSQL, every documented filter and several combinations are served by an index.

The events table is filled with generated rows (10 organisations) and analysed, then the
planner's plan for each page query is read with EXPLAIN: no sequential scan of ``events``
or ``event_subjects`` may appear.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import postgresql

from bench.data import fill_events
from storage.queries import EventFilter, events_page_statement

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROWS = 500_000


SINCE = datetime(2026, 2, 1, tzinfo=UTC)
UNTIL = datetime(2026, 2, 3, tzinfo=UTC)
FILTERS = {
    "no filter": EventFilter(),
    "entity_type": EventFilter(entity_type="person"),
    "record history": EventFilter(records=(("person", "e42"),)),
    "history of two records": EventFilter(records=(("person", "e42"), ("app", "e43"))),
    "actor": EventFilter(actor_ids=("actor7",)),
    "event_type prefix": EventFilter(
        types=frozenset(
            {"person.created", "person.property_updated", "person.app_relationship_removed"}
        )
    ),
    "one event_type": EventFilter(types=frozenset({"team.created"})),
    "ip address": EventFilter(network=ipaddress.ip_network("10.3.7.7/32")),
    "ipv4 cidr": EventFilter(network=ipaddress.ip_network("10.3.0.0/16")),
    "ipv6 cidr": EventFilter(network=ipaddress.ip_network("2001:db8:ff::/48")),
    "since/until": EventFilter(since=SINCE, until=UNTIL),
    "all combined": EventFilter(
        entity_type="person",
        actor_ids=("actor7",),
        types=frozenset({"person.created", "person.property_updated"}),
        network=ipaddress.ip_network("10.0.0.0/8"),
        since=SINCE,
        until=UNTIL,
    ),
    "history combined": EventFilter(
        records=(("person", "e42"),),
        actor_ids=("actor42",),
        since=SINCE,
        network=ipaddress.ip_network("10.0.0.0/8"),
    ),
}


@pytest.fixture(scope="module")
def filled(postgres_template):
    engine = create_engine(postgres_template)
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.exec_driver_sql("TRUNCATE events, event_subjects, log_leaves")
        fill_events(connection, ROWS, orgs=10)
        # Every event sequenced, as in a running service: the page query joins its seq.
        connection.exec_driver_sql(
            "INSERT INTO log_leaves (org_id, seq, event_id, leaf_hash) "
            "SELECT org_id, row_number() OVER (PARTITION BY org_id ORDER BY id), id, "
            "'\\x00'::bytea FROM events"
        )
        connection.exec_driver_sql("ANALYZE log_leaves")
    yield engine
    with engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.exec_driver_sql("TRUNCATE events, event_subjects, log_leaves")
    engine.dispose()


def plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


class TestEveryFilterUsesAnIndex:
    @pytest.mark.parametrize("name", list(FILTERS))
    @pytest.mark.parametrize("paged", [False, True], ids=["first page", "later page"])
    def test_no_sequential_scan(self, filled, name, paged):
        after = (datetime(2026, 3, 1, tzinfo=UTC), 10**9) if paged else None
        statement = events_page_statement("postgresql", "org_3", FILTERS[name], 51, after)
        compiled = statement.compile(
            dialect=postgresql.psycopg.dialect(), compile_kwargs={"render_postcompile": True}
        )
        with filled.connect() as connection:
            raw = connection.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params
            ).scalar()
        plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
        scans = [(node["Node Type"], node.get("Relation Name")) for node in plan_nodes(plan)]
        seq = [scan for scan in scans if scan[0] == "Seq Scan"]
        assert not seq, f"{name}: {scans}"
        assert any("Index" in node_type for node_type, _ in scans), scans
