"""The interleaving scheduler on its own (reliability.scheduler), on toy programs: counters
whose increments are one step or a read and a write."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from reliability.scheduler import (
    Run,
    decode,
    encode,
    exhaustive,
    randomized,
    replay,
)

Point = Callable[[str], None]


class Expected(Exception):
    """An exception a toy actor may end with as part of its behaviour."""


@dataclass
class Counter:
    """Actors that each add 1 `ops` times, a point before each; `racy`: as a read, a
    point, then a write (a lost update waits between them)."""

    actors: Sequence[tuple[str, Callable[[], object]]]
    state: dict[str, int]
    total: int
    checks: list[int] = field(default_factory=list)

    def check(self) -> list[str]:
        self.checks.append(self.state["x"])
        return []

    def finish(self) -> list[str]:
        x = self.state["x"]
        return [] if x == self.total else [f"lost update: x={x}, wanted {self.total}"]


def counter(ops: int, racy: bool = False, actors: int = 2) -> Callable[[Point], Counter]:
    def setup(point: Point) -> Counter:
        state = {"x": 0}

        def body() -> None:
            for n in range(ops):
                point(f"add {n}")
                if racy:
                    seen = state["x"]
                    point("write")
                    state["x"] = seen + 1
                else:
                    state["x"] += 1

        return Counter([(f"t{i}", body) for i in range(actors)], state, ops * actors)

    return setup


def interleavings(segments: int, bound: int) -> int:
    """By brute force: the orders of two actors' `segments` segments each with at most
    `bound` switches away from an actor that had segments left."""
    count = 0
    for order in set(itertools.permutations("a" * segments + "b" * segments)):
        left = {"a": segments, "b": segments}
        switches = 0
        for before, after in itertools.pairwise(order):
            left[before] -= 1
            switches += before != after and left[before] > 0
        count += switches <= bound
    return count


@pytest.mark.parametrize("ops", [1, 2, 3])
@pytest.mark.parametrize("bound", [0, 1, 2])
def test_exhaustive_search_runs_each_schedule_within_the_bound_once(ops: int, bound: int) -> None:
    report = exhaustive(counter(ops), preemptions=bound)

    # Each actor runs `ops + 1` segments: up to its first point, then after each.
    assert report.schedules == interleavings(ops + 1, bound)
    assert report.complete
    assert not report.failing


def test_without_preemptions_each_actor_runs_to_its_end_in_turn() -> None:
    report = exhaustive(counter(2), preemptions=0)

    assert report.schedules == 2  # a then b, b then a


def test_exhaustive_search_finds_a_lost_update_with_one_preemption() -> None:
    assert not exhaustive(counter(1, racy=True), preemptions=0).failing

    report = exhaustive(counter(1, racy=True), preemptions=1)

    run = report.failed
    assert run is not None
    assert run.failures == ["lost update: x=1, wanted 2"]
    assert replay(counter(1, racy=True), run.schedule).failures == run.failures


def test_a_replayed_schedule_takes_the_same_steps() -> None:
    run = replay(counter(2, racy=True, actors=3), "a2b3c2a")

    again = replay(counter(2, racy=True, actors=3), run.schedule)

    assert (again.schedule, again.trace, again.failures) == (run.schedule, run.trace, run.failures)
    assert run.schedule.startswith("a2b3c2a")


def test_the_same_seed_gives_the_same_schedule() -> None:
    runs = [randomized(counter(3, racy=True, actors=3), runs=1, seed=7) for _ in range(2)]

    failed = [report.failed for report in runs]
    assert failed[0] is not None
    assert failed[1] is not None
    assert failed[0].seed == failed[1].seed == 7
    assert failed[0].schedule == failed[1].schedule


def test_a_random_search_reports_the_seed_that_replays_its_failure() -> None:
    report = randomized(counter(1, racy=True), runs=200, seed=0)

    run = report.failed
    assert run is not None
    assert run.seed is not None
    alone = randomized(counter(1, racy=True), runs=1, seed=run.seed).failed
    assert alone is not None
    assert alone.schedule == run.schedule
    assert replay(counter(1, racy=True), run.schedule).failures == run.failures


def test_checks_run_before_the_first_step_and_after_every_step() -> None:
    trials: list[Counter] = []

    def setup(point: Point) -> Counter:
        trials.append(counter(2)(point))
        return trials[-1]

    run = replay(setup, "a3b3")

    assert trials[-1].checks == [0, 0, 1, 2, 2, 3, 4]
    assert run.steps == 6


def test_schedules_encode_runs_of_one_actor() -> None:
    assert encode([0, 0, 0, 1, 0, 2, 2]) == "a3bac2"
    assert decode("a3bac2") == [0, 0, 0, 1, 0, 2, 2]
    with pytest.raises(ValueError, match="not a schedule"):
        decode("3a")


def test_a_schedule_that_names_an_ended_actor_is_reported_as_diverged() -> None:
    run = replay(counter(1), "a5")

    assert run.failures == ["replay diverged: step 2: actor a has ended"]


@dataclass
class Program:
    actors: Sequence[tuple[str, Callable[[], object]]]

    def check(self) -> list[str]:
        return []

    def finish(self) -> list[str]:
        return []


def raising(error: BaseException) -> Callable[[Point], Program]:
    def setup(point: Point) -> Program:
        def fails() -> None:
            point("before")
            raise error

        def fine() -> None:
            point("one")

        return Program([("fails", fails), ("fine", fine)])

    return setup


def test_an_untyped_exception_is_a_failure_that_names_its_type_and_place() -> None:
    run = replay(raising(KeyError("k")), "", expected=(Expected,))

    assert len(run.failures) == 1
    assert run.failures[0].startswith("fails: untyped exception KeyError: 'k' at ")
    assert "test_scheduler.py" in run.failures[0]


def test_an_expected_exception_is_an_outcome_not_a_failure() -> None:
    run = replay(raising(Expected("refused")), "", expected=(Expected,))

    assert run.failures == []


def test_a_hung_actor_is_reported_and_does_not_hang_the_run() -> None:
    release = threading.Event()

    def setup(point: Point) -> Program:
        def hangs() -> None:
            point("before")
            release.wait()  # blocks with no point: the scheduler never gets control back

        def parked() -> None:
            point("one")
            point("two")

        return Program([("hangs", hangs), ("parked", parked)])

    started = time.monotonic()
    try:
        run: Run = replay(setup, "", timeout_s=0.2)
    finally:
        release.set()

    assert time.monotonic() - started < 3
    assert run.failures == ["hang: hangs ran 0.2 s past a point"]
