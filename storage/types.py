"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: JSONB on PostgreSQL, JSON text elsewhere.
JSONDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")

#: A 64-bit key that SQLite still treats as its rowid alias (autoincrement).
BigIntKey = BigInteger().with_variant(Integer(), "sqlite")


def require_aware(value: datetime | None) -> datetime | None:
    """``value``, unless it is naive: a naive datetime would be stored as local time."""
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    return value


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite a naive UTC value. Always aware on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        value = require_aware(value)
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class IPAddress(TypeDecorator[str]):
    """``inet`` on PostgreSQL (so CIDR containment can use an index), text on SQLite."""

    impl = String(45)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.INET())
        return dialect.type_descriptor(String(45))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)
