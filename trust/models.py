"""SQLModel tables of trust.

Every table has an integer `row_id` (the position cursors page by) and, where the API names rows,
a UUID `id`. Invariants live in the schema: one party row per user per transaction, one rating per
rater, ratee and transaction, stars 1..5, one reputation row per user.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from app.db import row_id_column, utc_column


class SubjectType(StrEnum):
    """What a rateable transaction is: a settled pool or a completed ride match."""

    POOL = "pool"
    MATCH = "match"


class PartyRole(StrEnum):
    """A user's part in a transaction; counterparties are parties with another role."""

    ORGANIZER = "organizer"
    MEMBER = "member"
    DRIVER = "driver"
    RIDER = "rider"


class PolicyStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    REJECTED = "rejected"


class ComplaintStatus(StrEnum):
    OPEN = "open"
    UPHELD = "upheld"
    REJECTED = "rejected"


class ComplaintCategory(StrEnum):
    NO_SHOW = "no_show"
    SAFETY = "safety"
    FRAUD = "fraud"
    NOT_AS_DESCRIBED = "not_as_described"
    BEHAVIOUR = "behaviour"
    OTHER = "other"


class DepositStatus(StrEnum):
    HELD = "held"
    RELEASED = "released"
    FORFEITED = "forfeited"


def _transaction_ref(*, primary_key: bool = False) -> Column[int]:
    """The completed transaction a party, rating or complaint belongs to."""
    return row_id_column(
        "transaction_row_id",
        ForeignKey("trust_transactions.row_id"),
        primary_key=primary_key,
        nullable=False,
    )


def _count(name: str) -> Column[int]:
    return Column(name, Integer, nullable=False, server_default=text("0"))


class TrustTransaction(SQLModel, table=True):
    """A completed transaction that its parties may rate and complain about."""

    __tablename__ = "trust_transactions"
    __table_args__ = (UniqueConstraint("subject_type", "subject_id", name="uq_trust_subject"),)

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    subject_type: str = Field(sa_column=Column(String(16), nullable=False))
    subject_id: UUID = Field(nullable=False)
    completed_at: datetime = Field(sa_column=utc_column("completed_at"))
    #: Purchase protection: an upheld complaint of a member against the organizer may be paid
    #: out of the insurance fund.
    protected: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    #: The currency the transaction moved money in (None: registered before it was recorded):
    #: a protection payout is paid in it.
    currency: str | None = Field(default=None, sa_column=Column(String(3), nullable=True))


class TrustParty(SQLModel, table=True):
    __tablename__ = "trust_parties"
    __table_args__ = (Index("ix_trust_parties_user", "user_id"),)

    transaction_row_id: int = Field(sa_column=_transaction_ref(primary_key=True))
    user_id: UUID = Field(foreign_key="users.id", primary_key=True)
    role: str = Field(sa_column=Column(String(16), nullable=False))


class Rating(SQLModel, table=True):
    """Stars one party gave a counterparty; hidden until both rated or the window closed."""

    __tablename__ = "trust_ratings"
    __table_args__ = (
        UniqueConstraint(
            "transaction_row_id", "rater_id", "ratee_id", name="uq_trust_ratings_once"
        ),
        CheckConstraint("stars BETWEEN 1 AND 5", name="ck_trust_ratings_stars"),
        CheckConstraint("rater_id <> ratee_id", name="ck_trust_ratings_not_self"),
        Index(
            "ix_trust_ratings_revealed",
            "ratee_id",
            "row_id",
            postgresql_where=text("revealed_at IS NOT NULL"),
            sqlite_where=text("revealed_at IS NOT NULL"),
        ),
        Index(
            "ix_trust_ratings_hidden_due",
            "reveal_due_at",
            postgresql_where=text("revealed_at IS NULL"),
            sqlite_where=text("revealed_at IS NULL"),
        ),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    transaction_row_id: int = Field(sa_column=_transaction_ref())
    rater_id: UUID = Field(foreign_key="users.id", nullable=False)
    ratee_id: UUID = Field(foreign_key="users.id", nullable=False)
    rater_role: str = Field(sa_column=Column(String(16), nullable=False))
    stars: int = Field(sa_column=Column(SmallInteger, nullable=False))
    comment: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_column=utc_column("created_at"))
    #: When the window closes: the rating is revealed then, if the counterparty has not rated.
    reveal_due_at: datetime = Field(sa_column=utc_column("reveal_due_at"))
    revealed_at: datetime | None = Field(
        default=None, sa_column=utc_column("revealed_at", nullable=True)
    )


class Reputation(SQLModel, table=True):
    """Everything a user's reputation is computed from: one row, updated with each change."""

    __tablename__ = "trust_reputations"

    user_id: UUID = Field(foreign_key="users.id", primary_key=True)
    rating_count: int = Field(sa_column=_count("rating_count"))
    stars_sum: int = Field(sa_column=_count("stars_sum"))
    positive_count: int = Field(sa_column=_count("positive_count"))
    completed_count: int = Field(sa_column=_count("completed_count"))
    cancelled_count: int = Field(sa_column=_count("cancelled_count"))
    complaints_upheld: int = Field(sa_column=_count("complaints_upheld"))
    complaints_received: int = Field(sa_column=_count("complaints_received"))
    #: The expiry of the user's verified insurance policy (the newest verified one), if any.
    insurance_expires_at: datetime | None = Field(
        default=None, sa_column=utc_column("insurance_expires_at", nullable=True)
    )


