"""EXPORT_STORAGE and BEAT_LOCK_SECONDS: defaults, accepted values, clear refusals."""

from __future__ import annotations

import pytest

from storage.settings import Settings


def from_env(tmp_path, **values: str) -> Settings:
    return Settings.from_env({"AUDITLOG_VAR_DIR": str(tmp_path), "SECRET_KEY": "k", **values})


class TestExportStorage:
    def test_the_database_is_the_default(self, tmp_path):
        assert from_env(tmp_path).export_storage == "database"
        assert Settings().export_storage == "database"

    @pytest.mark.parametrize("raw", ["filesystem", " FileSystem ", "database"])
    def test_either_store_may_be_chosen(self, tmp_path, raw):
        assert from_env(tmp_path, EXPORT_STORAGE=raw).export_storage == raw.strip().lower()

    def test_an_unknown_store_is_refused_naming_the_choices(self, tmp_path):
        with pytest.raises(ValueError, match="EXPORT_STORAGE must be one of database, filesystem"):
            from_env(tmp_path, EXPORT_STORAGE="s3")


class TestBeatLockSeconds:
    def test_the_default_and_a_chosen_value(self, tmp_path):
        assert from_env(tmp_path).beat_lock_seconds == 15
        assert from_env(tmp_path, BEAT_LOCK_SECONDS="4").beat_lock_seconds == 4

    @pytest.mark.parametrize("raw, message", [("1", "2 or more"), ("soon", "an integer")])
    def test_a_lock_too_short_or_not_a_number_is_refused(self, tmp_path, raw, message):
        with pytest.raises(ValueError, match=f"BEAT_LOCK_SECONDS must be {message}"):
            from_env(tmp_path, BEAT_LOCK_SECONDS=raw)
