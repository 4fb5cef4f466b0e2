"""Many funded members at once, without a thousand password hashes: rows inserted directly,
wallets funded in linked batches, tokens signed with the app's key."""

from __future__ import annotations

import uuid
from datetime import datetime

from app.accounts.models import User
from app.auth import create_jwt_auth, issue_token
from app.db import SessionMaker
from app.settings import Settings
from app.uow import UnitOfWork
from payments import ledger
from payments.records import TransferSpec, external_funding, wallet
from tests.support.ledger import PROVIDER

FUND_BATCH = 100


async def funded_members(
    sessionmaker: SessionMaker,
    settings: Settings,
    *,
    count: int,
    amount_minor: int,
    now: datetime,
    currency: str = "CNY",
) -> list[tuple[uuid.UUID, dict[str, str]]]:
    """`count` members, each with `amount_minor` in their wallet; (user id, auth headers)."""
    users = [
        User(
            email=f"crowd-{uuid.uuid4().hex[:16]}@example.com",
            password_hash="not-a-hash",
            display_name="Crowd",
            roles="member",
            created_at=now,
        )
        for _ in range(count)
    ]
    async with UnitOfWork(sessionmaker) as uow:
        uow.session.add_all(users)
        await uow.commit()
    for start in range(0, count, FUND_BATCH):
        async with UnitOfWork(sessionmaker) as uow:
            await ledger.post_linked(
                uow.session,
                [
                    TransferSpec(
                        id=f"crowd-fund:{user.id}",
                        debit=external_funding(PROVIDER, currency),
                        credit=wallet(user.id, currency),
                        amount_minor=amount_minor,
                        kind="top_up",
                        ref="test",
                    )
                    for user in users[start : start + FUND_BATCH]
                ],
                now=now,
            )
            await uow.commit()
    jwt_auth = create_jwt_auth(settings)
    return [(user.id, {"Authorization": f"Bearer {issue_token(jwt_auth, user)}"}) for user in users]
