"""Reputation arithmetic: pure, no I/O."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trust.score import (
    Badge,
    ScoreParams,
    Tally,
    apply_rating,
    bayesian_average,
    reputation,
    wilson_lower_bound,
)

DEFAULTS = ScoreParams()


@st.composite
def tallies(draw: st.DrawFn, max_ratings: int = 10_000) -> Tally:
    """Any tally ratings could have produced: positives gave 4-5 stars, the others 1-3."""
    rating_count = draw(st.integers(0, max_ratings))
    positive_count = draw(st.integers(0, rating_count))
    others = rating_count - positive_count
    stars_sum = draw(st.integers(4 * positive_count + others, 5 * positive_count + 3 * others))
    return Tally(
        rating_count=rating_count,
        stars_sum=stars_sum,
        positive_count=positive_count,
        completed_count=draw(st.integers(0, 1_000)),
        cancelled_count=draw(st.integers(0, 1_000)),
        complaints_upheld=draw(st.integers(0, 50)),
    )


params = st.builds(
    ScoreParams,
    prior_mean=st.floats(1.0, 5.0),
    prior_weight=st.floats(0.1, 1_000.0),
    complaint_penalty=st.floats(0.0, 5.0),
)


def score_of(tally: Tally, params: ScoreParams = DEFAULTS) -> float:
    return reputation(tally, params, insured=False).score


def ratings(*stars: int) -> Tally:
    tally = Tally()
    for star in stars:
        tally = apply_rating(tally, star)
    return tally


@given(tallies(), params)
def test_another_five_star_rating_never_lowers_the_score(tally: Tally, params: ScoreParams) -> None:
    assert score_of(apply_rating(tally, 5), params) >= score_of(tally, params)


@given(tallies(), params)
def test_a_one_star_rating_never_raises_the_score(tally: Tally, params: ScoreParams) -> None:
    assert score_of(apply_rating(tally, 1), params) <= score_of(tally, params)


@given(tallies(), params)
def test_the_score_is_always_within_one_and_five(tally: Tally, params: ScoreParams) -> None:
    assert 1.0 <= score_of(tally, params) <= 5.0


@given(tallies())
def test_an_upheld_complaint_lowers_the_score_unless_it_is_already_one(tally: Tally) -> None:
    before = score_of(tally)
    after = score_of(msgspec.structs.replace(tally, complaints_upheld=tally.complaints_upheld + 1))
    assert after < before or before == after == 1.0


def test_with_few_ratings_the_score_stays_near_the_prior() -> None:
    # (4 x 5 virtual ratings + 1) / 6
    assert score_of(ratings(1)) == 3.5
    assert score_of(ratings(5)) == 4.17
    assert score_of(Tally()) == 4.0


def test_with_many_ratings_the_score_approaches_their_average() -> None:
    assert score_of(ratings(*[2] * 1_000)) == 2.01


def test_each_upheld_complaint_takes_the_penalty_off_down_to_one() -> None:
    assert score_of(Tally(complaints_upheld=1)) == 3.5
    assert score_of(Tally(complaints_upheld=6)) == 1.0


def test_a_user_with_no_ratings_has_no_averages_and_no_cancellation_rate() -> None:
    shown = reputation(Tally(), DEFAULTS, insured=False)
    assert shown.rating_average is None
    assert shown.positive_lower_bound is None
    assert shown.cancellation_rate == 0.0
    assert shown.badges == []


def test_the_reputation_shows_rounded_averages_and_the_raw_counts() -> None:
    tally = msgspec.structs.replace(
        ratings(5, 4, 4), completed_count=2, cancelled_count=1, complaints_upheld=0
    )
    shown = reputation(tally, DEFAULTS, insured=False)
    assert shown.rating_average == 4.33
    assert shown.positive_lower_bound == 0.439
    assert shown.cancellation_rate == 0.333
    assert (shown.rating_count, shown.completed_count, shown.complaints_upheld) == (3, 2, 0)


def test_a_rating_of_four_or_five_stars_counts_as_positive() -> None:
    assert ratings(1, 2, 3, 4, 5) == Tally(rating_count=5, stars_sum=15, positive_count=2)


@pytest.mark.parametrize("stars", [0, 6, -1])
def test_a_rating_outside_one_to_five_stars_is_refused(stars: int) -> None:
    with pytest.raises(ValueError, match="stars"):
        apply_rating(Tally(), stars)


@given(st.integers(0, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_the_wilson_bound_is_a_share_no_higher_than_the_observed_one(
    counts: tuple[int, int],
) -> None:
    positive, total = counts
    bound = wilson_lower_bound(positive=positive, total=total)
    assert 0.0 <= bound <= 1.0
    if positive:
        assert bound < positive / total
    else:
        assert bound == 0.0


@given(st.integers(1, 1_000), st.integers(0, 1_000), st.integers(2, 10))
def test_the_wilson_bound_rises_with_more_positives_at_the_same_share(
    positive: int, negative: int, factor: int
) -> None:
    total = positive + negative
    fewer = wilson_lower_bound(positive=positive, total=total)
    more = wilson_lower_bound(positive=positive * factor, total=total * factor)
    assert more > fewer


def test_the_wilson_bound_of_ten_out_of_ten_is_about_seventy_two_percent() -> None:
    # With every trial positive the bound is n / (n + z^2).
    assert wilson_lower_bound(positive=10, total=10) == pytest.approx(10 / (10 + 1.959964**2))
    assert wilson_lower_bound(positive=0, total=0) == 0.0


def test_the_bayesian_average_weighs_the_prior_as_virtual_ratings() -> None:
    average = bayesian_average(stars_sum=10, rating_count=2, prior_mean=4.0, prior_weight=2.0)
    assert average == 4.5


def badges(tally: Tally, *, insured: bool = False) -> list[str]:
    return reputation(tally, DEFAULTS, insured=insured).badges


def test_the_insured_badge_follows_the_insurance_flag() -> None:
    assert badges(Tally(), insured=True) == [Badge.INSURED]
    assert badges(Tally(), insured=False) == []


def test_the_experienced_badge_needs_ten_clean_completions() -> None:
    assert badges(Tally(completed_count=10)) == [Badge.EXPERIENCED]
    assert badges(Tally(completed_count=9)) == []
    assert badges(Tally(completed_count=11, cancelled_count=2)) == []
    assert badges(Tally(completed_count=12, cancelled_count=1, complaints_upheld=1)) == [
        Badge.EXPERIENCED
    ]


def test_the_top_rated_badge_needs_ten_ratings_a_high_score_and_no_upheld_complaint() -> None:
    assert badges(ratings(*[5] * 10)) == [Badge.TOP_RATED]  # (20 + 50) / 15 = 4.67
    assert badges(ratings(*[5] * 9)) == []
    assert badges(ratings(*[5] * 5, *[4] * 5)) == []  # (20 + 45) / 15 = 4.33
    # A light penalty keeps the score high, so only the complaint itself withholds the badge.
    light = ScoreParams(complaint_penalty=0.1)
    upheld = msgspec.structs.replace(ratings(*[5] * 40), complaints_upheld=1)
    assert score_of(upheld, light) >= light.top_rated_min_score
    assert reputation(upheld, light, insured=False).badges == []


def test_badges_come_in_badge_order() -> None:
    tally = msgspec.structs.replace(ratings(*[5] * 10), completed_count=10)
    assert badges(tally, insured=True) == ["insured", "experienced", "top-rated"]


@pytest.mark.parametrize(
    ("tally", "message"),
    [
        (Tally(completed_count=-1), "negative"),
        (Tally(rating_count=-1, stars_sum=-1), "negative"),
        (Tally(rating_count=1, stars_sum=5, positive_count=2), "positive"),
        (Tally(rating_count=2, stars_sum=1), "stars_sum"),
        (Tally(rating_count=2, stars_sum=11), "stars_sum"),
        (Tally(stars_sum=3), "stars_sum"),
    ],
)
def test_an_impossible_tally_is_refused(tally: Tally, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reputation(tally, DEFAULTS, insured=False)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (ScoreParams(prior_weight=0.0), "prior_weight"),
        (ScoreParams(prior_mean=5.5), "prior_mean"),
        (ScoreParams(complaint_penalty=-0.5), "complaint_penalty"),
    ],
)
def test_parameters_that_break_the_score_are_refused(params: ScoreParams, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reputation(Tally(), params, insured=False)


def test_a_wilson_bound_of_more_positives_than_trials_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        wilson_lower_bound(positive=3, total=2)
