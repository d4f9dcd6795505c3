"""Key scopes and last use, source secret rotation and disabling, the access log, and
the key behind each console link.

Keys made before scopes existed keep every scope.

Revision ID: 0007
Revises: 0006

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
INET = sa.String(45).with_variant(postgresql.INET(), "postgresql")
BIGINT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column(
                "scopes",
                sa.String(100),
                nullable=False,
                server_default="read export restore console",
            )
        )
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        # Every new key says its scopes; the default only served the keys already there.
        batch.alter_column("scopes", server_default=None)
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("previous_secret_encrypted", sa.LargeBinary(), nullable=True))
        batch.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("console_links") as batch:
        batch.add_column(sa.Column("key_id", sa.String(64), nullable=True))
    op.create_table(
        "access_log",
        sa.Column("id", BIGINT_KEY, autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=True),
        sa.Column("performed_by", JSON_DOCUMENT, nullable=False),
        sa.Column("ip_address", INET, nullable=True),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("details", JSON_DOCUMENT, nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_access_log_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_log")),
    )
    op.create_index("ix_access_log_org_page", "access_log", ["org_id", "occurred_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_access_log_org_page", table_name="access_log")
    op.drop_table("access_log")
    with op.batch_alter_table("console_links") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("secret_rotated_at")
        batch.drop_column("previous_secret_expires_at")
        batch.drop_column("previous_secret_encrypted")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("scopes")
