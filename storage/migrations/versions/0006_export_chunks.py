"""Export files in the database: every web process, on any host, can serve any export.

Revision ID: 0006
Revises: 0005

Each build writes its own attempt, chunk by chunk; the export's ``file_path`` names the
attempt it serves (``db:<attempt>``). Existing exports keep their files on disk.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "export_chunks",
        sa.Column("export_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.String(32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"], ["exports.id"], name=op.f("fk_export_chunks_export_id_exports")
        ),
        sa.PrimaryKeyConstraint("export_id", "attempt", "n", name=op.f("pk_export_chunks")),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # lz4 (PostgreSQL 14+, when built with it) compresses CSV chunks for a fraction of
        # pglz's CPU, which the build would otherwise spend beside the COPY it reads.
        methods = bind.scalar(
            sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        )
        if methods and "lz4" in methods:
            op.execute("ALTER TABLE export_chunks ALTER COLUMN data SET COMPRESSION lz4")


def downgrade() -> None:
    op.drop_table("export_chunks")
