"""Console links: single-use, short-lived ways into the console.

Revision ID: 0004
Revises: 0003

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_links",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("scope", JSON_DOCUMENT, nullable=False),
        sa.Column("permissions", JSON_DOCUMENT, nullable=False),
        sa.Column("viewer", JSON_DOCUMENT, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_console_links_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_links")),
    )
    op.create_index(op.f("ix_console_links_org_id"), "console_links", ["org_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_console_links_org_id"), table_name="console_links")
    op.drop_table("console_links")
