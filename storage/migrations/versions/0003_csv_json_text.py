"""A compact JSON text function, so that PostgreSQL itself can write export CSV cells.

``jsonb::text`` separates with ", " and ": "; exports want compact JSON, the form
Python's ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` writes.

Revision ID: 0003
Revises: 0002

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION auditlog_json_text(value jsonb) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE jsonb_typeof(value)
                WHEN 'object' THEN '{' || coalesce((
                    SELECT string_agg(to_jsonb(e.key)::text || ':' || auditlog_json_text(e.value),
                                      ',' ORDER BY e.ordinality)
                    FROM jsonb_each(value) WITH ORDINALITY AS e), '') || '}'
                WHEN 'array' THEN '[' || coalesce((
                    SELECT string_agg(auditlog_json_text(a.value), ',' ORDER BY a.ordinality)
                    FROM jsonb_array_elements(value) WITH ORDINALITY AS a), '') || ']'
                ELSE value::text
            END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS auditlog_json_text(jsonb)")
