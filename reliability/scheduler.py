"""A deterministic scheduler for code run on threads: one actor runs at a time, and control
changes hands only where an actor calls `point(label)`, so every interleaving of those
points can be chosen, explored and replayed (the idea of awslabs/shuttle and of
FoundationDB's simulation, in a small harness).

A run is fully determined by its choices (which actor runs after each point), written as
a compact schedule string: `a3b2a` is actor a for 3 segments, b for 2, a for 1. Strategies:
- `exhaustive`: depth-first over every schedule with at most `preemptions` preemptions (a
  preemption is a switch away from an actor that could have continued; a switch when an
  actor ends is free), up to `max_schedules` runs;
- `randomized`: seeded PCT schedules (Burckhardt et al., "A randomized scheduler with
  probabilistic guarantees of finding bugs", 2010): random actor priorities with `depth - 1`
  random points where the running actor drops to the lowest priority. Uniform random
  choice switches at almost every point, and rarely runs one actor through a long step
  sequence while another waits at a chosen point, which is what races on a protocol need;
- `replay`: one schedule string (or a seed, through `randomized`), exactly as recorded.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class Trial(Protocol):
    """One run's program: its actors, and the checks the scheduler calls between steps."""

    actors: Sequence[tuple[str, Callable[[], object]]]

    def check(self) -> list[str]:
        """Violations in the state now (every actor is stopped at a point, or done)."""

    def finish(self) -> list[str]:
        """Violations once every actor is done."""


# Exception types an actor may end with as part of the behaviour under test.
Expected = tuple[type[BaseException], ...]
# A trial is built afresh for every run, given the point function its actors call.
Setup = Callable[[Callable[[str], None]], Trial]


@dataclass
class Run:
    schedule: str
    steps: int
    failures: list[str]
    trace: list[str] = field(default_factory=list)  # "actor: label" of every step run
    seed: int | None = None


@dataclass
class Report:
    schedules: int
    failing: list[Run]  # the first failing run of each kind of failure found
    complete: bool = False  # every schedule within the bound was run (exhaustive only)

    @property
    def failed(self) -> Run | None:
        return self.failing[0] if self.failing else None


class Diverged(Exception):
    """A replayed schedule named an actor that had already ended: not the same program."""


class _Abandoned(BaseException):
    """Ends a parked actor when its run is over (a BaseException, so that no `except
    Exception` in the code under test can swallow it)."""


def encode(choices: Sequence[int]) -> str:
    runs = ((ALPHABET[c], len(list(same))) for c, same in itertools.groupby(choices))
    return "".join(actor + (str(n) if n > 1 else "") for actor, n in runs)


def decode(schedule: str) -> list[int]:
    if not re.fullmatch(r"([a-z]\d*)*", schedule):
        raise ValueError(f"not a schedule: {schedule!r}")
    found = re.findall(r"([a-z])(\d*)", schedule)
    return [ALPHABET.index(a) for a, n in found for _ in range(int(n or 1))]


class Chooser(Protocol):
    def choose(self, runnable: list[int], current: int | None) -> int: ...


def _ordered(runnable: list[int], current: int | None) -> list[int]:
    """The options at a point, the one that preempts nobody first."""
    return [current, *(i for i in runnable if i != current)] if current in runnable else runnable


class _Guided:
    """Follows `prefix`, then never preempts; records every decision for the search."""

    def __init__(self, prefix: Sequence[int]) -> None:
        self.prefix = prefix
        self.decisions: list[tuple[list[int], int, bool]] = []  # options, taken, preempting

    def choose(self, runnable: list[int], current: int | None) -> int:
        options = _ordered(runnable, current)
        step = len(self.decisions)
        choice = self.prefix[step] if step < len(self.prefix) else options[0]
        if choice not in options:
            raise Diverged(f"step {step}: actor {ALPHABET[choice]} has ended")
        self.decisions.append((options, options.index(choice), current in runnable))
        return choice


class _PCT:
    def __init__(self, rng: random.Random, depth: int, length: int) -> None:
        self.rng, self.depth = rng, depth
        self.priority: list[int] = []
        # Change points lower the running actor below every initial priority (>= depth).
        self.changes = {rng.randrange(length): depth - 1 - i for i in range(depth - 1)}
        self.step = 0

    def choose(self, runnable: list[int], current: int | None) -> int:
        if not self.priority:  # the first choice: every actor is runnable
            count = len(runnable)
            self.priority = self.rng.sample(range(self.depth, self.depth + count), count)
        if current in runnable and self.step in self.changes:
            self.priority[current] = self.changes[self.step]
        self.step += 1
        return max(runnable, key=lambda i: self.priority[i])


