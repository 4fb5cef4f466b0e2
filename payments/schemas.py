"""What the wallet and ledger API reads and writes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from payments.money import MAX_AMOUNT_MINOR

Currency = Annotated[
    str,
    Meta(
        pattern=r"^[A-Z]{3}$",
        description="An active ISO 4217 code such as CNY, with its ISO minor unit "
        "(CNY 2 decimals, JPY 0, BHD 3); fund codes and precious metals are refused "
        "(422 unknown-currency).",
        examples=["CNY"],
    ),
]
Direction = Literal["credit", "debit"]
AmountMinor = Annotated[int, Meta(gt=0, le=MAX_AMOUNT_MINOR, description="integer minor units")]


class FundingIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_minor: AmountMinor
    currency: Currency


class TransferOut(msgspec.Struct):
    id: str
    kind: str
    amount_minor: int
    currency: str
    status: str
    ref: str
    created_at: datetime
    #: Position and hash in the ledger chain; null for a hold, or for an instant before chaining.
    seq: int | None
    hash: str | None
    direction: Direction
    #: A reservation: it moves nothing by itself. What it became is a line of its own
    #: (`parent_id` = its id): a capture (posted: the money moved) or a void (nothing moved).
    #: The lines with `is_hold` false and status `posted` sum (credits less debits) to the
    #: balance.
    is_hold: bool = False
    parent_id: str | None = None
    expires_at: datetime | None = None


class WalletOut(msgspec.Struct):
    currency: str
    available_minor: int
    held_minor: int
    balance_minor: int


class LedgerHeadOut(msgspec.Struct):
    seq: int
    hash: str
