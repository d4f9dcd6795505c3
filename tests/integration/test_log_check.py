"""``auditlog log check`` and ``auditlog log rotate-key`` against real databases.

The check recomputes every leaf from the stored events and every checkpoint's root. The
tampering is what the append-only triggers exist to stop: on PostgreSQL it is done as the
database owner with triggers disabled (``session_replication_role = replica``); SQLite has
no triggers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from api.cli import main
from tests.factories import make_tenant, notification, record_now
from worker import sequencer


@pytest.fixture
def cli(settings, monkeypatch, capsys):
    """``auditlog`` in-process with the test's settings in the environment."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("AUDITLOG_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("LOG_ORIGIN", settings.log_origin)
    monkeypatch.delenv("LOG_SIGNING_KEY", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def auth(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


def checkpoint_now(database, settings) -> None:
    """Sequence what is pending and sign every grown tree at once."""
    sequencer.sequence_pending(database, settings)
    with database.unit_of_work(write=True) as session:
        sequencer.sign_due_checkpoints(session, settings, datetime.now(UTC), every=timedelta(0))
        session.commit()


@pytest.fixture
def logged(client, database, settings):
    """Two organisations, each with events and checkpoints at several sizes."""
    tenants = [make_tenant(database, settings), make_tenant(database, settings)]
    for round_ in range(3):
        for tenant in tenants:
            record_now(
                client,
                tenant,
                database,
                *[
                    notification("person", f"p-{round_}-{i}", properties={"name": f"N {i}"})
                    for i in range(3)
                ],
            )
        checkpoint_now(database, settings)
    return tenants


def feed(client, tenant) -> list[dict]:
    return client.get("/v1/feed?after=0&limit=1000", headers=auth(tenant)).get_json()["events"]


def count_checkpoints(database) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM log_checkpoints")).scalar_one())


def tamper(database_url: str, statement: str, **params) -> None:
    """Change a stored row behind the service's back (as the database owner)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(statement), params)
    finally:
        engine.dispose()


def json_value(database_url: str) -> str:
    return "CAST(:value AS jsonb)" if database_url.startswith("postgresql") else ":value"


class TestLogCheck:
    def test_an_untouched_log_checks_out(self, cli, logged, client, database):
        code, out, err = cli("log", "check")
        assert (code, err) == (0, ""), err
        events = sum(len(feed(client, tenant)) for tenant in logged)
        assert json.loads(out) == {
            "organisations": 2,
            "events": events,
            "checkpoints": count_checkpoints(database),
        }
        code, out, _ = cli("log", "check", "--org", logged[0].org_id)
        assert code == 0
        assert json.loads(out)["organisations"] == 1
        assert json.loads(out)["events"] == len(feed(client, logged[0]))

    def test_an_edited_event_is_named(self, cli, logged, client, settings):
        victim, other = logged
        events = feed(client, victim)
        first, later = events[4], events[7]
        for event in (later, first):
            tamper(
                settings.database_url,
                f"UPDATE events SET new_value = {json_value(settings.database_url)} WHERE id = :id",
                value=json.dumps("tampered"),
                id=int(event["id"][4:], 16),
            )
        code, out, err = cli("log", "check")
        assert (code, out) == (1, "")
        lines = err.rstrip("\n").split("\n")
        assert lines[0] == (
            f"event {first['id']} (seq {first['seq']}) in {victim.org_id}: "
            "stored content no longer matches its leaf"
        )
        assert len(lines) == 2 and lines[1].startswith("auditlog log check: 1 of 2 ")
        assert cli("log", "check", "--org", other.org_id)[0] == 0

    def test_an_edited_name_in_the_oldest_event_is_named(self, cli, logged, client, settings):
        victim = logged[1]
        oldest = feed(client, victim)[0]
        tamper(
            settings.database_url,
            "UPDATE events SET entity_name = 'Mallory' WHERE id = :id",
            id=int(oldest["id"][4:], 16),
        )
        code, _, err = cli("log", "check", "--org", victim.org_id)
        assert code == 1
        assert f"event {oldest['id']} (seq 1) in {victim.org_id}: stored content" in err

    def test_a_checkpoint_whose_root_was_changed_is_named(self, cli, logged, settings):
        tenant = logged[0]
        tamper(
            settings.database_url,
            "UPDATE log_checkpoints SET root_hash = :root WHERE org_id = :org AND tree_size = "
            "(SELECT min(tree_size) FROM log_checkpoints WHERE org_id = :org)",
            root=bytes(32),
            org=tenant.org_id,
        )
        code, _, err = cli("log", "check")
        assert code == 1
        first = err.split("\n")[0]
        assert first.startswith("checkpoint of size ") and f" in {tenant.org_id}: " in first
        assert first.endswith("its root does not match the tree of the stored events")

    def test_a_leaf_whose_event_is_gone_is_named(self, cli, logged, client, settings):
        tenant = logged[0]
        gone = feed(client, tenant)[2]
        tamper(
            settings.database_url, "DELETE FROM events WHERE id = :id", id=int(gone["id"][4:], 16)
        )
        code, _, err = cli("log", "check")
        assert code == 1
        assert f"event {gone['id']} (seq {gone['seq']}) in {tenant.org_id}: its stored row" in err

    def test_an_unknown_organisation_fails(self, cli, logged):
        code, out, err = cli("log", "check", "--org", "org_missing")
        assert (code, out) == (1, "")
        assert "does not exist" in err

    def test_an_empty_store_checks_out(self, cli):
        code, out, _ = cli("log", "check")
        assert code == 0
        assert json.loads(out) == {"organisations": 0, "events": 0, "checkpoints": 0}

    def test_unsequenced_events_are_not_yet_part_of_the_check(self, cli, logged, client, database):
        record_now(client, logged[0], database, notification())
        code, out, _ = cli("log", "check")
        assert code == 0
        assert json.loads(out)["events"] == sum(len(feed(client, tenant)) for tenant in logged)


class TestRotateKey:
    def test_rotation_lists_both_keys_and_old_checkpoints_still_check(
        self, cli, logged, client, database, settings
    ):
        before = client.get("/v1/log/keys").get_json()["keys"]
        assert [key["retired_at"] for key in before] == [None]
        code, out, err = cli("log", "rotate-key")
        assert code == 0, err
        rotated = json.loads(out)
        assert set(rotated) == {"key_id", "vkey"}
        after = {key["key_id"]: key for key in client.get("/v1/log/keys").get_json()["keys"]}
        assert set(after) == {before[0]["key_id"], rotated["key_id"]}
        assert after[before[0]["key_id"]]["retired_at"] is not None
        assert after[rotated["key_id"]]["retired_at"] is None
        assert after[rotated["key_id"]]["vkey"] == rotated["vkey"]
        assert rotated["vkey"].split("+")[1] == rotated["key_id"]
        # New checkpoints are signed with the new key; the old ones still verify.
        record_now(client, logged[0], database, notification())
        checkpoint_now(database, settings)
        latest = client.get("/v1/log/checkpoint", headers=auth(logged[0])).get_json()
        assert f" {rotated['vkey'].split('+')[0]} " in latest["checkpoint"]
        from storage import notes

        notes.open_note(latest["checkpoint"], [notes.NoteVerifier(rotated["vkey"])])
        assert cli("log", "check")[0] == 0

    def test_a_configured_signing_key_is_not_rotated(self, cli, monkeypatch):
        from storage import notes

        monkeypatch.setenv("LOG_SIGNING_KEY", notes.generate_key("configured"))
        code, out, err = cli("log", "rotate-key")
        assert (code, out) == (1, "")
        assert "LOG_SIGNING_KEY" in err