class InsurancePolicy(SQLModel, table=True):
    __tablename__ = "trust_insurance_policies"
    __table_args__ = (
        Index("ix_trust_insurance_status", "status", "row_id"),
        Index("ix_trust_insurance_user", "user_id", "row_id"),
        # At most one policy per user waits for a decision.
        Index(
            "uq_trust_insurance_one_pending",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    user_id: UUID = Field(foreign_key="users.id", nullable=False)
    provider: str = Field(max_length=100)
    policy_number: str = Field(max_length=64)
    expires_at: datetime = Field(sa_column=utc_column("expires_at"))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    submitted_at: datetime = Field(sa_column=utc_column("submitted_at"))
    decided_at: datetime | None = Field(
        default=None, sa_column=utc_column("decided_at", nullable=True)
    )
    decided_by: UUID | None = Field(default=None, foreign_key="users.id")
    decision_reason: str | None = Field(default=None, max_length=500)


class Complaint(SQLModel, table=True):
    __tablename__ = "trust_complaints"
    __table_args__ = (
        UniqueConstraint(
            "transaction_row_id", "filer_id", "accused_id", name="uq_trust_complaints_once"
        ),
        CheckConstraint("filer_id <> accused_id", name="ck_trust_complaints_not_self"),
        Index("ix_trust_complaints_filer", "filer_id", "row_id"),
        Index("ix_trust_complaints_accused", "accused_id", "row_id"),
        Index("ix_trust_complaints_status", "status", "row_id"),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    transaction_row_id: int = Field(sa_column=_transaction_ref())
    filer_id: UUID = Field(foreign_key="users.id", nullable=False)
    accused_id: UUID = Field(foreign_key="users.id", nullable=False)
    category: str = Field(sa_column=Column(String(32), nullable=False))
    text: str = Field(max_length=2000)
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(sa_column=utc_column("created_at"))
    decided_at: datetime | None = Field(
        default=None, sa_column=utc_column("decided_at", nullable=True)
    )
    decided_by: UUID | None = Field(default=None, foreign_key="users.id")
    decision_reason: str | None = Field(default=None, max_length=1000)
    forfeited_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    payout_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class Deposit(SQLModel, table=True):
    """A hold of a user's money into deposit escrow, for one subject (a pool, a match)."""

    __tablename__ = "trust_deposits"
    __table_args__ = (
        # One deposit held per user and subject at a time (earlier ones were released).
        Index(
            "uq_trust_deposits_held",
            "subject_type",
            "subject_id",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'held'"),
            sqlite_where=text("status = 'held'"),
        ),
        Index("ix_trust_deposits_subject", "subject_id", "user_id", "row_id"),
        Index(
            "ix_trust_deposits_release",
            "release_after",
            postgresql_where=text("status = 'held'"),
            sqlite_where=text("status = 'held'"),
        ),
        CheckConstraint("amount_minor > 0", name="ck_trust_deposits_amount"),
        Index("ix_trust_deposits_user", "user_id", "row_id"),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    user_id: UUID = Field(foreign_key="users.id", nullable=False)
    subject_type: str = Field(sa_column=Column(String(16), nullable=False))
    subject_id: UUID = Field(nullable=False)
    amount_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    #: The ledger hold (wallet -> deposit escrow) that holds the money.
    hold_id: str = Field(max_length=120)
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(sa_column=utc_column("created_at"))
    resolved_at: datetime | None = Field(
        default=None, sa_column=utc_column("resolved_at", nullable=True)
    )
    #: Once the transaction completed: released then, unless a complaint against the user is open.
    release_after: datetime | None = Field(
        default=None, sa_column=utc_column("release_after", nullable=True)
    )
    #: Who received a forfeited deposit (None: the insurance fund).
    beneficiary_id: UUID | None = Field(default=None, foreign_key="users.id")


class AuditAction(StrEnum):
    VERIFY_INSURANCE = "verify-insurance"
    REJECT_INSURANCE = "reject-insurance"
    DECIDE_COMPLAINT = "decide-complaint"
    BAN = "ban"
    UNBAN = "unban"


class AuditEntry(SQLModel, table=True):
    """One admin decision: who, when, what, why. Written in the decision's unit of work."""

    __tablename__ = "trust_audit"
    __table_args__ = (Index("ix_trust_audit_target", "target_id", "row_id"),)

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    #: The admin's user id; None for an operator at the command line (see `actor`).
    actor_id: UUID | None = Field(default=None, foreign_key="users.id")
    actor: str = Field(max_length=120)
    action: str = Field(sa_column=Column(String(32), nullable=False))
    target_id: UUID = Field(nullable=False)
    reason: str | None = Field(default=None, max_length=1000)
    detail: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(sa_column=utc_column("created_at"))
