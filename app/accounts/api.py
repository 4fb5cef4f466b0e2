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
    ReputationOut,
    TokenOut,
    WalletSummaryOut,
)
from app.auth import PUBLIC, Principal, RateLimiter, issue_token
from app.db import AsyncSession
from app.problems import problem_responses
from payments import service as payments


def _client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


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
            f"register:ip:{_client_address(request)}",
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
        description="Rate limited per client address (every attempt) and per email (failures).",
        responses=problem_responses(401, 413, 422, 429),
    )
    async def login(
        self,
        request: Request[Any, Any, State],
        data: JSONBody[LoginIn],
        session: NamedDependency[AsyncSession],
    ) -> TokenOut:
        state = request.app.state
        limiter: RateLimiter = state.limiter
        settings = state.settings
        email_key = f"login:email:{data.email.strip().lower()}"
        wait_s = max(
            await limiter.hit(
                f"login:ip:{_client_address(request)}",
                limit=settings.login_limit_per_ip,
                window_s=settings.login_window_s,
            ),
            await limiter.blocked_for(email_key, limit=settings.login_limit_per_email),
        )
        _refuse_if_waiting(wait_s, "too many login attempts; try again later")
        try:
            user = await service.authenticate(session, email=data.email, password=data.password)
        except InvalidCredentials:
            await limiter.hit(
                email_key, limit=settings.login_limit_per_email, window_s=settings.login_window_s
            )
            raise
        return TokenOut(token=issue_token(state.jwt_auth, user))


class MeController(Controller):
    path = "/v1/me"
    tags = ["accounts"]

    @get("", summary="The caller's account", responses=problem_responses(401))
    async def me(
        self,
        request: Request[Any, Any, State],
        principal: NamedDependency[Principal],
        session: NamedDependency[AsyncSession],
    ) -> MeOut:
        user = await service.get_user(session, principal.user_id)
        if user is None:
            raise NotFoundException("this account no longer exists")
        balance = await payments.wallet_balance(
            session, user.id, request.app.state.settings.default_currency
        )
        return MeOut(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            roles=[r.value for r in user.role_list],
            reputation=ReputationOut(
                score=None, rating_average=None, rating_count=0, completed_count=0
            ),
            wallet=WalletSummaryOut(
                currency=balance.currency,
                available_minor=balance.available_minor,
                held_minor=balance.held_minor,
                balance_minor=balance.balance_minor,
            ),
        )
