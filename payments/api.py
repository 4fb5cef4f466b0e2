"""Wallet and ledger endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody

from app.auth import Principal, principal_of
from app.db import AsyncSession
from app.idempotency import idempotent_id
from app.pagination import (
    DEFAULT_LIMIT,
    CursorQuery,
    LimitQuery,
    Page,
    decode_cursor,
    encode_cursor,
)
from app.problems import problem_responses
from app.uow import UnitOfWork
from payments import chain_writer, service
from payments.records import TransferRecord
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


def transfer_out(row: TransferRecord, direction: Direction) -> TransferOut:
    return TransferOut(direction=direction, **{name: getattr(row, name) for name in _OUT_FIELDS})


def _transfer_id(request: Request[Any, Any, State], prefix: str) -> str:
    """Derived from the request's Idempotency-Key claim when there is one, so a retry (even one
    that re-runs after a crash) finishes the first run's transfer instead of making another."""
    derived = idempotent_id(request.scope)
    return f"{prefix}:{derived}" if derived else f"{prefix}:{uuid.uuid4().hex}"


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
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> TransferOut:
        row = await service.top_up(
            uow,
            provider=request.app.state.funding,
            user_id=principal.user_id,
            amount_minor=data.amount_minor,
            currency=data.currency,
            transfer_id=_transfer_id(request, "top_up"),
            now=now,
        )
        return transfer_out(row, "credit")

    @post(
        "/withdrawals",
        status_code=201,
        opt=IDEMPOTENT,
        summary="Pay money out of the wallet through the funding provider",
        description="Held first, captured when the provider pays out, voided if it declines. "
        "If the provider's answer is not known yet, the answer is the pending hold (status "
        "`pending`); a worker asks the provider until it is decided." + IDEMPOTENCY_DOC,
        responses=problem_responses(401, 402, 409, 422),
    )
    async def withdraw(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[FundingIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> TransferOut:
        settings = request.app.state.settings
        row = await service.withdraw(
            uow,
            provider=request.app.state.funding,
            user_id=principal.user_id,
            amount_minor=data.amount_minor,
            currency=data.currency,
            transfer_id=_transfer_id(request, "withdrawal"),
            hold_ttl=timedelta(seconds=settings.withdrawal_hold_ttl_s),
            now=now,
        )
        return transfer_out(row, "debit")

    @get("", summary="The caller's wallet in one currency", responses=problem_responses(401, 422))
    async def wallet(
        self,
        request: Request[Any, Any, State],
        reader: NamedDependency[AsyncSession],
        currency: FromQuery[Currency | None] = None,
    ) -> WalletOut:
        # The caller from the request, not as a second dependency: Litestar resolves two
        # dependencies of one depth in an anyio task group, ~15% of this one-row read.
        principal = principal_of(request)
        balance = await service.wallet_balance(
            reader, principal.user_id, currency or request.app.state.settings.default_currency
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
        reader: NamedDependency[AsyncSession],
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> Page[TransferOut]:
        before = decode_cursor(cursor)
        lines = await service.statement(
            reader, user_id=principal.user_id, limit=limit + 1, before_row_id=before
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
    async def head(self, reader: NamedDependency[AsyncSession]) -> LedgerHeadOut:
        seq, hash_ = await chain_writer.chain_head(reader)
        return LedgerHeadOut(seq=seq, hash=hash_)
