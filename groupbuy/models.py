"""SQLModel tables of groupbuy.

`pools.committed_quantity` is the pool's one hot counter: a join reserves quantity with a single
conditional UPDATE on it (`committed_quantity + q <= max_quantity`, status open, before the
deadline), so the database itself makes overselling impossible. Progress fields shown in lists
(committed quantity, participants) live on the pool row: reading a pool is one row.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from app.db import row_id_column, utc_column


class PoolStatus(StrEnum):
    OPEN = "open"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JoinStatus(StrEnum):
    ACTIVE = "active"  # quantity reserved, price held
    LEFT = "left"  # left before the deadline: hold released
    CHARGED = "charged"  # the pool succeeded: charged at the final price
    RELEASED = "released"  # the pool failed or was cancelled: hold released


class Pool(SQLModel, table=True):
    __tablename__ = "pools"
    __table_args__ = (
        CheckConstraint(
            "committed_quantity >= 0 AND committed_quantity <= max_quantity",
            name="ck_pools_never_oversold",
        ),
        CheckConstraint("min_quantity >= 1 AND min_quantity <= max_quantity", name="ck_pools_min"),
        CheckConstraint("participant_count >= 0", name="ck_pools_participants"),
        Index("ix_pools_status_deadline", "status", "deadline"),
        Index("ix_pools_status_row", "status", "row_id"),
        Index("ix_pools_pickup", "pickup_lat", "pickup_lon"),
        Index("ix_pools_organizer", "organizer_id", "row_id"),
        # The settlement sweep's pools: only those not settled yet (open or owed), so its
        # minute-by-minute query never reads the settled history.
        Index(
            "ix_pools_unsettled",
            "deadline",
            postgresql_where=text("settled_at IS NULL"),
            sqlite_where=text("settled_at IS NULL"),
        ),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    organizer_id: UUID = Field(foreign_key="users.id", nullable=False)
    title: str = Field(max_length=120)
    description: str = Field(max_length=2000)
    currency: str = Field(max_length=3)
    #: JSON list of {min_quantity, unit_price_minor}, validated by groupbuy/pricing.py.
    tiers: str = Field(max_length=2000)
    min_quantity: int = Field(sa_column=Column(Integer, nullable=False))
    max_quantity: int = Field(sa_column=Column(Integer, nullable=False))
    deadline: datetime = Field(sa_column=utc_column("deadline"))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    committed_quantity: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    participant_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    pickup_lat: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    pickup_lon: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    pickup_label: str | None = Field(default=None, max_length=200)
    #: Purchase protection: each join also pays a premium into the insurance fund.
    protected: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    premium_bp: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    platform_fee_bp: int = Field(sa_column=Column(Integer, nullable=False))
    final_unit_price_minor: int | None = Field(
        default=None, sa_column=Column(BigInteger, nullable=True)
    )
    created_at: datetime = Field(sa_column=utc_column("created_at"))
    #: When the outcome was decided (status left open) and when its money finished moving.
    decided_at: datetime | None = Field(
        default=None, sa_column=utc_column("decided_at", nullable=True)
    )
    settled_at: datetime | None = Field(
        default=None, sa_column=utc_column("settled_at", nullable=True)
    )
    #: When a settlement last stopped short of settled (the payout held back, an error): the
    #: sweep takes pools never tried first, then the longest untried, so none blocks the rest.
    settle_attempted_at: datetime | None = Field(
        default=None, sa_column=utc_column("settle_attempted_at", nullable=True)
    )


class Join(SQLModel, table=True):
    """One member's stake in a pool (joining again raises its quantity)."""

    __tablename__ = "pool_joins"
    __table_args__ = (
        UniqueConstraint("pool_id", "user_id", name="uq_pool_joins_member"),
        CheckConstraint("quantity >= 0", name="ck_pool_joins_quantity"),
        Index("ix_pool_joins_user", "user_id", "row_id"),
        Index("ix_pool_joins_pool_status", "pool_id", "status", "row_id"),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    pool_id: UUID = Field(foreign_key="pools.id", nullable=False)
    user_id: UUID = Field(foreign_key="users.id", nullable=False)
    quantity: int = Field(sa_column=Column(Integer, nullable=False))
    held_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: The join's newest ledger hold. Each version holds what it added (a raise: its quantity
    #: at the first tier's price), so the join's holds are those of versions first_version ..
    #: version (`hold_ids`), held_minor in all.
    hold_id: str = Field(max_length=120)
    version: int = Field(sa_column=Column(Integer, nullable=False))
    #: The version that made the join active (its first join, or a join after leaving).
    first_version: int = Field(sa_column=Column(Integer, nullable=False, server_default=text("0")))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    #: The request (derived from its Idempotency-Key) that last changed this join: its retry
    #: after a crash answers the join instead of adding the quantity again.
    last_request: str | None = Field(default=None, max_length=160)
    charged_minor: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )
    created_at: datetime = Field(sa_column=utc_column("created_at"))
    updated_at: datetime = Field(sa_column=utc_column("updated_at"))


class JoinRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A join row as plain data: what the service reads and answers (a flash crowd's batches
    build thousands of these; ORM instances cost several times more)."""

    id: UUID
    pool_id: UUID
    user_id: UUID
    quantity: int
    held_minor: int
    hold_id: str
    version: int
    first_version: int
    status: str
    last_request: str | None
    charged_minor: int
    created_at: datetime
    updated_at: datetime
    row_id: int | None = None
