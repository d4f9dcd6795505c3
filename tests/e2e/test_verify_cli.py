"""``auditlog verify``: an export file proved offline with its evidence and the log's key.

The exports are built end to end (signed webhooks, the worker's processing, the sequencer,
the API, ``build_export``) once per module on SQLite; the checks themselves are offline, so
each test tampers with a copy and runs ``api.cli.main`` in-process. One test builds on
each database and one runs the installed ``auditlog`` with no database configured.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.cli import main
from storage import notes
from storage.db import Database
from storage.settings import Settings
from tests.factories import console_story, make_settings, make_tenant, notification, record_now
from worker.exports import build_export
from worker.sequencer import sequence_pending

AUDITLOG = str(Path(sys.executable).parent / "auditlog")
FILTERED = {"entity_type": "person"}


@dataclass
class Built:
    """A downloaded export, its evidence and the log's key, as a verifier gets them."""

    kind: str
    data: bytes
    evidence: dict[str, Any]
    vkey: str

    @property
    def fmt(self) -> str:
        return str(self.evidence["export_format"])

    @property
    def size(self) -> int:
        return int(self.evidence["tree_size"])

    def lines(self) -> list[str]:
        return self.data.decode("utf-8").split("\n")[:-1]

    def events(self) -> list[dict[str, Any]]:
        """The file's event objects in file order (CSV: the evidence's)."""
        if self.fmt == "jsonl":
            return [json.loads(line) for line in self.lines()]
        return list(self.evidence["events"])


def story() -> list[dict[str, Any]]:
    """The console's story, and two events at the very same instant (ordered by id)."""
    same = "2026-11-28T09:00:00Z"
    return console_story() + [
        notification("person", "p-twin-1", occurred_at=same, properties={"name": "Twin One"}),
        notification("app", "a-twin-2", occurred_at=same, properties={"name": "Twin Two"}),
    ]


def build_all(client: Any, database: Database, settings: Settings) -> dict[str, Built]:
    tenant = make_tenant(database, settings)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    record_now(client, tenant, database, *story())
    sequence_pending(database, settings)
    # Recorded after the sequencer ran: the builds must number them themselves.
    record_now(client, tenant, database, notification("person", "p-late"))
    built = {}
    for kind, body in [
        ("jsonl-complete", {"format": "jsonl"}),
        ("jsonl-filtered", {**FILTERED, "format": "jsonl"}),
        ("csv-complete", {}),
        ("csv-filtered", FILTERED),
    ]:
        response = client.post("/v1/exports", json=body, headers=headers)
        assert response.status_code == 202, response.get_json()
        export_id = response.get_json()["id"]
        status = build_export(
            database,
            export_id,
            settings.export_dir,
            settings.export_ttl_seconds,
            settings=settings,
        )
        assert status == "succeeded"
        with client.get(f"/v1/exports/{export_id}/download", headers=headers) as download:
            assert download.status_code == 200
            data = download.data
        evidence = client.get(f"/v1/exports/{export_id}/evidence", headers=headers)
        assert evidence.status_code == 200, evidence.get_json()
        keys = client.get("/v1/log/keys").get_json()["keys"]
        (vkey,) = [key["vkey"] for key in keys if key["retired_at"] is None]
        built[kind] = Built(kind, data, evidence.get_json(), vkey)
    return built


ORIGIN = "audit.example.test"


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict[str, Built]:
    folder = tmp_path_factory.mktemp("verify")
    shutil.copyfile(sqlite_template, folder / "auditlog.sqlite3")
    settings = make_settings(
        folder / "var",
        database_url=f"sqlite:///{folder / 'auditlog.sqlite3'}",
        log_origin=ORIGIN,
    )
    database = Database(settings.database_url)
    app = create_app(
        settings, database=database, publish=lambda pks: None, start_export=lambda export_id: None
    )
    try:
        return build_all(app.test_client(), database, settings)
    finally:
        database.engine.dispose()


