"""The ``auditlog`` console script through a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from storage import accounts
from storage.credentials import SecretBox, hash_api_key
from storage.models import ApiKey, Notification, Source
from tests.factories import make_tenant, notification, post_signed

AUDITLOG = str(Path(sys.executable).parent / "auditlog")


@pytest.fixture
def run(settings, tmp_path):
    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": settings.database_url,
            "AUDITLOG_VAR_DIR": str(settings.var_dir),
            "SECRET_KEY": settings.secret_key,
            # An unreachable broker: publishing must fail fast and harmlessly.
            "REDIS_URL": "redis://127.0.0.1:1/0",
        }
        result = subprocess.run(
            [AUDITLOG, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert (result.returncode == 0) == ok, result.stderr
        return result

    return run


@pytest.fixture
def run_here(settings, monkeypatch, capsys):
    """``run``, in this process (``api.cli.main``): the same arguments, output and exit
    code, without a Python start per command; ``run`` covers the installed script."""
    from api.cli import main

    for name, value in {
        "DATABASE_URL": settings.database_url,
        "AUDITLOG_VAR_DIR": str(settings.var_dir),
        "SECRET_KEY": settings.secret_key,
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }.items():
        monkeypatch.setenv(name, value)

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert (code == 0) == ok, err
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


def output(result: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(result.stdout)


class TestCommands:
    def test_db_upgrade_is_safe_to_run_again(self, run):
        assert output(run("db", "upgrade")) == {"revision": "0007"}
        assert output(run("db", "upgrade")) == {"revision": "0007"}

    def test_orgs_keys_and_sources(self, run, database, settings):
        org = output(run("orgs", "create", "Acme Corp"))
        assert set(org) == {"org_id", "api_key"}
        key = output(run("keys", "create", org["org_id"], "--name", "auditors"))
        assert set(key) == {"key_id", "api_key"}
        source = output(run("sources", "create", org["org_id"], "Okta"))
        assert source["secret"].startswith("whsec_")
        assert output(run("keys", "revoke", key["key_id"])) == {
            "key_id": key["key_id"],
            "revoked": True,
        }
        with database.unit_of_work() as session:
            stored = session.get(ApiKey, key["key_id"])
            assert stored.key_hash == hash_api_key(key["api_key"])
            assert stored.revoked_at is not None
            sealed = session.get(Source, source["source_id"]).secret_encrypted
            assert source["secret"].encode() not in sealed
            assert SecretBox(settings.secret_key).open(sealed) == source["secret"]

    @pytest.mark.parametrize(
        "args",
        [
            ("keys", "create", "org_missing"),
            ("sources", "create", "org_missing", "x"),
            ("keys", "revoke", "key_missing"),
        ],
    )
    def test_unknown_ids_fail_on_stderr(self, run, args):
        result = run(*args, ok=False)
        assert result.stdout == ""
        assert "does not exist" in result.stderr

    def test_retry_requeues_failed_notifications(self, run, database, settings, client):
        tenant = make_tenant(database, settings)
        other = make_tenant(database, settings)
        post_signed(client, tenant, notification())
        post_signed(client, other, notification())
        with database.unit_of_work(write=True) as session:
            session.execute(update(Notification).values(status="failed", attempts=5, error="boom"))
            session.commit()
        assert output(run("notifications", "retry", "--org", tenant.org_id)) == {"requeued": 1}
        assert output(run("notifications", "retry")) == {"requeued": 1}
        assert output(run("notifications", "retry")) == {"requeued": 0}
        with database.unit_of_work() as session:
            assert set(session.scalars(select(Notification.status))) == {"queued"}


class TestOperations:
    def test_scopes_lists_rotation_disabling_and_the_access_log(self, run_here, database, settings):
        run = run_here
        org = output(run("orgs", "create", "Umbrella"))
        assert {"org_id": org["org_id"], "name": "Umbrella"}.items() <= next(
            o for o in output(run("orgs", "list"))["orgs"] if o["org_id"] == org["org_id"]
        ).items()
        reader = output(run("keys", "create", org["org_id"], "--name", "siem", "--scope", "read"))
        plain = output(run("keys", "create", org["org_id"]))
        keys = {k["key_id"]: k for k in output(run("keys", "list", org["org_id"]))["keys"]}
        assert keys[reader["key_id"]]["scopes"] == ["read"]
        assert keys[plain["key_id"]]["scopes"] == ["read", "export"]
        assert len(keys) == 3 and all(k["last_used_at"] is None for k in keys.values())
        assert "api_key" not in json.dumps(keys) and reader["api_key"] not in json.dumps(keys)

        source = output(run("sources", "create", org["org_id"], "Okta"))
        rotated = output(
            run("sources", "rotate-secret", source["source_id"], "--keep-old-for", "600")
        )
        assert rotated["source_id"] == source["source_id"]
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != source["secret"]
        disabled = output(run("sources", "disable", source["source_id"]))
        assert disabled["disabled"] is True
        (listed,) = output(run("sources", "list", org["org_id"]))["sources"]
        assert listed["source_id"] == source["source_id"]
        assert listed["disabled_at"] == disabled["disabled_at"]
        assert listed["previous_secret_expires_at"] is not None
        printed = json.dumps(output(run("sources", "list", org["org_id"])))
        assert source["secret"] not in printed and rotated["secret"] not in printed

        log = output(run("access-log", org["org_id"]))["entries"]
        assert [entry["action"] for entry in log] == [
            "source.disabled",
            "source.secret_rotated",
            "source.created",
            "key.created",
            "key.created",
            "key.created",
        ]
        only = output(
            run("access-log", org["org_id"], "--action", "source.created", "--limit", "1")
        )
        assert [entry["action"] for entry in only["entries"]] == ["source.created"]
        assert output(run("secrets", "reseal")) == {
            "resealed_source_secrets": 0,
            "resealed_log_keys": 0,
        }

    @pytest.mark.parametrize(
        "args, message",
        [
            (("keys", "create", "org_x", "--scope", "admin"), "invalid choice"),
            (("sources", "rotate-secret", "src_x", "--keep-old-for", "-1"), "negative"),
            (("sources", "rotate-secret", "src_missing"), "does not exist"),
            (("sources", "disable", "src_missing"), "does not exist"),
            (("keys", "list", "org_missing"), "does not exist"),
            (("access-log", "org_missing"), "does not exist"),
        ],
    )
    def test_bad_input_fails_on_stderr(self, run_here, args, message):
        result = run_here(*args, ok=False)
        assert result.stdout == "" and message in result.stderr

    def test_postgresql_without_secret_key_refuses_to_start(self, tmp_path):
        env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://postgres@127.0.0.1/none"}
        for command in ([AUDITLOG, "db", "upgrade"], [AUDITLOG, "orgs", "list"]):
            result = subprocess.run(
                command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 2 and result.stdout == ""
            assert "SECRET_KEY must be set" in result.stderr
            assert "Traceback" not in result.stderr
        assert not (tmp_path / "var").exists()


class TestConsoleLink:
    def test_it_prints_a_link_that_opens_a_scoped_session_once(self, run, app, database, settings):
        tenant = make_tenant(database, settings)
        link = output(
            run(
                "console-link",
                tenant.org_id,
                "--entity",
                "person/cn=ada/ou=eu",
                "--permission",
                "restore",
                "--viewer-id",
                "p-9",
                "--viewer-name",
                "Super Admin",
            )
        )
        assert set(link) == {"url", "expires_at"}
        assert link["url"].startswith(f"http://localhost:{settings.port}/console/enter/")
        client = app.test_client()
        path = link["url"].split(f"localhost:{settings.port}", 1)[1]
        opened = client.get(path)
        assert opened.status_code == 303
        assert opened.headers["Location"] == "/console/entities/person/cn=ada/ou=eu"
        assert client.get(path).status_code == 403

    @pytest.mark.parametrize(
        "args, message",
        [
            (("--permission", "restore"), "viewer"),
            (("--entity", "planet/p-1"), "entity"),
        ],
    )
    def test_a_link_it_cannot_make_fails_on_stderr(self, run, database, settings, args, message):
        tenant = make_tenant(database, settings)
        result = run("console-link", tenant.org_id, *args, ok=False)
        assert result.stdout == "" and message in result.stderr

    def test_an_unknown_organisation_fails_on_stderr(self, run):
        result = run("console-link", "org_missing", ok=False)
        assert "does not exist" in result.stderr


class TestMigration:
    def test_keys_made_before_scopes_keep_every_scope(self, tmp_path):
        from sqlalchemy import text

        from storage.db import Database
        from storage.migrate import upgrade

        database = Database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
        try:
            upgrade(database, "0006")
            with database.engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO organizations (id, name, created_at) "
                        "VALUES ('org_old', 'Old', '2026-01-01 00:00:00')"
                    )
                )
                connection.execute(
                    text(
                        "INSERT INTO api_keys (id, org_id, name, key_hash, created_at) "
                        "VALUES ('key_old', 'org_old', 'legacy', 'h', '2026-01-01 00:00:00')"
                    )
                )
            upgrade(database)
            with database.unit_of_work() as session:
                (listed,) = accounts.list_api_keys(session, "org_old")
            assert listed["scopes"] == ["read", "export", "restore", "console"]
        finally:
            database.engine.dispose()
