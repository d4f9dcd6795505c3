"""CSV cells of exports, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from worker.exports import COLUMNS, csv_row, neutralised, targets_cell, value_cell


class TestCells:
    @pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r", "\x00"])
    def test_a_formula_start_gets_a_quote(self, start):
        assert neutralised(f"{start}SUM(A1)") == f"'{start}SUM(A1)"

    @pytest.mark.parametrize("text", ["plain", "a=b", " =x", "'quoted", "Ünïcödé"])
    def test_other_text_is_left_alone(self, text):
        assert neutralised(text) == text

    @pytest.mark.parametrize(
        "value, cell",
        [
            (None, ""),
            ("text", "text"),
            (3, "3"),
            (1.5, "1.5"),
            (True, "true"),
            ({"a": [1, None]}, '{"a":[1,null]}'),
            (["é"], '["é"]'),
        ],
    )
    def test_values_are_strings_or_compact_json(self, value, cell):
        assert value_cell(value) == cell

    def test_targets_name_when_known(self):
        targets = [
            {"type": "license", "id": "l1", "name": "Pro"},
            {"type": "person", "id": "p1", "name": None},
        ]
        assert targets_cell(targets) == "license:l1 (Pro); person:p1"

    def test_a_row_has_every_column_in_order(self):
        row = SimpleNamespace(
            id=255,
            type="person.property_updated",
            occurred_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
            entity_type="person",
            entity_id="p1",
            entity_name="Ada",
            targets=[],
            property="balance",
            old_value=-5,
            new_value="=1+1",
            actor_type="user",
            actor_id="p9",
            actor_name=None,
            actor_email="a@example.com",
            ip_address="203.0.113.7",
            origin="manual",
        )
        cells = csv_row(row)
        assert len(cells) == len(COLUMNS)
        assert dict(zip(COLUMNS, cells, strict=True)) == {
            "occurred_at": "2026-11-25T10:00:00Z",
            "event_type": "person.property_updated",
            "event": "Person Property Updated",
            "entity_type": "person",
            "entity_id": "p1",
            "entity_name": "Ada",
            "targets": "",
            "property": "balance",
            "old_value": "'-5",
            "new_value": "'=1+1",
            "actor_type": "user",
            "actor_id": "p9",
            "actor_name": "",
            "actor_email": "a@example.com",
            "ip_address": "203.0.113.7",
            "origin": "manual",
            "event_id": "evt_00000000000000ff",
        }
