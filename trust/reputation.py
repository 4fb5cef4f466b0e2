"""Reputation: one row per user, changed with additive upserts in the unit of work of whatever
changes it (a revealed rating, a completion, a complaint decision), read as one indexed row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Table, select

from app.accounts.models import User
from app.db import AsyncSession, DriverQuery, any_param, dialect_insert, on_postgres
from trust import score
from trust.errors import (
    UserNotFound,
)
from trust.models import (
    Reputation,
)

REPUTATIONS: Table = Reputation.__table__  # type: ignore[attr-defined]
USERS: Table = User.__table__  # type: ignore[attr-defined]


async def add_to_reputation(session: AsyncSession, deltas: dict[UUID, Counter[str]]) -> None:
    """Add to users' reputation counters, creating missing rows, in ascending user id order (so
    concurrent use cases touching the same users lock their rows in one order)."""
    for user_id in sorted(deltas, key=str):
        values = {name: n for name, n in deltas[user_id].items() if n}
        if not values:
            continue
        insert = dialect_insert(session, REPUTATIONS).values(user_id=user_id, **values)
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["user_id"],
                set_={name: REPUTATIONS.c[name] + n for name, n in values.items()},
            )
        )


class InsuranceState(msgspec.Struct, frozen=True):
    verified: bool
    expires_at: datetime


class ReputationView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: UUID
    banned: bool
    roles: frozenset[str]
    reputation: score.Reputation
    insurance: InsuranceState | None
    #: Complaints filed against the user, decided or not (public, like the upheld count).
    complaints_received: int


def _reputation_query() -> Any:
    return select(USERS.c.id.label("user_id_"), USERS.c.banned_at, USERS.c.roles, REPUTATIONS)


def _view(user_id: UUID, values: Any, params: score.ScoreParams, now: datetime) -> ReputationView:
    tally = score.Tally(
        **{name: values[name] or 0 for name in score.Tally.__struct_fields__},
    )
    expires_at = values["insurance_expires_at"]
    insured = expires_at is not None and expires_at > now
    return ReputationView(
        user_id=user_id,
        banned=values["banned_at"] is not None,
        roles=frozenset(r for r in values["roles"].split(",") if r),
        reputation=score.reputation(tally, params, insured=insured),
        insurance=InsuranceState(insured, expires_at) if expires_at else None,
        complaints_received=values["complaints_received"] or 0,
    )


async def reputation_of(
    session: AsyncSession, *, user_id: UUID, params: score.ScoreParams, now: datetime
) -> ReputationView:
    """A user's reputation: one indexed row (users joined to trust_reputations)."""
    row = (
        await session.execute(
            _reputation_query()
            .outerjoin(REPUTATIONS, REPUTATIONS.c.user_id == USERS.c.id)
            .where(USERS.c.id == user_id, USERS.c.deactivated_at.is_(None))
        )
    ).first()
    if row is None:
        raise UserNotFound(f"no user with id {user_id}")
    return _view(user_id, row._mapping, params, now)


def _reputations_query(users: Any) -> Any:
    return (
        _reputation_query()
        .outerjoin(REPUTATIONS, REPUTATIONS.c.user_id == USERS.c.id)
        .where(users, USERS.c.deactivated_at.is_(None))
    )


#: `reputations_of` on PostgreSQL, run by the driver (a batch of joins reads it every time).
_PG_REPUTATIONS = DriverQuery(_reputations_query(any_param(USERS.c.id, "ids")))


async def reputations_of(
    session: AsyncSession, *, user_ids: Sequence[UUID], params: score.ScoreParams, now: datetime
) -> dict[UUID, ReputationView]:
    """Several users' reputations in one query; users missing or deactivated are left out."""
    rows: Sequence[Any]
    if on_postgres(session):
        rows = await _PG_REPUTATIONS.fetch(session, ids=list(user_ids))
    else:
        query = _reputations_query(USERS.c.id.in_(list(user_ids)))
        rows = (await session.execute(query)).mappings().all()
    return {row["user_id_"]: _view(row["user_id_"], row, params, now) for row in rows}


async def require_user(session: AsyncSession, user_id: UUID) -> None:
    found = await session.execute(
        select(USERS.c.id).where(USERS.c.id == user_id, USERS.c.deactivated_at.is_(None))
    )
    if found.first() is None:
        raise UserNotFound(f"no user with id {user_id}")
