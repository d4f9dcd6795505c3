"""Fixtures shared by every layer of the suite.

Storage-backed tests run twice, on SQLite and on PostgreSQL. PostgreSQL and Redis come from
``DATABASE_URL`` / ``REDIS_URL`` (``.ci/run`` sets them) or the local defaults; a test that
needs one of them fails when it is not answering, it never skips.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text

from storage.db import Database
from storage.migrate import upgrade
from storage.models import Base
from storage.settings import Settings, normalise_database_url
from tests.factories import RecordingPublisher, make_settings

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Property tests that do not set their own count take it from the profile: `make test` runs
# a few hundred examples each, CI (`HYPOTHESIS_PROFILE=slow`, set by .ci/run) thousands.
hypothesis_settings.register_profile("dev", max_examples=300)
hypothesis_settings.register_profile(
    "slow", max_examples=2000, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def postgres_admin_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql")):
        url = DEFAULT_POSTGRES_URL
    return normalise_database_url(url)


def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "") or DEFAULT_REDIS_URL
    return url


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database of this session's own, dropped at the end."""
    admin_url = postgres_admin_url()
    name = f"auditlog_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    database = Database(url)
    upgrade(database)
    database.engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "auditlog.sqlite3"
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    with database.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    database.engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "auditlog.sqlite3"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def postgres_url(postgres_template: str) -> str:
    """The session's PostgreSQL database, emptied."""
    engine = create_engine(postgres_template)
    with engine.begin() as connection:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        # The log refuses TRUNCATE (append-only triggers); a test database may be wiped.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return postgres_template


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "var", database_url=database_url)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.engine.dispose()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def app(settings: Settings, database: Database, publisher: RecordingPublisher):  # type: ignore[no-untyped-def]
    from api.app import create_app

    return create_app(settings, database=database, publish=publisher)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()
