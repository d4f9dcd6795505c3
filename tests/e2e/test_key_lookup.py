"""Every keyed request's key lookup (``accounts.identify_key_alone``, straight through the
driver on PostgreSQL) answers what the session lookup answers, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage import accounts
from storage.db import Database
from tests.factories import make_tenant


def test_a_request_identifies_its_key_as_the_session_lookup_does(database, settings):
    """``identify_key_alone`` (every keyed request's lookup, straight through the driver
    on PostgreSQL) answers exactly what ``identify_key`` answers in a session."""
    tenant = make_tenant(database, settings)
    with database.unit_of_work(write=True) as session:
        reader = accounts.create_api_key(session, tenant.org_id, "reader", scopes=["read"])
        revoked = accounts.create_api_key(session, tenant.org_id, scopes=["export"])
        session.commit()
        used = accounts.identify_key(session, reader.api_key)
        assert used is not None
        accounts.note_key_used(session, used, datetime(2026, 11, 30, 9, 15, 0, 250000, UTC))
        accounts.revoke_api_key(session, revoked.key_id)
        session.commit()

    # A server whose sessions are not in UTC: the driver hands back its own zone's times.
    elsewhere = database
    if database.dialect == "postgresql":
        elsewhere = Database(settings.database_url + "?options=-c%20timezone%3DAsia/Tokyo")

    def both(token: str) -> tuple[object, object]:
        with database.unit_of_work() as session:
            in_session = accounts.identify_key(session, token)
        return in_session, accounts.identify_key_alone(elsewhere, token)

    for token in (tenant.api_key, reader.api_key):
        in_session, alone = both(token)
        assert alone is not None and alone == in_session
    in_session, alone = both(reader.api_key)
    assert alone is not None and alone.last_used_at == datetime(2026, 11, 30, 9, 15, 0, 250000, UTC)
    assert alone.last_used_at.utcoffset() == timedelta(0)
    assert both(revoked.api_key) == (None, None)
    assert both("al_" + "0" * 40) == (None, None)
    elsewhere.engine.dispose()
