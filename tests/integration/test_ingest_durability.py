"""A 202 on the embedded SQLite default survives power loss: every connection syncs fully.

In WAL mode ``synchronous=NORMAL`` syncs the log only at checkpoints, so the inbox commit
behind a 202 could vanish with the power; ``FULL`` (2) syncs it at every commit.
"""

from __future__ import annotations

from contextlib import ExitStack

from api.app import create_app
from tests.factories import RecordingPublisher, make_settings

FULL = 2


class TestSqliteDurability:
    def test_every_connection_of_the_apps_database_syncs_every_commit(self, tmp_path):
        settings = make_settings(tmp_path / "var")
        assert settings.database_url.startswith("sqlite:")
        app = create_app(settings, publish=RecordingPublisher())
        database = app.extensions["auditlog"].database
        try:
            with ExitStack() as stack:
                # Several at once, so that each is a connection of its own from the pool.
                connections = [stack.enter_context(database.engine.connect()) for _ in range(3)]
                for connection in connections:
                    assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
                    assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            with database.unit_of_work(write=True) as session:
                pragma = session.connection().exec_driver_sql("PRAGMA synchronous").scalar()
                assert pragma == FULL
        finally:
            database.engine.dispose()
