"""Helpers for service-level ledger tests."""

from __future__ import annotations

import shutil
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from app.db import AsyncSession
from payments import service
from payments.models import Transfer

COPOOL = shutil.which("copool") or str(Path(sys.executable).with_name("copool"))
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PROVIDER = "test"


def new_id(prefix: str = "t") -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


async def fund(
    session: AsyncSession, user_id: uuid.UUID, amount: int, currency: str = "EUR"
) -> Transfer:
    """Put money into a wallet from outside, as a top-up would."""
    return await service.transfer(
        session,
        service.TransferSpec(
            id=new_id("fund"),
            debit=service.external_funding(PROVIDER, currency),
            credit=service.wallet(user_id, currency),
            amount_minor=amount,
            kind="top_up",
            ref="test",
        ),
        now=NOW,
    )
