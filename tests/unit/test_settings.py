from __future__ import annotations

from pathlib import Path

import pytest

from storage.settings import Settings, normalise_database_url


class TestDefaults:
    def test_every_variable_has_a_working_default(self, tmp_path):
        settings = Settings.from_env({"AUDITLOG_VAR_DIR": str(tmp_path / "var")})
        assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'auditlog.sqlite3'}"
        assert settings.redis_url is None
        assert settings.export_dir == tmp_path / "var" / "exports"
        assert settings.export_ttl_seconds == 604800
        assert settings.webhook_tolerance_seconds == 300
        assert settings.max_body_bytes == 2097152
        assert settings.port == 8000

    def test_the_generated_secret_key_is_kept_and_reused(self, tmp_path):
        env = {"AUDITLOG_VAR_DIR": str(tmp_path)}
        first = Settings.from_env(env).secret_key
        assert len(first) > 40
        assert Settings.from_env(env).secret_key == first
        assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0

    def test_an_explicit_secret_key_wins(self, tmp_path):
        env = {"AUDITLOG_VAR_DIR": str(tmp_path), "SECRET_KEY": "s3cret"}
        assert Settings.from_env(env).secret_key == "s3cret"
        assert not Path(tmp_path / "secret_key").exists()

    def test_a_malformed_number_names_its_variable(self, tmp_path):
        with pytest.raises(ValueError, match="MAX_BODY_BYTES"):
            Settings.from_env({"AUDITLOG_VAR_DIR": str(tmp_path), "MAX_BODY_BYTES": "lots"})


class TestDatabaseUrl:
    @pytest.mark.parametrize(
        "given, expected",
        [
            ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
            ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
            ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
            ("sqlite:///x.db", "sqlite:///x.db"),
        ],
    )
    def test_postgres_urls_map_to_psycopg_3(self, given, expected):
        assert normalise_database_url(given) == expected


class TestOperationsVariables:
    def test_log_format_is_json_unless_text_is_asked_for(self, tmp_path):
        base = {"SECRET_KEY": "k", "AUDITLOG_VAR_DIR": str(tmp_path)}
        assert Settings.from_env(base).log_format == "json"
        assert Settings.from_env({**base, "LOG_FORMAT": " Text "}).log_format == "text"
        with pytest.raises(ValueError, match="LOG_FORMAT"):
            Settings.from_env({**base, "LOG_FORMAT": "xml"})

    def test_forwarded_allow_ips_takes_addresses_networks_and_a_star(self, tmp_path):
        base = {"SECRET_KEY": "k", "AUDITLOG_VAR_DIR": str(tmp_path)}
        assert Settings.from_env(base).forwarded_allow_ips == ()
        raw = "10.0.0.1, 192.168.0.0/16,::1,*"
        assert Settings.from_env({**base, "FORWARDED_ALLOW_IPS": raw}).forwarded_allow_ips == (
            "10.0.0.1",
            "192.168.0.0/16",
            "::1",
            "*",
        )
        with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
            Settings.from_env({**base, "FORWARDED_ALLOW_IPS": "proxy.local"})


def test_a_secret_key_with_a_comma_is_refused():
    from storage.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot hold a comma"):
        Settings.from_env({"SECRET_KEY": "a,b"})


def test_fallbacks_are_read_newest_first_without_blanks():
    settings = Settings.from_env({"SECRET_KEY": "new", "SECRET_KEY_FALLBACKS": " old , , older "})
    assert settings.secret_keys == ("new", "old", "older")
