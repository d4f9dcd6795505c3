"""Initial schema: organisations, keys, sources, the inbox, entity state, events, exports.

Revision ID: 0001
Revises:

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
IP_ADDRESS = sa.String(45).with_variant(postgresql.INET(), "postgresql")
BIG_INT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Event keys are allocated in blocks before the insert (storage.state).
        op.execute("CREATE SEQUENCE events_id_seq AS bigint")
    op.create_table(
        "edges",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("a_id", sa.String(length=200), nullable=False),
        sa.Column("b_id", sa.String(length=200), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("clock_us", sa.BigInteger(), nullable=False),
        sa.Column("clock_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "kind", "a_id", "b_id", name=op.f("pk_edges")),
    )
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.create_index("ix_edges_org_id_kind_b_id", ["org_id", "kind", "b_id"], unique=False)

    op.create_table(
        "entities",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("parent_id", sa.String(length=200), nullable=True),
        sa.Column("properties", JSON_DOCUMENT, nullable=False),
        sa.Column("clocks", JSON_DOCUMENT, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("baseline", JSON_DOCUMENT, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("org_id", "entity_type", "entity_id", name=op.f("pk_entities")),
    )
    op.create_table(
        "event_subjects",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id",
            "entity_type",
            "entity_id",
            "occurred_at",
            "event_id",
            name=op.f("pk_event_subjects"),
        ),
    )
    op.create_table(
        "events",
        sa.Column("id", BIG_INT_KEY, autoincrement=False, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("entity_name", sa.Text(), nullable=True),
        sa.Column("targets", JSON_DOCUMENT, nullable=False),
        sa.Column("property", sa.String(length=200), nullable=True),
        sa.Column("old_value", JSON_DOCUMENT, nullable=True),
        sa.Column("new_value", JSON_DOCUMENT, nullable=True),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("actor_name", sa.String(length=200), nullable=True),
        sa.Column("actor_email", sa.String(length=320), nullable=True),
        sa.Column("ip_address", IP_ADDRESS, nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=True),
        sa.Column("notification_id", sa.String(length=220), nullable=True),
        sa.Column("notification_pk", sa.BigInteger(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("details", JSON_DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_notification", ["notification_pk", "position"], unique=True
        )
        batch_op.create_index(
            "ix_events_org_actor_time", ["org_id", "actor_id", "occurred_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_events_org_entity_type_time",
            ["org_id", "entity_type", "occurred_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_events_org_ip", ["org_id", "ip_address", "occurred_at", "id"], unique=False
        )
        batch_op.create_index("ix_events_org_time", ["org_id", "occurred_at", "id"], unique=False)
        batch_op.create_index(
            "ix_events_org_type_time", ["org_id", "type", "occurred_at", "id"], unique=False
        )

    op.create_table(
        "organizations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_api_keys_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_org_id"), ["org_id"], unique=False)

    op.create_table(
        "exports",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("filters", JSON_DOCUMENT, nullable=False),
        sa.Column("query", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("max_event_id", sa.BigInteger(), nullable=True),
        sa.Column("rows_written", sa.BigInteger(), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("file_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_exports_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index("ix_exports_org_created", ["org_id", "created_at"], unique=False)

    op.create_table(
        "sources",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_sources_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
    )
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sources_org_id"), ["org_id"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("pk", BIG_INT_KEY, autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=True),
        sa.Column("external_id", sa.String(length=220), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.String(length=200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("payload", JSON_DOCUMENT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "source_id", "external_id", name=op.f("uq_notifications_source_id_external_id")
        ),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_queued",
            ["enqueued_at"],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS events_id_seq")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_notifications_queued",
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        )

    op.drop_table("notifications")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sources_org_id"))

    op.drop_table("sources")
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_index("ix_exports_org_created")

    op.drop_table("exports")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_org_id"))

    op.drop_table("api_keys")
    op.drop_table("organizations")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_org_type_time")
        batch_op.drop_index("ix_events_org_time")
        batch_op.drop_index("ix_events_org_ip")
        batch_op.drop_index("ix_events_org_entity_type_time")
        batch_op.drop_index("ix_events_org_actor_time")
        batch_op.drop_index("ix_events_notification")

    op.drop_table("events")
    op.drop_table("event_subjects")
    op.drop_table("entities")
    with op.batch_alter_table("edges", schema=None) as batch_op:
        batch_op.drop_index("ix_edges_org_id_kind_b_id")

    op.drop_table("edges")
