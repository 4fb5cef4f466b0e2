"""pools and pool joins

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organizer_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("tiers", sa.String(length=2000), nullable=False),
        sa.Column("min_quantity", sa.Integer(), nullable=False),
        sa.Column("max_quantity", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("committed_quantity", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("participant_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("pickup_lat", sa.Float(), nullable=True),
        sa.Column("pickup_lon", sa.Float(), nullable=True),
        sa.Column("pickup_label", sa.String(length=200), nullable=True),
        sa.Column("protected", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("premium_bp", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("platform_fee_bp", sa.Integer(), nullable=False),
        sa.Column("final_unit_price_minor", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "committed_quantity >= 0 AND committed_quantity <= max_quantity",
            name="ck_pools_never_oversold",
        ),
        sa.CheckConstraint(
            "min_quantity >= 1 AND min_quantity <= max_quantity", name="ck_pools_min"
        ),
        sa.CheckConstraint("participant_count >= 0", name="ck_pools_participants"),
        sa.ForeignKeyConstraint(
            ["organizer_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_pools_organizer", "pools", ["organizer_id", "row_id"], unique=False)
    op.create_index("ix_pools_pickup", "pools", ["pickup_lat", "pickup_lon"], unique=False)
    op.create_index("ix_pools_status_deadline", "pools", ["status", "deadline"], unique=False)
    op.create_index("ix_pools_status_row", "pools", ["status", "row_id"], unique=False)

    op.create_table(
        "pool_joins",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("pool_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("held_minor", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.String(length=120), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_request", sa.String(length=160), nullable=True),
        sa.Column("charged_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quantity >= 0", name="ck_pool_joins_quantity"),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["pools.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("pool_id", "user_id", name="uq_pool_joins_member"),
    )
    op.create_index(
        "ix_pool_joins_pool_status", "pool_joins", ["pool_id", "status", "row_id"], unique=False
    )
    op.create_index("ix_pool_joins_user", "pool_joins", ["user_id", "row_id"], unique=False)


def downgrade() -> None:
    op.drop_table("pool_joins")
    op.drop_table("pools")
