"""Helpers for service-level ledger tests."""

from __future__ import annotations

import shutil
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from app.db import SessionMaker
from app.uow import UnitOfWork
from payments import service
from payments.records import TransferRecord, TransferSpec, external_funding, wallet

COPOOL = shutil.which("copool") or str(Path(sys.executable).with_name("copool"))
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PROVIDER = "test"


def new_id(prefix: str = "t") -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


def unit_of_work(sessions: SessionMaker | UnitOfWork) -> UnitOfWork:
    """A unit of work on these sessions (a UnitOfWork is reusable: it is returned as is)."""
    return sessions if isinstance(sessions, UnitOfWork) else UnitOfWork(sessions)


async def fund(
    sessions: SessionMaker | UnitOfWork,
    user_id: uuid.UUID,
    amount: int,
    currency: str = "EUR",
    *,
    now: datetime = NOW,
) -> TransferRecord:
    """Put money into a wallet from outside, as a top-up would (a use case of its own)."""
    return await service.transfer(
        unit_of_work(sessions),
        TransferSpec(
            id=new_id("fund"),
            debit=external_funding(PROVIDER, currency),
            credit=wallet(user_id, currency),
            amount_minor=amount,
            kind="top_up",
            ref="test",
        ),
        now=now,
    )
