"""Helpers for trust tests: a movable clock, admins, and completed transactions to rate."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.accounts import service as accounts
from app.accounts.models import Role
from app.db import SessionMaker
from app.main import create_app
from app.settings import Settings
from app.uow import UnitOfWork
from tests.support.users import app_notifier, sign_up
from trust import service
from trust.models import PartyRole, SubjectType


@dataclass
class MovableClock:
    """The app's one clock, which a test moves forward."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class TrustWorld:
    client: AsyncTestClient[Any]
    sessionmaker: SessionMaker
    clock: MovableClock

    @property
    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    async def user(self, roles: list[str] | None = None) -> tuple[uuid.UUID, dict[str, str]]:
        user_id, headers = await sign_up(self.client, roles=roles)
        return uuid.UUID(user_id), headers

    async def admin(self) -> tuple[uuid.UUID, dict[str, str]]:
        user_id, headers = await self.user()
        await accounts.grant_role(
            self.uow,
            user_id=user_id,
            role=Role.ADMIN,
            notify=app_notifier(self.client),
        )
        return user_id, headers

    async def completed(
        self,
        *parties: tuple[uuid.UUID, PartyRole],
        subject_type: SubjectType = SubjectType.MATCH,
        completed_at: datetime | None = None,
        protected: bool = False,
        currency: str = "CNY",
    ) -> uuid.UUID:
        """Register a completed transaction, as a ride's completion or a pool's settlement will."""
        subject_id = uuid.uuid4()
        async with self.uow as uow:
            await service.register_transaction(
                uow.session,
                subject_type=subject_type,
                subject_id=subject_id,
                parties=[service.Party(user_id, role) for user_id, role in parties],
                completed_at=completed_at or self.clock(),
                currency=currency,
                protected=protected,
            )
            await uow.commit()
        return subject_id


@pytest.fixture
async def world(settings: Settings, sessionmaker: SessionMaker) -> AsyncIterator[TrustWorld]:
    clock = MovableClock()
    async with AsyncTestClient(app=create_app(settings, clock=clock)) as client:
        yield TrustWorld(client=client, sessionmaker=sessionmaker, clock=clock)
