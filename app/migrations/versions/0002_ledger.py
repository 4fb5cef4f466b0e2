"""ledger: accounts, transfers, chain head; idempotency keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
UNCHAINED = "seq IS NULL AND NOT is_hold"
PENDING = "status = 'pending'"


def _money(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("owner", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean(), nullable=False),
        _money("debits_pending"),
        _money("debits_posted"),
        _money("credits_pending"),
        _money("credits_posted"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted",
            name="ck_ledger_accounts_debit_limit",
        ),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 "
            "AND credits_pending >= 0 AND credits_posted >= 0",
            name="ck_ledger_accounts_non_negative",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_accounts"),
        sa.UniqueConstraint("key", name="uq_ledger_accounts_key"),
    )
    op.create_index("ix_ledger_accounts_owner_id", "ledger_accounts", ["owner_id"])

    chain_head = op.create_table(
        "ledger_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_ledger_chain_head_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_chain_head"),
    )
    op.bulk_insert(chain_head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])

    op.create_table(
        "ledger_transfers",
        sa.Column(
            "row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("debit_account_id", sa.Integer(), nullable=False),
        sa.Column("credit_account_id", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("is_hold", sa.Boolean(), nullable=False),
        sa.Column("parent_id", sa.String(length=160), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        _money("refunded_minor"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name="ck_ledger_transfers_amount_positive"),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name="ck_ledger_transfers_two_accounts"
        ),
        sa.CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor",
            name="ck_ledger_transfers_refund_limit",
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"], ["ledger_accounts.id"], name="fk_ledger_transfers_credit"
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id"], ["ledger_accounts.id"], name="fk_ledger_transfers_debit"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["ledger_transfers.id"], name="fk_ledger_transfers_parent"
        ),
        sa.PrimaryKeyConstraint("row_id", name="pk_ledger_transfers"),
        sa.UniqueConstraint("id", name="uq_ledger_transfers_id"),
        sa.UniqueConstraint("seq", name="uq_ledger_transfers_seq"),
    )
    op.create_index("ix_ledger_transfers_debit", "ledger_transfers", ["debit_account_id", "row_id"])
    op.create_index(
        "ix_ledger_transfers_credit", "ledger_transfers", ["credit_account_id", "row_id"]
    )
    op.create_index("ix_ledger_transfers_parent_id", "ledger_transfers", ["parent_id"])
    op.create_index(
        "ix_ledger_transfers_pending_expiry",
        "ledger_transfers",
        ["expires_at"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_index(
        "ix_ledger_transfers_unchained",
        "ledger_transfers",
        ["row_id"],
        postgresql_where=sa.text(UNCHAINED),
        sqlite_where=sa.text(UNCHAINED),
    )


def downgrade() -> None:
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_chain_head")
    op.drop_table("ledger_accounts")
    op.drop_table("idempotency_keys")
