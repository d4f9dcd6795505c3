"""Two builds of one export in the database store: attempts never mix, the winner's stays.

Beat's sweeper restarts an export whose heartbeat went quiet while its first build may still
be writing chunks. Each build writes an attempt of its own; only the attempt that the
succeeding transaction names is served, and the one that lost removes its own chunks.
"""

from __future__ import annotations

from storage import blobs
from storage.models import Export
from tests.e2e.test_exports import stored_chunks
from tests.integration.test_export_races import ClockThatInterleaves, build, export_id, stored
from worker import exports as worker_exports

__all__ = ["export_id"]  # the fixture, shared with the filesystem store's races


def downloaded(client, database, export_id: str) -> bytes:
    with database.unit_of_work() as session:
        export = session.get(Export, export_id)
        assert export is not None
    assert export.file_path is not None and export.file_path.startswith("db:")
    found = blobs.open_file(database, export_id, export.file_path)
    assert found is not None
    return b"".join(found.chunks())


class TestARestartedBuildNeverMixesWithTheOriginal:
    def test_the_original_finishing_later_leaves_the_winners_chunks_alone(
        self, client, database, settings, export_id, monkeypatch
    ):
        monkeypatch.setattr(worker_exports, "PROGRESS_EVERY_ROWS", 1)  # a clock reading a row
        monkeypatch.setattr(worker_exports.blobs, "CHUNK_BYTES", 200)  # many chunks each
        winner: dict[str, object] = {}

        def restart() -> None:
            winner["status"] = build(database, settings, export_id)
            winner["file_path"] = stored(database, export_id).file_path
            winner["bytes"] = downloaded(client, database, export_id)
            winner["chunks"] = stored_chunks(database, export_id)

        original = build(database, settings, export_id, ClockThatInterleaves(3, restart))
        assert winner["status"] == "succeeded"
        assert original == "succeeded"  # what it found, having stopped
        after = stored(database, export_id)
        assert after.file_path == winner["file_path"]
        assert downloaded(client, database, export_id) == winner["bytes"]
        # Only the winner's attempt is left: the original removed what it had written.
        assert stored_chunks(database, export_id) == winner["chunks"]
        assert {attempt for attempt, _, _ in stored_chunks(database, export_id)} == {
            str(after.file_path)[len("db:") :]
        }
        body = bytes(winner["bytes"])  # type: ignore[call-overload]
        assert len(body) > 200 * 3 and body.decode("utf-8-sig").count("\n") == 21
