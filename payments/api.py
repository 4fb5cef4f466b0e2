"""Wallet and ledger endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody

from app.auth import Principal
from app.db import AsyncSession
from app.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    encode_cursor,
)
from app.problems import problem_responses
from payments import service
from payments.schemas import (
    Currency,
    Direction,
    FundingIn,
    LedgerHeadOut,
    TransferOut,
    WalletOut,
)

IDEMPOTENT = {"idempotent": True}
IDEMPOTENCY_DOC = (
    " Send an `Idempotency-Key` header: a repeat with the same key and body returns the first "
    "answer; the same key with another body is 409."
)


_OUT_FIELDS = [name for name in TransferOut.__struct_fields__ if name != "direction"]


def transfer_out(row: service.TransferRecord, direction: Direction) -> TransferOut:
    return TransferOut(direction=direction, **{name: getattr(row, name) for name in _OUT_FIELDS})


async def _fund(
    operation: Any,
    direction: Direction,
    request: Request[Any, Any, State],
    data: FundingIn,
    principal: Principal,
    session: AsyncSession,
    now: datetime,
) -> TransferOut:
    """A top-up or withdrawal; its transfer id derives from the Idempotency-Key when there is
    one, so a retry pays once even if the key's stored answer were lost."""
    key = request.headers.get("idempotency-key")
    prefix = operation.__name__
    row = await operation(
        session,
        provider=request.app.state.funding,
        user_id=principal.user_id,
        amount_minor=data.amount_minor,
        currency=data.currency,
        transfer_id=f"{prefix}:{principal.user_id}:{key}" if key else f"{prefix}:{uuid.uuid4()}",
        now=now,
    )
    return transfer_out(row, direction)


class WalletController(Controller):
    path = "/v1/wallet"
    tags = ["wallet"]

    @post(
        "/top-ups",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Add money to the wallet from the funding provider (sandbox)",
        description="Amounts whose last four digits are 0002 are declined by the sandbox."
        + IDEMPOTENCY_DOC,
        responses=problem_responses(401, 402, 409, 422),
    )
    async def top_up(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[FundingIn],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        now: NamedDependency[datetime],
    ) -> TransferOut:
        return await _fund(service.top_up, "credit", request, data, principal, session, now)

    @post(
        "/withdrawals",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Pay money out of the wallet through the funding provider",
        description="Held first, captured when the provider pays out, voided if it declines."
        + IDEMPOTENCY_DOC,
        responses=problem_responses(401, 402, 409, 422),
    )
    async def withdraw(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[FundingIn],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        now: NamedDependency[datetime],
    ) -> TransferOut:
        return await _fund(service.withdraw, "debit", request, data, principal, session, now)

    @get("", summary="The caller's wallet in one currency", responses=problem_responses(401, 422))
    async def wallet(
        self,
        request: Request[Any, Any, State],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        currency: FromQuery[Currency | None] = None,
    ) -> WalletOut:
        balance = await service.wallet_balance(
            session, principal.user_id, currency or request.app.state.settings.default_currency
        )
        return WalletOut(
            currency=balance.currency,
            available_minor=balance.available_minor,
            held_minor=balance.held_minor,
            balance_minor=balance.balance_minor,
        )

    @get(
        "/transactions",
        summary="The caller's statement, newest first, with each entry's chain seq and hash",
        responses=problem_responses(401, 422),
    )
    async def transactions(
        self,
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[TransferOut]:
        before = decode_cursor(cursor)
        await service.chain_all(session)
        lines = await service.statement(
            session, user_id=principal.user_id, limit=limit + 1, before_row_id=before
        )
        page = lines[:limit]
        has_more = len(lines) > limit and page[-1].transfer.row_id is not None
        return Page(
            items=[transfer_out(line.transfer, line.direction) for line in page],
            next_cursor=encode_cursor(page[-1].transfer.row_id or 0) if has_more else None,
        )


class LedgerController(Controller):
    path = "/v1/ledger"
    tags = ["wallet"]

    @get(
        "/head",
        summary="The newest entry of the hash chain: hold it to verify your statement later",
        responses=problem_responses(401),
    )
    async def head(self, session: NamedDependency[AsyncSession]) -> LedgerHeadOut:
        await service.chain_all(session)
        seq, hash_ = await service.chain_head(session)
        return LedgerHeadOut(seq=seq, hash=hash_)