@pytest.fixture
def app(settings, database, publisher):
    """Exports are built by the test itself, not queued."""
    return create_app(
        settings, database=database, publish=publisher, start_export=lambda export_id: None
    )


@pytest.fixture
def verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Run ``auditlog verify`` in-process on the given file bytes and evidence."""

    def verify(
        data: bytes, evidence: dict[str, Any], vkey: str, fmt: str = "jsonl", *extra: str
    ) -> tuple[int, str, str]:
        export_file = tmp_path / f"export.{fmt}"
        export_file.write_bytes(data)
        evidence_file = tmp_path / "evidence.json"
        evidence_file.write_text(json.dumps(evidence), encoding="utf-8")
        code = main(
            ["verify", str(export_file), "--evidence", str(evidence_file), "--key", vkey, *extra]
        )
        out, err = capsys.readouterr()
        return code, out, err

    return verify


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return "".join(
        json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events
    ).encode()


def assert_fails(result: tuple[int, str, str], *expected: str) -> None:
    code, out, err = result
    assert code == 1, (out, err)
    assert out == ""
    for text in expected:
        assert text in err, err
    assert err.rstrip("\n").split("\n")[-1].startswith("auditlog verify: "), err


class TestExportsAsBuilt:
    @pytest.mark.parametrize(
        "kind", ["jsonl-complete", "jsonl-filtered", "csv-complete", "csv-filtered"]
    )
    def test_an_untouched_file_verifies(self, exports, verify, kind):
        built = exports[kind]
        code, out, err = verify(built.data, built.evidence, built.vkey, built.fmt)
        assert (code, err) == (0, "")
        complete = kind.endswith("complete")
        rows = len(built.events())
        assert json.loads(out) == {
            "verified": rows,
            "tree_size": built.size,
            "complete": complete,
            "origin": f"{ORIGIN}/{built.evidence['org_id']}",
        }
        if complete:
            assert sorted(e["seq"] for e in built.events()) == list(range(1, built.size + 1))
        else:
            assert 0 < rows < built.size
            assert {e["entity"]["type"] for e in built.events()} == {"person"}

    def test_origin_and_completeness_can_be_required(self, exports, verify):
        whole, part = exports["jsonl-complete"], exports["jsonl-filtered"]
        log = f"{ORIGIN}/{whole.evidence['org_id']}"
        assert verify(whole.data, whole.evidence, whole.vkey, "jsonl", "--origin", log)[0] == 0
        assert verify(whole.data, whole.evidence, whole.vkey, "jsonl", "--complete")[0] == 0
        code, out, err = verify(whole.data, whole.evidence, whole.vkey, "jsonl", "--origin", "x/y")
        assert (code, out) == (1, "") and f"it is the log {log}, not x/y" in err
        code, out, err = verify(part.data, part.evidence, part.vkey, "jsonl", "--complete")
        assert (code, out) == (1, "") and "not the whole log" in err

    def test_the_late_event_is_in_every_export(self, exports):
        for built in exports.values():
            assert "p-late" in {e["entity"]["id"] for e in built.events()}, built.kind

    def test_the_evidence_has_the_documented_shape(self, exports):
        complete, filtered = exports["jsonl-complete"].evidence, exports["csv-filtered"].evidence
        assert complete["format"] == "auditlog-evidence/1"
        assert (complete["complete"], complete["filters"]) == (True, {})
        assert len(complete["leaf_hashes"]) == complete["tree_size"]
        assert "rows" not in complete and "events" not in complete
        assert (filtered["complete"], filtered["filters"]) == (False, FILTERED)
        assert [row["line"] for row in filtered["rows"]] == list(
            range(1, len(filtered["rows"]) + 1)
        )
        assert [row["seq"] for row in filtered["rows"]] == [e["seq"] for e in filtered["events"]]
        assert "leaf_hashes" not in filtered


def tampered_lines(
    change: Callable[[list[dict[str, Any]]], None],
) -> Callable[[Built], bytes]:
    def apply(built: Built) -> bytes:
        events = built.events()
        change(events)
        return jsonl(events)

    return apply


class TestJsonlTampering:
    @pytest.fixture(params=["jsonl-complete", "jsonl-filtered"])
    def built(self, request, exports) -> Built:
        return exports[request.param]

    def test_a_changed_cell_names_its_row(self, built, verify):
        events = built.events()
        events[1]["entity"]["name"] = "Mallory"
        result = verify(jsonl(events), built.evidence, built.vkey)
        assert_fails(result, f"line 2 (seq {events[1]['seq']}): ", "(altered)")
        assert result[2].count("line ") == 1  # that row only

    def test_a_deleted_row_is_missing(self, built, verify):
        events = built.events()
        gone = events.pop(2)
        assert_fails(
            verify(jsonl(events), built.evidence, built.vkey),
            f"seq {gone['seq']}: missing from the file",
        )

    def test_a_duplicated_row_is_named(self, built, verify):
        events = built.events()
        events.insert(2, events[1])
        assert_fails(
            verify(jsonl(events), built.evidence, built.vkey),
            f"line 3 (seq {events[1]['seq']}): a duplicate of line 2",
        )

    def test_swapped_rows_are_out_of_order(self, built, verify):
        events = built.events()
        events[1], events[2] = events[2], events[1]
        assert_fails(
            verify(jsonl(events), built.evidence, built.vkey),
            f"line 3 (seq {events[2]['seq']}): out of the log's order",
        )

    def test_an_inserted_forged_row_is_named(self, built, verify):
        events = built.events()
        forged = json.loads(json.dumps(events[0]))
        forged.update(id="evt_7fffffffffffffff", occurred_at="2030-01-01T00:00:00Z")
        forged["seq"] = built.size + 1
        events.insert(0, forged)
        assert_fails(
            verify(jsonl(events), built.evidence, built.vkey),
            f"line 1 (seq {built.size + 1}): its seq is not a seq of the signed tree",
        )

    def test_a_row_taken_from_outside_the_export_is_named(self, exports, verify):
        built = exports["jsonl-filtered"]
        mine = {e["seq"] for e in built.events()}
        outsider = next(e for e in exports["jsonl-complete"].events() if e["seq"] not in mine)
        events = sorted(
            built.events() + [outsider], key=lambda e: (e["occurred_at"], e["id"]), reverse=True
        )
        line = events.index(outsider) + 1
        assert_fails(
            verify(jsonl(events), built.evidence, built.vkey),
            f"line {line} (seq {outsider['seq']}): not a row of this export",
        )

    def test_a_truncated_file_is_named(self, built, verify):
        events = built.events()
        cut = built.data[: len(built.data) - len(built.lines()[-1]) // 2 - 1]
        assert_fails(
            verify(cut, built.evidence, built.vkey),
            f"line {len(events)} (seq ?): not a JSON object",
            f"seq {events[-1]['seq']}: missing from the file",
        )
        shorter = jsonl(events[:-2])
        assert_fails(
            verify(shorter, built.evidence, built.vkey),
            f"seq {events[-2]['seq']}: missing from the file",
            f"seq {events[-1]['seq']}: missing from the file",
        )

    def test_an_empty_file_misses_every_row(self, built, verify):
        code, _, err = verify(b"", built.evidence, built.vkey)
        assert code == 1 and err.count("missing from the file") == len(built.events())

    def test_a_proof_or_leaf_hash_altered_in_the_evidence_fails(self, built, verify):
        evidence = json.loads(json.dumps(built.evidence))
        zero = base64.b64encode(bytes(32)).decode()
        if built.kind.endswith("complete"):
            evidence["leaf_hashes"][0] = zero
            code, out, err = verify(built.data, evidence, built.vkey)
            assert (code, out) == (1, "")
            assert err == "evidence: its leaf hashes do not rebuild the checkpoint's root\n"
        else:
            evidence["rows"][1]["proof"][0] = zero
            seq = evidence["rows"][1]["seq"]
            assert_fails(
                verify(built.data, evidence, built.vkey),
                f"line 2 (seq {seq}): not in the signed tree",
            )


def with_checkpoint(built: Built, change: Callable[[list[str]], None]) -> dict[str, Any]:
    evidence = json.loads(json.dumps(built.evidence))
    lines = evidence["checkpoint"].split("\n")
    change(lines)
    evidence["checkpoint"] = "\n".join(lines)
    return evidence


def signature_index(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith("\u2014 "))


class TestCheckpointAndKey:
    @pytest.fixture(params=["jsonl-complete", "csv-filtered"])
    def built(self, request, exports) -> Built:
        return exports[request.param]

    def run(self, verify, built: Built, evidence: dict[str, Any], vkey: str | None = None):
        code, out, err = verify(built.data, evidence, vkey or built.vkey, built.fmt)
        assert (code, out) == (1, ""), err
        return err

    def test_an_altered_size_breaks_the_signature(self, built, verify):
        def grow(lines: list[str]) -> None:
            lines[1] = str(int(lines[1]) + 1)

        err = self.run(verify, built, with_checkpoint(built, grow))
        assert err.startswith("checkpoint: the signature by ") and "does not verify" in err

    def test_an_altered_root_breaks_the_signature(self, built, verify):
        def reroot(lines: list[str]) -> None:
            lines[2] = base64.b64encode(bytes(32)).decode()

        err = self.run(verify, built, with_checkpoint(built, reroot))
        assert err.startswith("checkpoint: the signature by ") and "does not verify" in err

    def test_an_altered_signature_does_not_verify(self, built, verify):
        def flip(lines: list[str]) -> None:
            at = signature_index(lines)
            name, blob = lines[at].rsplit(" ", 1)
            raw = bytearray(base64.b64decode(blob))
            raw[20] ^= 0x01  # inside the Ed25519 signature, after the 4-byte key id
            lines[at] = f"{name} {base64.b64encode(bytes(raw)).decode()}"

        err = self.run(verify, built, with_checkpoint(built, flip))
        assert err.startswith("checkpoint: the signature by ") and "does not verify" in err

    def test_a_tree_size_other_than_the_checkpoints_fails(self, built, verify):
        evidence = json.loads(json.dumps(built.evidence))
        evidence["tree_size"] += 1
        err = self.run(verify, built, evidence)
        assert f"checkpoint: it is of size {built.size}, the evidence says tree_size" in err

    def test_an_unknown_key_is_named(self, built, verify):
        stranger = notes.NoteSigner(notes.generate_key("someone-else")).vkey
        err = self.run(verify, built, built.evidence, stranger)
        assert err.startswith("checkpoint: not signed by the given key someone-else+")

    def test_a_malformed_key_or_evidence_fails_cleanly(self, built, verify):
        assert self.run(verify, built, built.evidence, "not-a-key").startswith("key: ")
        assert self.run(verify, built, {"format": "other"}).startswith("evidence: ")


def csv_bytes(records: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(records)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def csv_records(built: Built) -> list[list[str]]:
    return list(csv.reader(io.StringIO(built.data.decode("utf-8")[1:], newline="")))


class TestCsvTampering:
    """CSV cells do not hold the whole event: the evidence carries each row's event object,
    whose leaf is proved, and each row must be the cells rendered from it."""

    @pytest.fixture(params=["csv-complete", "csv-filtered"])
    def built(self, request, exports) -> Built:
        return exports[request.param]

    def check(self, verify, built: Built, data: bytes, evidence: dict[str, Any] | None = None):
        return verify(data, evidence or built.evidence, built.vkey, "csv")

    def test_rewriting_the_same_cells_still_verifies(self, built, verify):
        code, out, err = self.check(verify, built, csv_bytes(csv_records(built)))
        assert (code, err) == (0, "") and json.loads(out)["verified"] == len(built.events())

    def test_a_changed_cell_names_its_row_and_column(self, built, verify):
        records = csv_records(built)
        records[2][5] = "Mallory"  # entity_name of the second row, line 3
        assert_fails(
            self.check(verify, built, csv_bytes(records)),
            f"line 3 (seq {built.events()[1]['seq']}): entity_name differs from the signed event",
        )

    def test_a_deleted_row_is_missing(self, built, verify):
        records = csv_records(built)
        del records[3]
        assert_fails(
            self.check(verify, built, csv_bytes(records)),
            f"seq {built.events()[2]['seq']}: missing from the file",
        )

    def test_a_duplicated_row_is_named(self, built, verify):
        records = csv_records(built)
        records.insert(3, records[2])
        assert_fails(
            self.check(verify, built, csv_bytes(records)),
            f"line 4 (seq {built.events()[1]['seq']}): a duplicate of line 3",
        )

    def test_swapped_rows_are_out_of_order(self, built, verify):
        records = csv_records(built)
        records[1], records[2] = records[2], records[1]
        assert_fails(
            self.check(verify, built, csv_bytes(records)),
            f"line 3 (seq {built.events()[0]['seq']}): out of the log's order",
        )

    def test_a_forged_row_is_named(self, built, verify):
        records = csv_records(built)
        forged = list(records[1])
        forged[0], forged[-1] = "2030-01-01T00:00:00Z", "evt_7fffffffffffffff"
        records.insert(1, forged)
        assert_fails(
            self.check(verify, built, csv_bytes(records)),
            "line 2 (seq ?): event 'evt_7fffffffffffffff' is not in the evidence",
        )

    def test_a_forged_row_with_its_forged_event_is_named(self, built, verify):
        evidence = json.loads(json.dumps(built.evidence))
        evidence["events"][0]["entity"]["name"] = "Mallory"
        records = csv_records(built)
        records[1][5] = "Mallory"
        assert_fails(
            self.check(verify, built, csv_bytes(records), evidence),
            f"line 2 (seq {built.events()[0]['seq']}): ",
        )

    def test_a_truncated_file_is_named(self, built, verify):
        cut = built.data[: len(built.data) - 10]
        assert_fails(
            self.check(verify, built, cut),
            f"seq {built.events()[-1]['seq']}: missing from the file",
        )


class TestOnEachDatabase:
    def test_a_jsonl_and_a_csv_export_verify_and_a_change_is_named(
        self, client, database, settings, verify
    ):
        built = build_all(client, database, settings)
        for kind in ("jsonl-complete", "csv-filtered"):
            code, out, err = verify(
                built[kind].data, built[kind].evidence, built[kind].vkey, built[kind].fmt
            )
            assert (code, err) == (0, ""), kind
        events = built["jsonl-filtered"].events()
        events[0]["new_value"] = "tampered"
        assert_fails(
            verify(jsonl(events), built["jsonl-filtered"].evidence, built["jsonl-filtered"].vkey),
            f"line 1 (seq {events[0]['seq']}): not in the signed tree",
        )


class TestInstalledCommand:
    def test_it_needs_no_database_nor_settings(self, exports, tmp_path):
        built = exports["jsonl-complete"]
        export_file, evidence_file = tmp_path / "export.jsonl", tmp_path / "evidence.json"
        export_file.write_bytes(built.data)
        evidence_file.write_text(json.dumps(built.evidence), encoding="utf-8")
        empty = tmp_path / "empty"
        empty.mkdir()
        command = [AUDITLOG, "verify", str(export_file), "--evidence", str(evidence_file)]
        env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
        result = subprocess.run(
            [*command, "--key", built.vkey],
            env=env,
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["verified"] == len(built.events())
        assert list(empty.iterdir()) == []  # no var/, no secret key, no SQLite file
        export_file.write_bytes(jsonl(built.events()[1:]))
        failed = subprocess.run(
            [*command, "--key", built.vkey],
            env=env,
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 1 and failed.stdout == ""
        assert f"seq {built.events()[0]['seq']}: missing from the file" in failed.stderr
