"""Every statement is planned for its own parameters, never with one generic plan.

psycopg prepares a statement from its fifth run and PostgreSQL may then switch it to a
generic plan, chosen without the parameters' values: over a table not yet analysed the
worker's lock of a batch's records by ``entity_id IN (…)`` became a scan filtering every
row against the list, seventy times slower.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import text

from storage import accounts, state
from storage.db import PLAN_CACHE_MODE, Database

pytestmark = pytest.mark.postgres


def test_connections_plan_each_statement_for_its_parameters(postgres_url):
    database = Database(postgres_url)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("SHOW plan_cache_mode")).scalar() == PLAN_CACHE_MODE
    finally:
        database.engine.dispose()


def test_the_urls_own_options_are_kept(postgres_url):
    url = f"{postgres_url}?options={quote('-c statement_timeout=54321')}"
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "54321ms"
            assert connection.execute(text("SHOW plan_cache_mode")).scalar() == PLAN_CACHE_MODE
    finally:
        database.engine.dispose()


def test_a_statement_run_many_times_is_prepared_but_never_planned_generically(postgres_url):
    database = Database(postgres_url)
    with database.unit_of_work(write=True) as session:
        org_id, _ = accounts.create_organization(session, "plans")
        keys = [("person", f"p{i}") for i in range(300)]
        for _ in range(12):  # psycopg prepares from the 5th run; PostgreSQL goes generic after 5
            state.lock_entities(session, org_id, keys, [])
        plans = session.execute(
            text(
                "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0)"
                " FROM pg_prepared_statements WHERE statement LIKE '%FROM entities%'"
            )
        ).one()
        session.rollback()
    database.engine.dispose()
    generic, custom = plans
    assert custom >= 5, "the statement was never prepared: this test would prove nothing"
    assert generic == 0
