"""Where outside money comes from and goes to: a FundingProvider, and the built-in sandbox.

A card processor adapter implements the same protocol: `top_up` charges the card with the
transfer id as the processor's idempotency key (so a retry never charges twice) and answers
succeeded/declined; `withdraw` pays out the same way; `status` looks a payment up by our
reference. Register it in `app.main.create_app` (state `funding`) instead of the sandbox; the
ledger side (account `external_funding:<provider>:<currency>`) stays the same.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Protocol

import msgspec


class FundingStatus(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    UNKNOWN = "unknown"


class FundingResult(msgspec.Struct, frozen=True):
    status: FundingStatus
    provider_ref: str
    reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is FundingStatus.SUCCEEDED


class FundingProvider(Protocol):
    name: str

    async def top_up(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        """Charge the user's payment method; `reference` is our idempotency key."""
        ...

    async def withdraw(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        """Pay money out to the user's bank account; `reference` is our idempotency key."""
        ...

    async def status(self, *, reference: str) -> FundingResult:
        """What became of the payment with this reference."""
        ...


class SandboxFundingProvider:
    """Instant success, like a test card; amounts whose last four digits are 0002 decline."""

    name = "sandbox"

    def __init__(self) -> None:
        self._seen: dict[str, FundingResult] = {}

    def _answer(self, reference: str, amount_minor: int) -> FundingResult:
        provider_ref = "sbx_" + hashlib.sha256(reference.encode()).hexdigest()[:20]
        if amount_minor % 10_000 == 2:
            result = FundingResult(FundingStatus.DECLINED, provider_ref, "card_declined")
        else:
            result = FundingResult(FundingStatus.SUCCEEDED, provider_ref)
        self._seen[reference] = result
        return result

    async def top_up(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return self._answer(reference, amount_minor)

    async def withdraw(self, *, reference: str, amount_minor: int, currency: str) -> FundingResult:
        return self._answer(reference, amount_minor)

    async def status(self, *, reference: str) -> FundingResult:
        # A reference the sandbox never saw was never paid: as final as a decline.
        return self._seen.get(reference) or FundingResult(
            FundingStatus.DECLINED, "", "payment_not_found"
        )


def funding_provider(name: str) -> FundingProvider:
    """The provider a deployment names in COPOOL_FUNDING_PROVIDER."""
    if name == SandboxFundingProvider.name:
        return SandboxFundingProvider()
    raise ValueError(f"no funding provider named {name!r}")
