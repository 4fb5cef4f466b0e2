"""Ratings: each party rates each counterparty once, 1-5 stars, within the window, double-blind."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Table, select, update
from sqlalchemy.exc import IntegrityError

from app.accounts.models import User
from app.db import AsyncSession
from app.uow import UnitOfWork, use_case
from trust.errors import (
    AlreadyRated,
    RatingWindowClosed,
)
from trust.models import (
    Rating,
    SubjectType,
)
from trust.registry import counterparties
from trust.reputation import add_to_reputation, require_user
from trust.text import optional_text

RATINGS: Table = Rating.__table__  # type: ignore[attr-defined]
USERS: Table = User.__table__  # type: ignore[attr-defined]

REVEAL_BATCH = 500
COMMENT_MAX_CHARS = 500


def _rating_deltas(rows: Sequence[Any]) -> dict[UUID, Counter[str]]:
    """Reputation changes for revealed ratings, given rows of (ratee_id, stars)."""
    deltas: dict[UUID, Counter[str]] = {}
    for ratee_id, stars in rows:
        delta = deltas.setdefault(ratee_id, Counter())
        delta.update(rating_count=1, stars_sum=stars, positive_count=int(stars >= 4))
    return deltas


@use_case
async def rate(
    uow: UnitOfWork,
    *,
    rater_id: UUID,
    subject_type: SubjectType,
    subject_id: UUID,
    ratee_id: UUID,
    stars: int,
    comment: str | None,
    window: timedelta,
    now: datetime,
) -> Rating:
    """Rate a counterparty once, within the window. Double-blind: the rating stays hidden until
    the counterparty rated back (both are revealed at once) or the window closed (the sweep)."""
    comment = optional_text(comment, max_chars=COMMENT_MAX_CHARS)
    async with uow:
        session = uow.session
        transaction, role = await counterparties(
            session,
            subject_type=subject_type,
            subject_id=subject_id,
            caller_id=rater_id,
            other_id=ratee_id,
        )
        assert transaction.row_id is not None
        due = transaction.completed_at + window
        if now >= due:
            raise RatingWindowClosed(f"ratings for this transaction closed at {due.isoformat()}")
        rating = Rating(
            transaction_row_id=transaction.row_id,
            rater_id=rater_id,
            ratee_id=ratee_id,
            rater_role=role.value,
            stars=stars,
            comment=comment or None,
            created_at=now,
            reveal_due_at=due,
        )
        session.add(rating)
        try:
            await session.flush()
        except IntegrityError:
            raise AlreadyRated("you already rated this user for this transaction") from None
        # The party rows of both users are locked (see _roles), so a concurrent rating back
        # either committed before (and is revealed here) or sees this one after.
        back = await session.execute(
            update(RATINGS)
            .where(
                RATINGS.c.transaction_row_id == transaction.row_id,
                RATINGS.c.rater_id == ratee_id,
                RATINGS.c.ratee_id == rater_id,
                RATINGS.c.revealed_at.is_(None),
            )
            .values(revealed_at=now)
            .returning(RATINGS.c.ratee_id, RATINGS.c.stars)
        )
        revealed = back.all()
        if revealed:
            rating.revealed_at = now
            await add_to_reputation(session, _rating_deltas([*revealed, (ratee_id, stars)]))
        await uow.commit()
    return rating


@use_case
async def reveal_due_ratings(uow: UnitOfWork, *, now: datetime, limit: int = REVEAL_BATCH) -> int:
    """Reveal ratings whose window closed unanswered and count them in reputations."""
    async with uow:
        due = (
            select(RATINGS.c.row_id)
            .where(RATINGS.c.revealed_at.is_(None), RATINGS.c.reveal_due_at <= now)
            .order_by(RATINGS.c.reveal_due_at)
            .limit(limit)
        )
        # The conditional UPDATE reveals each rating once, whoever else reveals it concurrently.
        rows = (
            await uow.session.execute(
                update(RATINGS)
                .where(RATINGS.c.row_id.in_(due), RATINGS.c.revealed_at.is_(None))
                .values(revealed_at=RATINGS.c.reveal_due_at)
                .returning(RATINGS.c.ratee_id, RATINGS.c.stars)
            )
        ).all()
        await add_to_reputation(uow.session, _rating_deltas(rows))
        await uow.commit()
    return len(rows)


class PublicRating(msgspec.Struct, frozen=True, kw_only=True):
    row_id: int
    stars: int
    comment: str | None
    created_at: datetime
    rater_display_name: str
    role: str


async def public_ratings(
    session: AsyncSession, *, user_id: UUID, limit: int, before: int | None
) -> list[PublicRating]:
    """The user's revealed ratings, newest first (one index range)."""
    await require_user(session, user_id)
    query = (
        select(
            RATINGS.c.row_id,
            RATINGS.c.stars,
            RATINGS.c.comment,
            RATINGS.c.created_at,
            USERS.c.display_name.label("rater_display_name"),
            RATINGS.c.rater_role.label("role"),
        )
        .join(USERS, USERS.c.id == RATINGS.c.rater_id)
        .where(RATINGS.c.ratee_id == user_id, RATINGS.c.revealed_at.is_not(None))
        .order_by(RATINGS.c.row_id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(RATINGS.c.row_id < before)
    return [PublicRating(**row._mapping) for row in (await session.execute(query)).all()]
