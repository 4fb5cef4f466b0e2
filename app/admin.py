"""Admin decisions that change accounts and trust together, each in one unit of work with its
audit row: verifying insurance (which grants the driver role) and bans. Used by the admin API
below and by `copool admin` (app/cli.py). Wiring: imports accounts and trust.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.accounts.service import AuthChanged
from app.auth import Principal, require_role
from app.db import AsyncSession
from app.problems import problem_responses
from app.uow import UnitOfWork
from trust import service as trust
from trust.api import admin_actor, policy_out
from trust.errors import ConflictOfInterest, PolicyNotFound
from trust.models import AuditAction, InsurancePolicy, PolicyStatus
from trust.schemas import BanIn, BanOut, PolicyOut


async def verify_insurance(
    uow: UnitOfWork,
    *,
    policy_id: UUID,
    admin_id: UUID | None,
    actor: str,
    now: datetime,
    notify: AuthChanged,
) -> InsurancePolicy:
    """Verify a pending policy and grant its holder the driver role, atomically (the role takes
    effect on their next request)."""
    async with uow:
        user_id = (await trust.get_policy(uow.session, policy_id)).user_id
    if user_id == admin_id:
        raise ConflictOfInterest("an admin may not verify their own policy")
    verified: list[InsurancePolicy] = []

    async def decide(session: AsyncSession, _: User) -> None:
        verified.append(
            await trust.verify_policy(
                session, policy_id=policy_id, admin_id=admin_id, actor=actor, now=now
            )
        )

    await accounts.grant_role(uow, user_id=user_id, role=Role.DRIVER, notify=notify, also=decide)
    return verified[0]


async def verify_pending_insurance(
    uow: UnitOfWork, *, user_id: UUID, actor: str, now: datetime, notify: AuthChanged
) -> InsurancePolicy:
    """Verify the user's policy that waits for a decision (`copool admin verify-insurance`)."""
    async with uow:
        pending = await trust.list_policies(
            uow.session, status=PolicyStatus.PENDING, user_id=user_id, limit=1, before=None
        )
    if not pending:
        raise PolicyNotFound("this user has no policy waiting for verification")
    return await verify_insurance(
        uow, policy_id=pending[0].id, admin_id=None, actor=actor, now=now, notify=notify
    )


async def ban(
    uow: UnitOfWork,
    *,
    user_id: UUID,
    admin_id: UUID | None,
    actor: str,
    reason: str,
    now: datetime,
    notify: AuthChanged,
) -> User:
    """Ban the user (403 `banned` from their next request on; the trust gate denies them)."""
    if user_id == admin_id:
        raise ConflictOfInterest("an admin may not ban themselves")

    async def record(session: AsyncSession, user: User) -> None:
        await trust.audit(
            session,
            actor_id=admin_id,
            actor=actor,
            action=AuditAction.BAN,
            target_id=user.id,
            reason=reason,
            detail=user.email,
            now=now,
        )

    return await accounts.ban_user(
        uow, user_id=user_id, reason=reason, now=now, notify=notify, also=record
    )


async def unban(
    uow: UnitOfWork,
    *,
    user_id: UUID,
    admin_id: UUID | None,
    actor: str,
    now: datetime,
    notify: AuthChanged,
) -> User:
    """Lift a ban, effective on the user's next request."""

    async def record(session: AsyncSession, user: User) -> None:
        await trust.audit(
            session,
            actor_id=admin_id,
            actor=actor,
            action=AuditAction.UNBAN,
            target_id=user.id,
            reason=None,
            detail=user.email,
            now=now,
        )

    return await accounts.unban_user(uow, user_id=user_id, notify=notify, also=record)


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    guards = [require_role(Role.ADMIN)]

    @post(
        "/insurance/{policy_id:uuid}/verify",
        status_code=200,
        summary="Verify a pending policy: its holder gets the driver role at once",
        responses=problem_responses(401, 403, 404, 409, 422),
    )
    async def verify(
        self,
        request: Request[Any, Any, State],
        policy_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> PolicyOut:
        policy = await verify_insurance(
            uow,
            policy_id=policy_id,
            admin_id=principal.user_id,
            actor=admin_actor(principal),
            now=now,
            notify=request.app.state.notify_auth_change,
        )
        return policy_out(policy)

    @post(
        "/users/{user_id:uuid}/ban",
        status_code=200,
        summary="Ban a user: their next request is refused (403 banned)",
        responses=problem_responses(401, 403, 404, 422),
    )
    async def ban(
        self,
        request: Request[Any, Any, State],
        user_id: FromPath[UUID],
        data: JSONBody[BanIn],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> BanOut:
        await ban(
            uow,
            user_id=user_id,
            admin_id=principal.user_id,
            actor=admin_actor(principal),
            reason=data.reason,
            now=now,
            notify=request.app.state.notify_auth_change,
        )
        return BanOut(user_id=user_id, banned=True)

    @post(
        "/users/{user_id:uuid}/unban",
        status_code=200,
        summary="Lift a user's ban",
        responses=problem_responses(401, 403, 404),
    )
    async def unban(
        self,
        request: Request[Any, Any, State],
        user_id: FromPath[UUID],
        principal: NamedDependency[Principal],
        uow: NamedDependency[UnitOfWork],
        now: NamedDependency[datetime],
    ) -> BanOut:
        await unban(
            uow,
            user_id=user_id,
            admin_id=principal.user_id,
            actor=admin_actor(principal),
            now=now,
            notify=request.app.state.notify_auth_change,
        )
        return BanOut(user_id=user_id, banned=False)