class Scheduler:
    """Runs one trial under one chooser. `expected`: exception types an actor may end with
    as part of the behaviour under test; any other is a failure ("untyped exception")."""

    def __init__(
        self,
        chooser: Chooser,
        expected: Expected = (),
        *,
        step_timeout_s: float = 10.0,
        max_steps: int = 20_000,
    ) -> None:
        self._chooser = chooser
        self._expected = expected
        self._timeout_s = step_timeout_s
        self._max_steps = max_steps
        self._cond = threading.Condition()
        self._turn: int | None = None  # the actor running; None: the scheduler's turn
        self._abandon = False
        self._actors: dict[int, int] = {}  # thread ident -> actor index
        self._labels: dict[int, str] = {}
        self._done: set[int] = set()
        self._untyped: list[str] = []
        self.outcomes: dict[str, object] = {}  # actor -> its result or typed exception

    def point(self, label: str) -> None:
        """Let the scheduler choose who runs next; a no-op outside an actor (set-up and
        checks run unscheduled)."""
        index = self._actors.get(threading.get_ident())
        if index is None:
            return
        with self._cond:
            self._labels[index] = label
            self._turn = None
            self._cond.notify_all()
            self._wait_turn(index)

    def _wait_turn(self, index: int) -> None:
        self._cond.wait_for(lambda: self._turn == index or self._abandon)
        if self._abandon:
            raise _Abandoned

    def run(self, trial: Trial) -> Run:
        threads = [
            threading.Thread(target=self._body, args=(i, n, f), daemon=True, name=f"actor-{n}")
            for i, (n, f) in enumerate(trial.actors)
        ]
        for thread in threads:
            thread.start()
        try:
            return self._steps(trial, [name for name, _ in trial.actors])
        finally:
            self._end(threads)

    def _steps(self, trial: Trial, names: list[str]) -> Run:
        choices: list[int] = []
        trace: list[str] = []
        current: int | None = None
        failures = trial.check()
        while not failures:
            runnable = [i for i in range(len(names)) if i not in self._done]
            if not runnable:
                failures += trial.finish()
                break
            if len(choices) >= self._max_steps:
                failures.append(f"livelock: still running after {self._max_steps} steps")
                break
            try:
                current = self._chooser.choose(runnable, current)
            except Diverged as diverged:
                failures.append(f"replay diverged: {diverged}")
                break
            choices.append(current)
            trace.append(f"{names[current]}: {self._labels.get(current, 'start')}")
            with self._cond:
                self._turn = current
                self._cond.notify_all()
                if not self._cond.wait_for(lambda: self._turn is None, self._timeout_s):
                    failures.append(f"hang: {names[current]} ran {self._timeout_s} s past a point")
            failures += [f"{names[current]}: {untyped}" for untyped in self._untyped]
            failures += trial.check() if not failures else []
        return Run(encode(choices), len(choices), failures, trace)

    def _body(self, index: int, name: str, actor: Callable[[], object]) -> None:
        with self._cond:
            self._actors[threading.get_ident()] = index
            try:
                self._wait_turn(index)
            except _Abandoned:
                return
        try:
            self.outcomes[name] = actor()
        except _Abandoned:
            return
        except self._expected as typed:
            self.outcomes[name] = typed
        except BaseException as error:  # any other type: what the run reports
            where = traceback.extract_tb(error.__traceback__)[-1]
            self._untyped.append(
                f"untyped exception {type(error).__name__}: {error}"
                f" at {where.filename}:{where.lineno}"
            )
        with self._cond:
            self._done.add(index)
            self._turn = None
            self._cond.notify_all()

    def _end(self, threads: list[threading.Thread]) -> None:
        """Parked actors end at once; a hung one is left behind (a daemon thread)."""
        with self._cond:
            self._abandon = True
            self._cond.notify_all()
        for thread in threads:
            thread.join(timeout=1.0)


def run_once(setup: Setup, chooser: Chooser, expected: Expected, timeout_s: float = 10.0) -> Run:
    scheduler = Scheduler(chooser, expected, step_timeout_s=timeout_s)
    return scheduler.run(setup(scheduler.point))


def replay(setup: Setup, schedule: str, expected: Expected = (), timeout_s: float = 10.0) -> Run:
    return run_once(setup, _Guided(decode(schedule)), expected, timeout_s)


def exhaustive(
    setup: Setup,
    expected: Expected = (),
    *,
    preemptions: int = 2,
    max_schedules: int = 10_000,
    timeout_s: float = 10.0,
    kinds: int = 1,
) -> Report:
    """Every schedule with at most `preemptions` preemptions, depth first, until failures
    of `kinds` kinds (their text, numbers aside) or `max_schedules` runs."""
    prefix: list[int] = []
    failing: dict[str, Run] = {}
    for explored in range(1, max_schedules + 1):
        guided = _Guided(prefix)
        run = run_once(setup, guided, expected, timeout_s)
        if run.failures:
            failing.setdefault(re.sub(r"\d+", "#", "\n".join(run.failures)), run)
            if len(failing) >= kinds:
                return Report(explored, list(failing.values()))
        following = _next_prefix(guided.decisions, preemptions)
        if following is None:
            return Report(explored, list(failing.values()), complete=True)
        prefix = following
    return Report(max_schedules, list(failing.values()))


def _next_prefix(decisions: list[tuple[list[int], int, bool]], bound: int) -> list[int] | None:
    """The deepest decision with an untried option within the bound, taken next."""
    used = [0]
    for _options, taken, preempting in decisions:
        used.append(used[-1] + (preempting and taken > 0))
    for depth in range(len(decisions) - 1, -1, -1):
        options, taken, preempting = decisions[depth]
        if taken + 1 < len(options) and used[depth] + preempting <= bound:
            return [o[t] for o, t, _ in decisions[:depth]] + [options[taken + 1]]
    return None


def randomized(
    setup: Setup,
    expected: Expected = (),
    *,
    runs: int = 100,
    seed: int = 0,
    depth: int = 3,
    timeout_s: float = 10.0,
) -> Report:
    """`runs` PCT schedules, run i from seed `seed + i` (`runs=1, seed=that` replays it).
    Change points fall within twice the steps of the schedule that never preempts, a
    length the program fixes, so that a seed alone replays."""
    calibration = run_once(setup, _Guided([]), expected, timeout_s)
    if calibration.failures:
        return Report(1, [calibration])
    length = 2 * max(1, calibration.steps)
    for i in range(runs):
        rng = random.Random(seed + i)
        run = run_once(setup, _PCT(rng, depth, length), expected, timeout_s)
        if run.failures:
            run.seed = seed + i
            return Report(i + 1, [run])
    return Report(runs, [])
