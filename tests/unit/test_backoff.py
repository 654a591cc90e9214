"""Jittered backoff stays within its bounds, is reproducible, and respects a deadline."""

from __future__ import annotations

import random
from itertools import islice

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.backoff import Backoff, Deadline, DecorrelatedJitter, FullJitter
from domain.errors import InvalidInput

DRAWS = 60


class HighestRandom(random.Random):
    """Always draws the top of the range, which exposes a backoff's ceilings exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowestRandom(random.Random):
    """Always draws the bottom of the range."""

    def uniform(self, a: float, b: float) -> float:
        return a


def first(backoff: Backoff, rng: random.Random, count: int = DRAWS) -> list[int]:
    return list(islice(backoff.delays(rng), count))


bounds = st.integers(min_value=1, max_value=5_000).flatmap(
    lambda base: st.tuples(st.just(base), st.integers(min_value=base, max_value=200_000))
)
seeds = st.integers(min_value=0, max_value=2**32)


@given(bounds=bounds, seed=seeds)
def test_full_jitter_waits_between_zero_and_the_capped_doubling_of_base(
    bounds: tuple[int, int], seed: int
) -> None:
    base, cap = bounds

    delays = first(FullJitter(base, cap), random.Random(seed))

    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(cap, base * 2**attempt), (attempt, delay)


def test_full_jitter_ceilings_double_from_base_until_they_reach_the_cap() -> None:
    assert first(FullJitter(20, 1_000), HighestRandom(), 9) == [
        20,
        40,
        80,
        160,
        320,
        640,
        1_000,
        1_000,
        1_000,
    ]
    assert first(FullJitter(20, 1_000), LowestRandom(), 5) == [0, 0, 0, 0, 0]


def test_full_jitter_keeps_doubling_safely_long_after_it_reached_the_cap() -> None:
    delays = first(FullJitter(1, 2**40), HighestRandom(), 100)

    assert delays[:3] == [1, 2, 4]
    assert max(delays) <= 2**40
    assert delays[-1] == 2**32  # doublings stop at 32 rather than growing without end


def test_full_jitter_spreads_waits_across_the_whole_range_up_to_the_cap() -> None:
    delays = first(FullJitter(10, 500), random.Random(3), 400)[10:]  # all capped by now

    assert max(delays) <= 500
    assert max(delays) >= 475
    assert min(delays) <= 25


@given(bounds=bounds, seed=seeds)
def test_decorrelated_jitter_waits_between_base_and_cap(bounds: tuple[int, int], seed: int) -> None:
    base, cap = bounds

    delays = first(DecorrelatedJitter(base, cap), random.Random(seed))

    assert all(base <= delay <= cap for delay in delays), delays


def test_decorrelated_jitter_grows_by_at_most_three_times_and_stops_at_the_cap() -> None:
    assert first(DecorrelatedJitter(20, 1_000), HighestRandom(), 7) == [
        60,
        180,
        540,
        1_000,
        1_000,
        1_000,
        1_000,
    ]
    assert first(DecorrelatedJitter(20, 1_000), LowestRandom(), 4) == [20, 20, 20, 20]


@pytest.mark.parametrize("kind", [FullJitter, DecorrelatedJitter])
@given(bounds=bounds, seed=seeds)
def test_the_same_seed_gives_the_same_waits(
    kind: type[Backoff], bounds: tuple[int, int], seed: int
) -> None:
    backoff = kind(*bounds)

    assert first(backoff, random.Random(seed)) == first(backoff, random.Random(seed))


@pytest.mark.parametrize("kind", [FullJitter, DecorrelatedJitter])
def test_different_seeds_give_different_waits(kind: type[Backoff]) -> None:
    backoff = kind(20, 1_000)

    assert first(backoff, random.Random(1)) != first(backoff, random.Random(2))


def test_default_backoff_starts_at_20_ms_and_caps_at_one_second() -> None:
    assert (FullJitter().base_ms, FullJitter().cap_ms) == (20, 1_000)
    assert first(DecorrelatedJitter(), HighestRandom(), 5)[-1] == 1_000


@pytest.mark.parametrize("kind", [FullJitter, DecorrelatedJitter])
@pytest.mark.parametrize(
    ("base", "cap", "field"),
    [(0, 1_000, "base_ms"), (-5, 1_000, "base_ms"), (100, 99, "cap_ms"), (2, 1, "cap_ms")],
)
def test_rejects_a_base_below_one_or_a_cap_below_base(
    kind: type[Backoff], base: int, cap: int, field: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        kind(base, cap)

    assert raised.value.field == field


@pytest.mark.parametrize("kind", [FullJitter, DecorrelatedJitter])
def test_accepts_a_cap_equal_to_base(kind: type[Backoff]) -> None:
    delays = first(kind(7, 7), random.Random(0))

    assert all(0 <= delay <= 7 for delay in delays)
    assert 7 in delays


def test_a_deadline_reports_the_time_left_and_zero_once_reached() -> None:
    deadline = Deadline(at_ms=10_000)

    assert deadline.remaining_ms(9_250) == 750
    assert deadline.remaining_ms(10_000) == 0
    assert deadline.remaining_ms(12_000) == 0


def test_a_deadline_clips_a_wait_to_the_time_left() -> None:
    deadline = Deadline(at_ms=10_000)

    assert deadline.clip(200, now_ms=9_000) == 200
    assert deadline.clip(2_000, now_ms=9_000) == 1_000
    assert deadline.clip(50, now_ms=10_000) == 0
    assert deadline.clip(50, now_ms=11_000) == 0


@given(
    at=st.integers(min_value=0, max_value=10**13),
    now=st.integers(min_value=0, max_value=10**13),
    delay=st.integers(min_value=0, max_value=10**7),
)
def test_a_clipped_wait_never_ends_after_the_deadline(at: int, now: int, delay: int) -> None:
    deadline = Deadline(at)

    clipped = deadline.clip(delay, now)

    assert 0 <= clipped <= delay
    assert clipped == delay or now + clipped == max(now, at)
    assert now + clipped <= max(now, at)
