"""The verifiable log: per-organisation sequence numbers, Merkle tree nodes, checkpoints, keys.

Revision ID: 0005
Revises: 0004

On PostgreSQL every event records the id of the transaction that wrote it (a column
default, so every insert path fills it), which is what lets the sequencer number events
only once every transaction that could still commit a lower one has ended. The new log
tables are append-only like the events, except the per-organisation tree head and the
sequencer's watermark.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("log_leaves", "log_nodes", "log_checkpoints")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # Existing rows all get the migration's own transaction id: they are numbered in
        # id order, before anything written later.
        op.execute(
            "ALTER TABLE events ADD COLUMN txid bigint DEFAULT (pg_current_xact_id()::text::bigint)"
        )
        op.create_index("ix_events_txid", "events", ["txid", "id"])
    else:
        op.add_column("events", sa.Column("txid", sa.BigInteger(), nullable=True))

    op.create_table(
        "log_leaves",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "seq", name=op.f("pk_log_leaves")),
        sa.UniqueConstraint("event_id", name=op.f("uq_log_leaves_event_id")),
    )
    op.create_table(
        "log_nodes",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "level", "idx", name=op.f("pk_log_nodes")),
    )
    op.create_table(
        "log_trees",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("checkpointed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_log_trees")),
    )
    op.create_table(
        "log_sequencer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("horizon", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_sequencer")),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "tree_size", name=op.f("pk_log_checkpoints")),
    )
    op.create_table(
        "log_keys",
        sa.Column("key_id", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("vkey", sa.Text(), nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_log_keys")),
    )
    with op.batch_alter_table("exports") as batch:
        batch.add_column(sa.Column("format", sa.String(8), nullable=False, server_default="csv"))
        batch.add_column(sa.Column("requested_xmax", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("tree_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("checkpoint", sa.Text(), nullable=True))
    if postgres:
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION auditlog_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION auditlog_refuse_change()"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    with op.batch_alter_table("exports") as batch:
        for column in ("checkpoint", "tree_size", "requested_xmax", "format"):
            batch.drop_column(column)
    for table in ("log_keys", "log_checkpoints", "log_sequencer", "log_trees", "log_nodes"):
        op.drop_table(table)
    op.drop_table("log_leaves")
    if postgres:
        op.drop_index("ix_events_txid", table_name="events")
    op.drop_column("events", "txid")
