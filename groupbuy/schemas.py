"""msgspec structs that the groupbuy API reads and writes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from groupbuy.pricing import MAX_TIERS
from payments.money import MAX_AMOUNT_MINOR
from payments.schemas import Currency

#: Put a limit on everything: no pool or join is bigger than this.
MAX_QUANTITY = 1_000_000
MAX_JOIN_QUANTITY = 10_000

#: What a pool's title, description and pickup label hold at most.
TITLE_MAX_CHARS = 120
DESCRIPTION_MAX_CHARS = 2000
LABEL_MAX_CHARS = 200

Quantity = Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
Price = Annotated[int, Meta(gt=0, le=MAX_AMOUNT_MINOR, description="integer minor units")]
Title = Annotated[
    str, Meta(min_length=1, max_length=TITLE_MAX_CHARS, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")
]
Description = Annotated[str, Meta(max_length=DESCRIPTION_MAX_CHARS, pattern=r"^[^\x00]*$")]
AwareDateTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a timezone")]
PoolStatusName = Literal["open", "succeeded", "failed", "cancelled"]
JoinStatusName = Literal["active", "left", "charged", "released"]


class TierIn(msgspec.Struct, forbid_unknown_fields=True):
    min_quantity: Quantity
    unit_price_minor: Price


class PickupIn(msgspec.Struct, forbid_unknown_fields=True):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]
    label: Annotated[str, Meta(max_length=LABEL_MAX_CHARS, pattern=r"^[^\x00]*$")] = ""


class PoolIn(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    currency: Currency
    tiers: Annotated[list[TierIn], Meta(min_length=1, max_length=MAX_TIERS)]
    min_quantity: Quantity
    max_quantity: Quantity
    deadline: AwareDateTime
    description: Description = ""
    pickup: PickupIn | None = None
    #: Purchase protection: each join also pays a premium (COPOOL_PROTECTION_PREMIUM_BP) into
    #: the insurance fund, which pays members out on an upheld complaint.
    protected: bool = False


class TierOut(msgspec.Struct):
    min_quantity: int
    unit_price_minor: int


class NextTierOut(msgspec.Struct):
    min_quantity: int
    unit_price_minor: int
    quantity_needed: int


class PickupOut(msgspec.Struct):
    lat: float
    lon: float
    label: str


class PoolOut(msgspec.Struct):
    id: UUID
    organizer_id: UUID
    title: str
    description: str
    currency: str
    tiers: list[TierOut]
    min_quantity: int
    max_quantity: int
    deadline: datetime
    status: PoolStatusName
    committed_quantity: int
    participant_count: int
    current_unit_price_minor: int
    next_tier: NextTierOut | None
    final_unit_price_minor: int | None
    created_at: datetime
    pickup: PickupOut | None
    protected: bool
    #: Set once every join is charged or released and the organizer is paid.
    settled_at: datetime | None
    #: Distance from `near`, when the list was asked for by place.
    distance_km: float | None = None


class JoinIn(msgspec.Struct, forbid_unknown_fields=True):
    quantity: Annotated[int, Meta(ge=1, le=MAX_JOIN_QUANTITY)]


class JoinOut(msgspec.Struct):
    id: UUID
    pool_id: UUID
    quantity: int
    #: What the hold reserves while the join is active: quantity x the first tier's price (plus
    #: any premium); 0 once it was captured (charged) or released (left, released).
    held_minor: int
    status: JoinStatusName
    #: What the pool's success finally took (quantity x the final price, plus any premium).
    charged_minor: int
    created_at: datetime


class MyJoinOut(msgspec.Struct):
    id: UUID
    pool_id: UUID
    quantity: int
    held_minor: int
    status: JoinStatusName
    charged_minor: int
    created_at: datetime
    pool_title: str
    pool_status: PoolStatusName
    currency: str
    #: The final price once the pool succeeded, else the current one.
    unit_price_minor: int
