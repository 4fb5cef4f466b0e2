"""SQLModel tables of rides.

An offer's `seats_free` is its hot counter: an accept takes seats with one conditional UPDATE
(`seats_free >= seats`), so two accepts of the last seat can never both win. A pair (offer,
request) is proposed at most once (a unique constraint): a declined or expired pair is never
proposed again. A request has at most one live match (proposed or accepted): a partial unique
index.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

from sqlalchemy import BigInteger, CheckConstraint, Column, Float, Index, Integer, String, text
from sqlmodel import Field, SQLModel

from app.db import row_id_column, utc_column


class OfferStatus(StrEnum):
    OPEN = "open"  # takes riders until its departure
    CLOSED = "closed"  # departed (or completed): no new riders
    CANCELLED = "cancelled"


class RequestStatus(StrEnum):
    OPEN = "open"  # waiting for a proposal
    PROPOSED = "proposed"  # a driver has a proposal for it
    MATCHED = "matched"  # the driver accepted
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # its departure window passed unmatched


class MatchStatus(StrEnum):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


LIVE_MATCH = (MatchStatus.PROPOSED.value, MatchStatus.ACCEPTED.value)


class Offer(SQLModel, table=True):
    __tablename__ = "ride_offers"
    __table_args__ = (
        CheckConstraint("seats_free >= 0 AND seats_free <= seats", name="ck_ride_offers_seats"),
        Index("ix_ride_offers_status_departure", "status", "departure_at"),
        Index("ix_ride_offers_region", "region", "status"),
        Index("ix_ride_offers_driver", "driver_id", "row_id"),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    driver_id: UUID = Field(foreign_key="users.id", nullable=False)
    origin_lat: float = Field(sa_column=Column(Float, nullable=False))
    origin_lon: float = Field(sa_column=Column(Float, nullable=False))
    destination_lat: float = Field(sa_column=Column(Float, nullable=False))
    destination_lon: float = Field(sa_column=Column(Float, nullable=False))
    #: The h3 parent cell of the origin: the matcher works region by region.
    region: str = Field(max_length=20)
    departure_at: datetime = Field(sa_column=utc_column("departure_at"))
    seats: int = Field(sa_column=Column(Integer, nullable=False))
    seats_free: int = Field(sa_column=Column(Integer, nullable=False))
    price_per_km_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    max_detour_km: float = Field(sa_column=Column(Float, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(sa_column=utc_column("created_at"))


class RideRequest(SQLModel, table=True):
    __tablename__ = "ride_requests"
    __table_args__ = (
        Index("ix_ride_requests_region", "region", "status"),
        Index("ix_ride_requests_status_latest", "status", "latest_departure"),
        Index("ix_ride_requests_rider", "rider_id", "row_id"),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    rider_id: UUID = Field(foreign_key="users.id", nullable=False)
    origin_lat: float = Field(sa_column=Column(Float, nullable=False))
    origin_lon: float = Field(sa_column=Column(Float, nullable=False))
    destination_lat: float = Field(sa_column=Column(Float, nullable=False))
    destination_lon: float = Field(sa_column=Column(Float, nullable=False))
    region: str = Field(max_length=20)
    earliest_departure: datetime = Field(sa_column=utc_column("earliest_departure"))
    latest_departure: datetime = Field(sa_column=utc_column("latest_departure"))
    seats: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(sa_column=utc_column("created_at"))


class Match(SQLModel, table=True):
    __tablename__ = "ride_matches"
    __table_args__ = (
        Index("uq_ride_matches_pair", "offer_id", "request_id", unique=True),
        Index(
            "uq_ride_matches_live_request",
            "request_id",
            unique=True,
            postgresql_where=text("status IN ('proposed', 'accepted')"),
            sqlite_where=text("status IN ('proposed', 'accepted')"),
        ),
        Index("ix_ride_matches_offer", "offer_id", "row_id"),
        Index("ix_ride_matches_request", "request_id", "row_id"),
        Index("ix_ride_matches_status_expiry", "status", "expires_at"),
    )

    row_id: int | None = Field(default=None, sa_column=row_id_column(primary_key=True))
    id: UUID = Field(default_factory=uuid4, sa_column_kwargs={"unique": True}, nullable=False)
    offer_id: UUID = Field(foreign_key="ride_offers.id", nullable=False)
    request_id: UUID = Field(foreign_key="ride_requests.id", nullable=False)
    driver_id: UUID = Field(foreign_key="users.id", nullable=False)
    rider_id: UUID = Field(foreign_key="users.id", nullable=False)
    seats: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    pickup_eta: datetime = Field(sa_column=utc_column("pickup_eta"))
    dropoff_eta: datetime = Field(sa_column=utc_column("dropoff_eta"))
    detour_km: float = Field(sa_column=Column(Float, nullable=False))
    fare_minor: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    expires_at: datetime = Field(sa_column=utc_column("expires_at"))
    #: The rider's fare hold once accepted (`ride:match:<id>:fare`).
    hold_id: str | None = Field(default=None, max_length=120)
    #: Who ended it early ("driver" or "rider"), and what the rider paid for a late cancel.
    cancelled_by: str | None = Field(default=None, max_length=16)
    fee_minor: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )
    created_at: datetime = Field(sa_column=utc_column("created_at"))
    updated_at: datetime = Field(sa_column=utc_column("updated_at"))
