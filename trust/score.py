"""Reputation arithmetic (pure: no I/O, no clock, no settings)."""

from __future__ import annotations

import math
from enum import StrEnum

import msgspec


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    """What reputation is computed from (kept as one row per user by the service)."""

    rating_count: int = 0
    stars_sum: int = 0
    #: Ratings of 4 or 5 stars.
    positive_count: int = 0
    completed_count: int = 0
    #: Late cancellations and no-shows.
    cancelled_count: int = 0
    complaints_upheld: int = 0


class ScoreParams(msgspec.Struct, frozen=True, kw_only=True):
    """How a tally becomes a score and badges (built from settings by the app)."""

    #: The global prior the Bayesian average shrinks towards (1..5).
    prior_mean: float = 4.0
    #: How many "virtual ratings" the prior is worth (> 0).
    prior_weight: float = 5.0
    #: Stars taken off the score per upheld complaint (>= 0).
    complaint_penalty: float = 0.5
    #: Clean completions (completed - cancelled - complaints upheld) for `experienced`.
    experienced_after: int = 10
    top_rated_min_ratings: int = 10
    top_rated_min_score: float = 4.5


class Badge(StrEnum):
    """Shown next to a user's score, in this order; there is no verified-email badge yet."""

    INSURED = "insured"
    EXPERIENCED = "experienced"
    TOP_RATED = "top-rated"


class Reputation(msgspec.Struct, frozen=True, kw_only=True):
    """What others see of a user's record."""

    #: Within [1, 5], two decimals.
    score: float
    #: The plain mean of the stars, two decimals; None with no ratings.
    rating_average: float | None
    #: Wilson lower bound (95 %) of the share of 4-5 star ratings, three decimals; None with no
    #: ratings.
    positive_lower_bound: float | None
    rating_count: int
    completed_count: int
    #: cancelled / (completed + cancelled), three decimals; 0.0 before any transaction ended.
    cancellation_rate: float
    complaints_upheld: int
    #: Badge values, in Badge order.
    badges: list[str]


MIN_SCORE, MAX_SCORE = 1.0, 5.0
Z_95 = 1.959964


def bayesian_average(
    *, stars_sum: int, rating_count: int, prior_mean: float, prior_weight: float
) -> float:
    """The mean of the stars with `prior_weight` virtual ratings of `prior_mean` added."""
    if prior_weight <= 0 or rating_count < 0:
        # A zero weight would divide by zero for a user with no ratings.
        raise ValueError("prior_weight must be positive and rating_count non-negative")
    return (prior_mean * prior_weight + stars_sum) / (prior_weight + rating_count)


def wilson_lower_bound(*, positive: int, total: int, z: float = Z_95) -> float:
    """The Wilson interval's lower bound of positive/total, within [0, share]; 0.0 with none."""
    if not 0 <= positive <= total:
        raise ValueError("positive must be within 0..total")
    if total == 0:
        return 0.0
    share = positive / total
    spread = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    bound = (share + z * z / (2 * total) - spread) / (1 + z * z / total)
    # The interval always contains the observed share; clamp the float noise at its edges.
    return min(share, max(0.0, bound))


def _check(tally: Tally, params: ScoreParams) -> None:
    counts = (
        tally.rating_count,
        tally.stars_sum,
        tally.positive_count,
        tally.completed_count,
        tally.cancelled_count,
        tally.complaints_upheld,
    )
    if min(counts) < 0:
        raise ValueError("counts are never negative")
    if tally.positive_count > tally.rating_count:
        raise ValueError("more positive ratings than ratings")
    if not tally.rating_count <= tally.stars_sum <= 5 * tally.rating_count:
        raise ValueError("stars_sum must be within 1..5 stars per rating")
    if not MIN_SCORE <= params.prior_mean <= MAX_SCORE:
        raise ValueError("prior_mean must be within 1..5")
    if params.complaint_penalty < 0:
        # A negative penalty would let an upheld complaint raise the score.
        raise ValueError("complaint_penalty must not be negative")


def apply_rating(tally: Tally, stars: int) -> Tally:
    """The tally with one more rating of `stars` (1..5)."""
    if not 1 <= stars <= 5:
        raise ValueError("stars are 1 to 5")
    return msgspec.structs.replace(
        tally,
        rating_count=tally.rating_count + 1,
        stars_sum=tally.stars_sum + stars,
        positive_count=tally.positive_count + (stars >= 4),
    )


def reputation(tally: Tally, params: ScoreParams, *, insured: bool) -> Reputation:
    """The reputation a tally earns: a score within [1, 5] and the badges."""
    _check(tally, params)
    shrunk = bayesian_average(
        stars_sum=tally.stars_sum,
        rating_count=tally.rating_count,
        prior_mean=params.prior_mean,
        prior_weight=params.prior_weight,
    )
    penalised = shrunk - params.complaint_penalty * tally.complaints_upheld
    score = round(min(MAX_SCORE, max(MIN_SCORE, penalised)), 2)
    rated = tally.rating_count > 0
    ended = tally.completed_count + tally.cancelled_count
    clean = tally.completed_count - tally.complaints_upheld - tally.cancelled_count
    badges = [
        badge
        for badge, earned in (
            (Badge.INSURED, insured),
            (Badge.EXPERIENCED, clean >= params.experienced_after),
            (
                Badge.TOP_RATED,
                tally.rating_count >= params.top_rated_min_ratings
                and score >= params.top_rated_min_score
                and tally.complaints_upheld == 0,
            ),
        )
        if earned
    ]
    return Reputation(
        score=score,
        rating_average=round(tally.stars_sum / tally.rating_count, 2) if rated else None,
        positive_lower_bound=round(
            wilson_lower_bound(positive=tally.positive_count, total=tally.rating_count), 3
        )
        if rated
        else None,
        rating_count=tally.rating_count,
        completed_count=tally.completed_count,
        cancellation_rate=round(tally.cancelled_count / ended, 3) if ended else 0.0,
        complaints_upheld=tally.complaints_upheld,
        badges=[badge.value for badge in badges],
    )
