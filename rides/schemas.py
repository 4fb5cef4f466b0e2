"""msgspec structs that the rides API reads and writes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from matching.feasibility import MAX_SEATS
from payments.money import MAX_AMOUNT_MINOR
from payments.schemas import Currency

AwareDateTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a timezone")]
Seats = Annotated[int, Meta(ge=1, le=MAX_SEATS)]
Latitude = Annotated[float, Meta(ge=-90, le=90)]
Longitude = Annotated[float, Meta(ge=-180, le=180)]
MatchStatusName = Literal["proposed", "accepted", "declined", "expired", "completed", "cancelled"]


class PlaceIn(msgspec.Struct, forbid_unknown_fields=True):
    lat: Latitude
    lon: Longitude


class PlaceOut(msgspec.Struct):
    lat: float
    lon: float


class OfferIn(msgspec.Struct, forbid_unknown_fields=True):
    origin: PlaceIn
    destination: PlaceIn
    departure_at: AwareDateTime
    seats: Seats
    price_per_km_minor: Annotated[int, Meta(ge=0, le=MAX_AMOUNT_MINOR // 10_000)]
    currency: Currency
    max_detour_km: Annotated[float, Meta(ge=0, le=200)]


class RequestIn(msgspec.Struct, forbid_unknown_fields=True):
    origin: PlaceIn
    destination: PlaceIn
    earliest_departure: AwareDateTime
    latest_departure: AwareDateTime
    seats: Seats = 1


class MatchOut(msgspec.Struct):
    id: UUID
    offer_id: UUID
    request_id: UUID
    driver_id: UUID
    rider_id: UUID
    status: MatchStatusName
    seats: int
    pickup_eta: datetime
    dropoff_eta: datetime
    detour_km: float
    fare_minor: int
    currency: str
    expires_at: datetime
    #: Who ended it early (`driver`, `rider`, `no_show`) and the fee the rider paid for it.
    cancelled_by: str | None
    fee_minor: int
    created_at: datetime


class OfferOut(msgspec.Struct, tag="offer", tag_field="kind"):
    id: UUID
    driver_id: UUID
    origin: PlaceOut
    destination: PlaceOut
    departure_at: datetime
    seats: int
    seats_free: int
    price_per_km_minor: int
    currency: str
    max_detour_km: float
    status: Literal["open", "closed", "cancelled"]
    created_at: datetime


class RequestOut(msgspec.Struct, tag="request", tag_field="kind"):
    id: UUID
    rider_id: UUID
    origin: PlaceOut
    destination: PlaceOut
    earliest_departure: datetime
    latest_departure: datetime
    seats: int
    status: Literal["open", "proposed", "matched", "completed", "cancelled", "expired"]
    created_at: datetime
    #: The current match: live, else the completed one; null while none.
    match: MatchOut | None = None
