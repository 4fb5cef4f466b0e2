"""trust: transactions and parties, ratings, reputations, insurance, complaints, deposits, audit

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trust_transactions",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("protected", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("subject_type", "subject_id", name="uq_trust_subject"),
    )
    op.create_table(
        "trust_audit",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("row_id"),
    )
    op.create_index("ix_trust_audit_target", "trust_audit", ["target_id", "row_id"], unique=False)

    op.create_table(
        "trust_complaints",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "transaction_row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("filer_id", sa.Uuid(), nullable=False),
        sa.Column("accused_id", sa.Uuid(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("text", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decision_reason", sa.String(length=1000), nullable=True),
        sa.Column("forfeited_minor", sa.BigInteger(), nullable=False),
        sa.Column("payout_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("filer_id <> accused_id", name="ck_trust_complaints_not_self"),
        sa.ForeignKeyConstraint(
            ["accused_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["filer_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["transaction_row_id"],
            ["trust_transactions.row_id"],
        ),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint(
            "transaction_row_id", "filer_id", "accused_id", name="uq_trust_complaints_once"
        ),
    )
    op.create_index(
        "ix_trust_complaints_accused", "trust_complaints", ["accused_id", "row_id"], unique=False
    )
    op.create_index(
        "ix_trust_complaints_filer", "trust_complaints", ["filer_id", "row_id"], unique=False
    )
    op.create_index(
        "ix_trust_complaints_status", "trust_complaints", ["status", "row_id"], unique=False
    )

    op.create_table(
        "trust_deposits",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hold_id", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name="ck_trust_deposits_amount"),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_trust_deposits_user", "trust_deposits", ["user_id", "row_id"], unique=False)
    held = sa.text("status = 'held'")
    op.create_index(
        "uq_trust_deposits_held",
        "trust_deposits",
        ["subject_type", "subject_id", "user_id"],
        unique=True,
        postgresql_where=held,
        sqlite_where=held,
    )
    op.create_index(
        "ix_trust_deposits_subject", "trust_deposits", ["subject_id", "user_id", "row_id"]
    )
    op.create_index(
        "ix_trust_deposits_release",
        "trust_deposits",
        ["release_after"],
        postgresql_where=held,
        sqlite_where=held,
    )

    op.create_table(
        "trust_insurance_policies",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("policy_number", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decision_reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["decided_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(
        "ix_trust_insurance_status", "trust_insurance_policies", ["status", "row_id"], unique=False
    )
    op.create_index(
        "ix_trust_insurance_user", "trust_insurance_policies", ["user_id", "row_id"], unique=False
    )
    op.create_index(
        "uq_trust_insurance_one_pending",
        "trust_insurance_policies",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )

    op.create_table(
        "trust_parties",
        sa.Column(
            "transaction_row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_row_id"],
            ["trust_transactions.row_id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("transaction_row_id", "user_id"),
    )
    op.create_index("ix_trust_parties_user", "trust_parties", ["user_id"], unique=False)

    op.create_table(
        "trust_ratings",
        sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "transaction_row_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("rater_id", sa.Uuid(), nullable=False),
        sa.Column("ratee_id", sa.Uuid(), nullable=False),
        sa.Column("rater_role", sa.String(length=16), nullable=False),
        sa.Column("stars", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reveal_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("rater_id <> ratee_id", name="ck_trust_ratings_not_self"),
        sa.CheckConstraint("stars BETWEEN 1 AND 5", name="ck_trust_ratings_stars"),
        sa.ForeignKeyConstraint(
            ["ratee_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rater_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["transaction_row_id"],
            ["trust_transactions.row_id"],
        ),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint(
            "transaction_row_id", "rater_id", "ratee_id", name="uq_trust_ratings_once"
        ),
    )
    op.create_index(
        "ix_trust_ratings_hidden_due",
        "trust_ratings",
        ["reveal_due_at"],
        unique=False,
        postgresql_where=sa.text("revealed_at IS NULL"),
        sqlite_where=sa.text("revealed_at IS NULL"),
    )
    op.create_index(
        "ix_trust_ratings_revealed",
        "trust_ratings",
        ["ratee_id", "row_id"],
        unique=False,
        postgresql_where=sa.text("revealed_at IS NOT NULL"),
        sqlite_where=sa.text("revealed_at IS NOT NULL"),
    )

    op.create_table(
        "trust_reputations",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("rating_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("stars_sum", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("positive_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("completed_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cancelled_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("complaints_upheld", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("complaints_received", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("insurance_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    for table in (
        "trust_reputations",
        "trust_ratings",
        "trust_parties",
        "trust_insurance_policies",
        "trust_deposits",
        "trust_complaints",
        "trust_audit",
        "trust_transactions",
    ):
        op.drop_table(table)  # their indexes go with them
