"""Two builds of one export, or a late failure after success: the first success stands.

Beat's sweeper restarts an export whose heartbeat went quiet, even if its first build is
still running; a task retried after a failure may arrive once another build succeeded.
Whatever the interleaving, a ``succeeded`` export stays succeeded with its file as written,
and the build that lost stops, leaving no file of its own behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.models import Export
from tests.e2e.test_read_api import auth, deliver
from tests.factories import make_tenant, notification
from worker import exports as worker_exports
from worker.exports import build_export, fail_export


class ClockThatInterleaves:
    """The builder's clock, which runs ``meanwhile`` once, at its ``at``-th reading."""

    def __init__(self, at: int, meanwhile: Callable[[], None]) -> None:
        self.readings, self.at, self.meanwhile = 0, at, meanwhile

    def __call__(self) -> datetime:
        self.readings += 1
        if self.readings == self.at:
            self.meanwhile()
        return datetime.now(UTC)


@pytest.fixture
def settings(settings):
    """Files renamed into place: the filesystem store (test_export_store_races: the database's)."""
    return dataclasses.replace(settings, export_storage="filesystem")


@pytest.fixture
def export_id(client, database, settings, publisher) -> str:
    tenant = make_tenant(database, settings)
    deliver(
        client,
        tenant,
        publisher,
        database,
        [notification("person", f"p{i}") for i in range(20)],
    )
    response = client.post("/v1/exports", json={}, headers=auth(tenant))
    assert response.status_code == 202, response.json
    return str(response.json["id"])


def stored(database, export_id: str) -> Export:
    with database.unit_of_work() as session:
        export = session.get(Export, export_id)
        assert export is not None
        return export


def build(database, settings, export_id: str, clock: Callable[[], datetime] | None = None) -> str:
    if clock is None:
        return build_export(
            database, export_id, settings.export_dir, settings.export_ttl_seconds, settings=settings
        )
    return build_export(
        database,
        export_id,
        settings.export_dir,
        settings.export_ttl_seconds,
        clock=clock,
        settings=settings,
    )


def files_of(folder: Path, export_id: str) -> list[str]:
    return sorted(path.name for path in folder.glob(f"{export_id}*"))


class TestASucceededExportNeverTurnsFailed:
    def test_a_failure_reported_after_success_changes_nothing(self, database, settings, export_id):
        assert build(database, settings, export_id) == "succeeded"
        before = stored(database, export_id)
        fail_export(database, export_id, "a retried task gave up", datetime.now(UTC))
        after = stored(database, export_id)
        assert (after.status, after.error, after.finished_at) == (
            "succeeded",
            None,
            before.finished_at,
        )

    def test_a_build_started_again_after_success_changes_nothing(
        self, database, settings, export_id
    ):
        assert build(database, settings, export_id) == "succeeded"
        before = stored(database, export_id)
        assert build(database, settings, export_id) == "succeeded"
        after = stored(database, export_id)
        assert (after.started_at, after.finished_at) == (before.started_at, before.finished_at)


class TestARestartedBuildNeverRacesTheOriginal:
    def test_the_original_finishing_later_leaves_the_winners_file_alone(
        self, database, settings, export_id, monkeypatch
    ):
        """The sweeper's restart runs to success while the original is writing rows."""
        monkeypatch.setattr(worker_exports, "PROGRESS_EVERY_ROWS", 1)  # a clock reading a row
        winner: dict[str, object] = {}

        def restart() -> None:
            winner["status"] = build(database, settings, export_id)
            final = settings.export_dir / f"{export_id}.csv"
            winner["inode"], winner["bytes"] = final.stat().st_ino, final.read_bytes()
            winner["finished_at"] = stored(database, export_id).finished_at

        original = build(database, settings, export_id, ClockThatInterleaves(3, restart))
        assert winner["status"] == "succeeded"
        assert original == "succeeded"  # what it found, having stopped
        final = settings.export_dir / f"{export_id}.csv"
        assert (final.stat().st_ino, final.read_bytes()) == (winner["inode"], winner["bytes"])
        assert files_of(settings.export_dir, export_id) == [f"{export_id}.csv"]
        after = stored(database, export_id)
        assert (after.status, after.finished_at, after.rows_written) == (
            "succeeded",
            winner["finished_at"],
            20,
        )
