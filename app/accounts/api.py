"""Accounts: register, log in, who am I."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, TooManyRequestsException
from litestar.params import JSONBody

from app.accounts import service
from app.accounts.errors import InvalidCredentials
from app.accounts.models import Role
from app.accounts.schemas import (
    LoginIn,
    MeOut,
    RegisterIn,
    RegisterOut,
    ReputationSummaryOut,
    TokenOut,
    WalletSummaryOut,
)
from app.auth import PUBLIC, Principal, RateLimiter, issue_token, request_address
from app.db import AsyncSession
from app.problems import problem_responses
from payments import service as payments
from trust import service as trust

#: An address that signed in to an account is remembered for it this long (see `login`).
KNOWN_ADDRESS_TTL_S = 30 * 24 * 3600
KNOWN_ADDRESSES_MAX = 32


def _refuse_if_waiting(wait_s: int, detail: str) -> None:
    if wait_s:
        raise TooManyRequestsException(detail, headers={"Retry-After": str(wait_s)})


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["accounts"]

    @post(
        "/register",
        status_code=201,
        summary="Create an account and get a token",
        security=PUBLIC,
        responses=problem_responses(409, 413, 422, 429),
    )
    async def register(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[RegisterIn],
        session: NamedDependency[AsyncSession],
        now: NamedDependency[datetime],
    ) -> RegisterOut:
        state = request.app.state
        limiter: RateLimiter = state.limiter
        settings = state.settings
        wait_s = await limiter.hit(
            f"register:ip:{request_address(request, settings)}",
            limit=settings.login_limit_per_ip,
            window_s=settings.login_window_s,
        )
        _refuse_if_waiting(wait_s, "too many sign-ups from this address")
        user = await service.register_user(
            session,
            email=data.email,
            password=data.password,
            display_name=data.display_name,
            roles=[Role(r) for r in data.roles],
            now=now,
        )
        return RegisterOut(user_id=user.id, token=issue_token(state.jwt_auth, user))

    @post(
        "/login",
        status_code=200,
        summary="Exchange email and password for a token",
        security=PUBLIC,
        description=(
            "Rate limited per client address (every attempt), per email and address (failures), "
            "and per email from all addresses (failures; addresses that signed in to the account "
            "before are exempt). A wrong guess from elsewhere never locks the owner out."
        ),
        responses=problem_responses(401, 403, 413, 422, 429),
    )
    async def login(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[LoginIn],
        session: NamedDependency[AsyncSession],
    ) -> TokenOut:
        """Three counters per window: every attempt per address (`login_limit_per_ip`); failures
        per email and address (`login_limit_per_email`), which limits a guesser without touching
        the owner elsewhere; failures per email from everywhere (`login_limit_per_email_total`),
        which bounds online guessing from many addresses and, while exceeded, refuses every
        address except those that signed in to this account before.
        """
        state = request.app.state
        limiter: RateLimiter = state.limiter
        settings = state.settings
        address = request_address(request, settings)
        email = data.email.strip().lower()
        pair_key = f"login:fail:{email}:{address}"
        total_key = f"login:fail:{email}"
        known_key = f"login:known:{email}"
        window_s = settings.login_window_s
        wait_s = max(
            await limiter.hit(
                f"login:ip:{address}", limit=settings.login_limit_per_ip, window_s=window_s
            ),
            await limiter.blocked_for(pair_key, limit=settings.login_limit_per_email),
        )
        if not wait_s:
            total_wait_s = await limiter.blocked_for(
                total_key, limit=settings.login_limit_per_email_total
            )
            if total_wait_s and not await limiter.knows(known_key, address):
                wait_s = total_wait_s
        _refuse_if_waiting(wait_s, "too many login attempts; try again later")
        try:
            user = await service.authenticate(session, email=data.email, password=data.password)
        except InvalidCredentials:
            await limiter.hit(pair_key, limit=settings.login_limit_per_email, window_s=window_s)
            await limiter.hit(
                total_key, limit=settings.login_limit_per_email_total, window_s=window_s
            )
            raise
        await limiter.remember(
            known_key, address, ttl_s=KNOWN_ADDRESS_TTL_S, max_members=KNOWN_ADDRESSES_MAX
        )
        return TokenOut(token=issue_token(state.jwt_auth, user))


class MeController(Controller):
    path = "/v1/me"
    tags = ["accounts"]

    @get("", summary="The caller's account", responses=problem_responses(401))
    async def me(
        self,
        request: Request[Any, Any, State],
        principal: NamedDependency[Principal],
        reader: NamedDependency[AsyncSession],
        now: NamedDependency[datetime],
    ) -> MeOut:
        user = await service.get_user(reader, principal.user_id)
        if user is None:
            raise NotFoundException("this account no longer exists")
        state = request.app.state
        balance = await payments.wallet_balance(reader, user.id, state.settings.default_currency)
        standing = await trust.reputation_of(
            reader, user_id=user.id, params=state.trust.score, now=now
        )
        reputation = standing.reputation
        return MeOut(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            roles=[r.value for r in user.role_list],
            reputation=ReputationSummaryOut(
                score=reputation.score,
                rating_average=reputation.rating_average,
                rating_count=reputation.rating_count,
                completed_count=reputation.completed_count,
                badges=list(reputation.badges),
            ),
            wallet=WalletSummaryOut(
                currency=balance.currency,
                available_minor=balance.available_minor,
                held_minor=balance.held_minor,
                balance_minor=balance.balance_minor,
            ),
        )
