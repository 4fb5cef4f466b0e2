"""Ledger tables: accounts with TigerBeetle-style balances, immutable transfers, the chain head."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlmodel import Field, SQLModel

from app.db import UTCDateTime


class AccountKind(StrEnum):
    WALLET = "wallet"
    POOL_ESCROW = "pool_escrow"
    RIDE_ESCROW = "ride_escrow"
    DEPOSIT_ESCROW = "deposit_escrow"
    PLATFORM_REVENUE = "platform_revenue"
    INSURANCE_FUND = "insurance_fund"
    EXTERNAL_FUNDING = "external_funding"


class TransferStatus(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


class TransferKind(StrEnum):
    """Kinds the ledger itself writes; domains name their own (`pool_join`, `fare`, ...)."""

    TOP_UP = "top_up"
    WITHDRAWAL = "withdrawal"
    CAPTURE = "capture"
    VOID = "void"
    EXPIRY = "expiry"
    REFUND = "refund"


#: The kind of the entry that records a hold's resolution into each final status.
RESOLUTION_KIND = {
    TransferStatus.POSTED: TransferKind.CAPTURE,
    TransferStatus.VOIDED: TransferKind.VOID,
    TransferStatus.EXPIRED: TransferKind.EXPIRY,
}


def _money(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default=text("0"))


class Account(SQLModel, table=True):
    """Balances in minor units. available = credits_posted - debits_posted - debits_pending."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 "
            "AND credits_pending >= 0 AND credits_posted >= 0",
            name="ck_ledger_accounts_non_negative",
        ),
        # The last line of defence for "a wallet can never go below zero" (the conditional
        # UPDATE in the service is the first).
        CheckConstraint(
            "NOT debits_must_not_exceed_credits "
            "OR debits_posted + debits_pending <= credits_posted",
            name="ck_ledger_accounts_debit_limit",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    #: Stable key that names the account, e.g. `wallet:<user>:EUR`; accounts open on first use.
    key: str = Field(sa_column=Column(String(120), nullable=False, unique=True))
    kind: str = Field(max_length=32)
    currency: str = Field(max_length=3)
    owner_id: UUID | None = Field(default=None, index=True)
    debits_must_not_exceed_credits: bool = Field(sa_column=Column(Boolean, nullable=False))
    debits_pending: int = Field(sa_column=_money("debits_pending"))
    debits_posted: int = Field(sa_column=_money("debits_posted"))
    credits_pending: int = Field(sa_column=_money("credits_pending"))
    credits_posted: int = Field(sa_column=_money("credits_posted"))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class Transfer(SQLModel, table=True):
    """One movement between two accounts. Amounts and parties never change once written.

    A hold (`is_hold`) reserves money; its `status` moves pending -> posted | voided | expired
    exactly once, and that resolution is itself a new transfer row pointing at it (`parent_id`),
    as is a refund of a posted transfer. Every row that is not a hold is a ledger entry: it gets
    a gap-free `seq` and a `hash` in the chain.
    """

    __tablename__ = "ledger_transfers"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="ck_ledger_transfers_amount_positive"),
        CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor",
            name="ck_ledger_transfers_refund_limit",
        ),
        CheckConstraint(
            "debit_account_id <> credit_account_id", name="ck_ledger_transfers_two_accounts"
        ),
        Index("ix_ledger_transfers_debit", "debit_account_id", "row_id"),
        Index("ix_ledger_transfers_credit", "credit_account_id", "row_id"),
        Index(
            "ix_ledger_transfers_unchained",
            "row_id",
            postgresql_where=text("seq IS NULL AND NOT is_hold"),
            sqlite_where=text("seq IS NULL AND NOT is_hold"),
        ),
        # The sweeps' index (migration 0016): a lookup of holds by id that checks
        # `status = 'pending'` must not match it (it read every pending hold), so its predicate
        # also asks for an expiry, which the sweeps' queries imply or say.
        Index(
            "ix_ledger_transfers_pending_expiry",
            "expires_at",
            postgresql_where=text("status = 'pending' AND expires_at IS NOT NULL"),
            sqlite_where=text("status = 'pending' AND expires_at IS NOT NULL"),
        ),
        # Only rows with a parent (captures, voids, refunds): not a NULL for every hold.
        Index(
            "ix_ledger_transfers_parent_id",
            "parent_id",
            postgresql_where=text("parent_id IS NOT NULL"),
            sqlite_where=text("parent_id IS NOT NULL"),
        ),
    )

    row_id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    )
    #: The idempotency key: client-supplied or derived from what it pays for.
    id: str = Field(sa_column=Column(String(160), nullable=False, unique=True))
    debit_account_id: int = Field(
        sa_column=Column(Integer, ForeignKey("ledger_accounts.id"), nullable=False)
    )
    credit_account_id: int = Field(
        sa_column=Column(Integer, ForeignKey("ledger_accounts.id"), nullable=False)
    )
    #: The account keys the caller named; verify checks the ids above still belong to them.
    #: NULL on resolutions and refunds, whose accounts are copied from their parent.
    debit_key: str | None = Field(default=None, sa_column=Column(String(120)))
    credit_key: str | None = Field(default=None, sa_column=Column(String(120)))
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    kind: str = Field(max_length=32)
    ref: str = Field(max_length=160)
    status: str = Field(max_length=16)
    is_hold: bool = Field(sa_column=Column(Boolean, nullable=False))
    parent_id: str | None = Field(
        default=None, sa_column=Column(String(160), ForeignKey("ledger_transfers.id"))
    )
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    refunded_minor: int = Field(sa_column=_money("refunded_minor"))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, unique=True))
    hash: str | None = Field(default=None, max_length=64)


class ChainHead(SQLModel, table=True):
    """The single row that the one chain writer at a time locks and advances."""

    __tablename__ = "ledger_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="ck_ledger_chain_head_single_row"),)

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)
