"""rides: offers, requests and matches

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _row_id() -> sa.Column:
    return sa.Column(
        "row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
    )


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _float(name: str) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "ride_offers",
        _row_id(),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("driver_id", sa.Uuid(), nullable=False),
        _float("origin_lat"),
        _float("origin_lon"),
        _float("destination_lat"),
        _float("destination_lon"),
        sa.Column("region", sa.String(length=20), nullable=False),
        _when("departure_at"),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("seats_free", sa.Integer(), nullable=False),
        sa.Column("price_per_km_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        _float("max_detour_km"),
        sa.Column("status", sa.String(length=16), nullable=False),
        _when("created_at"),
        sa.CheckConstraint(
            "seats_free >= 0 AND seats_free <= seats", name="ck_ride_offers_seats"
        ),
        sa.ForeignKeyConstraint(["driver_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_ride_offers_driver", "ride_offers", ["driver_id", "row_id"])
    op.create_index("ix_ride_offers_region", "ride_offers", ["region", "status"])
    op.create_index(
        "ix_ride_offers_status_departure", "ride_offers", ["status", "departure_at"]
    )

    op.create_table(
        "ride_requests",
        _row_id(),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("rider_id", sa.Uuid(), nullable=False),
        _float("origin_lat"),
        _float("origin_lon"),
        _float("destination_lat"),
        _float("destination_lon"),
        sa.Column("region", sa.String(length=20), nullable=False),
        _when("earliest_departure"),
        _when("latest_departure"),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(["rider_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_ride_requests_rider", "ride_requests", ["rider_id", "row_id"])
    op.create_index("ix_ride_requests_region", "ride_requests", ["region", "status"])
    op.create_index(
        "ix_ride_requests_status_latest", "ride_requests", ["status", "latest_departure"]
    )

    op.create_table(
        "ride_matches",
        _row_id(),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("offer_id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("driver_id", sa.Uuid(), nullable=False),
        sa.Column("rider_id", sa.Uuid(), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _when("pickup_eta"),
        _when("dropoff_eta"),
        _float("detour_km"),
        sa.Column("fare_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        _when("expires_at"),
        sa.Column("hold_id", sa.String(length=120), nullable=True),
        sa.Column("cancelled_by", sa.String(length=16), nullable=True),
        sa.Column("fee_minor", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(["offer_id"], ["ride_offers.id"]),
        sa.ForeignKeyConstraint(["request_id"], ["ride_requests.id"]),
        sa.ForeignKeyConstraint(["driver_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["rider_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("row_id"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(
        "uq_ride_matches_pair", "ride_matches", ["offer_id", "request_id"], unique=True
    )
    op.create_index(
        "uq_ride_matches_live_request",
        "ride_matches",
        ["request_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('proposed', 'accepted')"),
        sqlite_where=sa.text("status IN ('proposed', 'accepted')"),
    )
    op.create_index("ix_ride_matches_offer", "ride_matches", ["offer_id", "row_id"])
    op.create_index("ix_ride_matches_status_expiry", "ride_matches", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_table("ride_matches")
    op.drop_table("ride_requests")
    op.drop_table("ride_offers")
