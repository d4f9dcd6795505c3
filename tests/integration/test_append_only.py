"""On PostgreSQL the log refuses UPDATE, DELETE and TRUNCATE, whoever asks."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from tests.factories import make_tenant, notification, post_signed
from worker import processing

pytestmark = pytest.mark.postgres

STATEMENTS = [
    "UPDATE events SET type = 'app.created'",
    "DELETE FROM events",
    "TRUNCATE events",
    "UPDATE event_subjects SET entity_id = 'x'",
    "DELETE FROM event_subjects",
    "TRUNCATE event_subjects",
]


@pytest.fixture
def recorded(postgres_url, app, client, database, settings, publisher):
    tenant = make_tenant(database, settings)
    post_signed(client, tenant, notification())
    processing.process_notifications(database, publisher.messages[0], 1)
    return postgres_url


@pytest.fixture
def settings(settings, postgres_url):
    import dataclasses

    return dataclasses.replace(settings, database_url=postgres_url)


class TestAppendOnly:
    @pytest.mark.parametrize("statement", STATEMENTS)
    def test_changing_the_log_is_refused(self, recorded, statement):
        engine = create_engine(recorded)
        with engine.connect() as connection, pytest.raises(ProgrammingError, match="append-only"):
            connection.execute(text(statement))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM events")).scalar() == 1
        engine.dispose()
