"""The hotspot (issue 15, "fair share between functions"): a latency-critical API and a hot
batch on one quota, with and without groups (domain.groups), on the in-memory store.

The scenario of `make demo ARGS="--scenario hotspot"` (local/hotspot.py: the same quota,
groups, concurrencies, hold times and wait budgets) without the local stack: each function
is a set of threads, each invoking back to back for the run's time on the real clock: take
a lease with `acquire_within` (the client library's backoff, the function's group and wait
budget), hold it for the query time (a sleep; no MySQL), give it back. Every store request
takes STORE_LATENCY_S, about an in-region DynamoDB round trip, so the figures weigh the
algorithm, not an emulator. Run twice: one shared pool, then the demo's groups.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.clock import SystemClock
from domain import Deadline, DecorrelatedJitter, NoCapacity, Quota, acquire_within
from domain.groups import parse_reservations
from local.hotspot import (
    REFUSED,
    RESERVED,
    SHARED,
    SUCCEEDED,
    FunctionLoad,
    FunctionSummary,
    HotspotOptions,
    RunReport,
    Sample,
    Span,
    span_steps,
)
from local.simulated import SimulatedLeaseStore

DATABASE = "hotspot-db"
STORE_LATENCY_S = 0.004  # as benchmarks.run's: about one in-region DynamoDB call
SCENARIO = HotspotOptions()
# A function whose wait budget is its invocation's deadline: the demo's 30 s timeout less
# the client's safety margin.
DEADLINE_BUDGET_MS = 29_000


@dataclass
class Calls:
    """One function's invocations in a run; added to by its threads."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    holds: list[Span] = field(default_factory=list)  # from the grant to the release
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def granted(self, wait_ms: float, hold: Span) -> None:
        with self.lock:
            self.answers.append({"outcome": SUCCEEDED, "lease_wait_ms": wait_ms})
            self.holds.append(hold)

    def refused(self, wait_ms: float) -> None:
        with self.lock:
            self.answers.append({"outcome": REFUSED, "lease_wait_ms": wait_ms})


def samples_of(holds: Mapping[str, Sequence[Span]]) -> tuple[Sample, ...]:
    """Leases held by function at every change, from each function's holds."""
    changes = sorted(
        {at for spans in holds.values() for at, _ in span_steps(spans)} | {0.0},
    )
    steps = {name: span_steps(spans) for name, spans in holds.items()}
    samples = []
    for at in changes:
        held = {}
        for name, function_steps in steps.items():
            before = [value for step_at, value in function_steps if step_at <= at]
            held[name] = int(before[-1]) if before else 0
        samples.append(Sample(at, held))
    return tuple(samples)


def query_s(load: FunctionLoad, rng: random.Random) -> float:
    query = load.query_time_s
    return rng.uniform(*query) if isinstance(query, tuple) else query


def run_once(
    groups: str | None,
    seconds: float,
    *,
    scenario: HotspotOptions = SCENARIO,
    latency_s: float = STORE_LATENCY_S,
    seed: int | None = None,
) -> RunReport:
    """One run of `seconds`: `groups` (as the seeder writes them) or, None, one pool."""
    clock = SystemClock()
    store = SimulatedLeaseStore(clock, latency_s=latency_s)
    reservations = None if groups is None else parse_reservations(groups)
    store.set_quota(DATABASE, Quota(scenario.quota, 60_000), reservations)
    calls = {load.name: Calls() for load in scenario.loads}
    seeds = random.Random(seed)
    start = threading.Barrier(sum(load.concurrency for load in scenario.loads) + 1)
    began = [0.0]

    def worker(load: FunctionLoad, rng: random.Random) -> None:
        mine = calls[load.name]
        budget_ms = load.wait_budget_ms or DEADLINE_BUDGET_MS
        start.wait()
        stop_at = began[0] + seconds
        while (asked := time.monotonic()) < stop_at:
            try:
                grant = acquire_within(
                    store,
                    DATABASE,
                    deadline=Deadline(clock.now_ms() + budget_ms),
                    clock=clock,
                    backoff=DecorrelatedJitter(base_ms=20, cap_ms=1_000),  # the client's
                    rng=rng,
                    holder=load.name,
                    group=load.group,
                )
            except NoCapacity:
                mine.refused((time.monotonic() - asked) * 1000)
                continue
            granted = time.monotonic()
            time.sleep(query_s(load, rng))
            # Held from the grant's answer to the release's call: what the holder knows it
            # holds (the store's own hold is a round trip longer), so that the peak never
            # counts a lease twice over a thread's late wake-up.
            released = time.monotonic()
            store.release(DATABASE, grant.token)
            mine.granted((granted - asked) * 1000, (granted - began[0], released - began[0]))

    threads = [
        threading.Thread(target=worker, args=(load, random.Random(seeds.random())), daemon=True)
        for load in scenario.loads
        for _ in range(load.concurrency)
    ]
    for thread in threads:
        thread.start()
    began[0] = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join()
    holds = {name: mine.holds for name, mine in calls.items()}
    samples = samples_of(holds)
    # The demo's summary, on steps that are exact here (every change), not polled.
    return RunReport(
        label=SHARED if groups is None else RESERVED,
        groups=groups,
        limit=scenario.quota,
        seconds=seconds,
        functions=tuple(
            FunctionSummary.of(
                load.name, calls[load.name].answers, span_steps(holds[load.name]), seconds
            )
            for load in scenario.loads
        ),
        samples=samples,
    )


@dataclass(frozen=True)
class HotspotRun:
    shared: RunReport
    reserved: RunReport
    scenario: HotspotOptions = SCENARIO
    latency_s: float = STORE_LATENCY_S

    @property
    def runs(self) -> tuple[RunReport, RunReport]:
        return (self.shared, self.reserved)

    def lines(self) -> list[str]:
        scenario = self.scenario
        api, batch = scenario.api, scenario.batch
        lines = [
            "## Hotspot: a reservation and a cap (groups)",
            "",
            'The scenario of `make demo ARGS="--scenario hotspot"` (issue 15) on the '
            f"{self.latency_s * 1000:.0f} ms in-memory store, threads as functions, the real "
            f"clock: a quota of {scenario.quota}; **{api.group}** (latency-critical): "
            f"{_load(api)}; **{batch.group}** (hot): {_load(batch)}. Each thread invokes back "
            f"to back for {self.shared.seconds:g} s: take a lease (`acquire_within`, the "
            "client's backoff, the function's group), hold it, give it back. Run twice: one "
            f"shared pool, then the groups `{scenario.groups}`. A wait runs from the first "
            "attempt to the grant (a refusal's: its whole budget); a lease is held from the "
            "grant's answer to the release's call (a round trip less than the store's own "
            "hold), time-weighted over the run; utilization is all leases held on average "
            "over the limit.",
            "",
            "| function | run | invocations ok | refused (NoCapacity) | wait p50 ms "
            "| wait p99 ms | leases held mean / peak |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for load in scenario.loads:
            for run in self.runs:
                summary = run.function(load.name)
                lines.append(
                    f"| {load.group} | {run.label}{f' `{run.groups}`' if run.groups else ''} "
                    f"| {summary.succeeded} | {summary.refused} | {_ms(summary.wait_p50_ms)} "
                    f"| {_ms(summary.wait_p99_ms)} "
                    f"| {summary.mean_held:.1f} / {summary.peak_held} |"
                )
        shared_api = self.shared.function(api.name)
        reserved_api = self.reserved.function(api.name)
        reserved_batch = self.reserved.function(batch.name)
        cap = scenario.reservation(batch.group)
        lines += [
            "",
            "| run | utilization | peak leases held |",
            "|---|---:|---:|",
            *(
                f"| {run.label} | {100 * run.utilization:.1f}% | {run.peak_total} / {run.limit} |"
                for run in self.runs
            ),
            "",
            f"With its reservation the {api.group}'s p99 wait went from "
            f"{_ms(shared_api.wait_p99_ms)} ms to {_ms(reserved_api.wait_p99_ms)} ms and its "
            f"refusals from {shared_api.refused} to {reserved_api.refused}; the {batch.group} "
            f"held at most {reserved_batch.peak_held} leases"
            + (f" (its cap: {cap.max})" if cap is not None and cap.max is not None else "")
            + f". Utilization went from {100 * self.shared.utilization:.1f}% to "
            f"{100 * self.reserved.utilization:.1f}%: what the groups keep for the "
            f"{api.group} (its reservation, and the pool's leases the {batch.group}'s cap "
            f"leaves for its bursts) is idle whenever the {api.group} does not need it.",
            "",
        ]
        return lines


def _load(load: FunctionLoad) -> str:
    query = load.query_time_s
    held = (
        f"{query[0] * 1000:.0f}-{query[1] * 1000:.0f} ms"
        if isinstance(query, tuple)
        else f"{query * 1000:.0f} ms"
    )
    budget = (
        f"a wait budget of {load.wait_budget_ms} ms"
        if load.wait_budget_ms is not None
        else f"a wait budget of {DEADLINE_BUDGET_MS / 1000:g} s (its invocation's deadline)"
    )
    return f"{load.concurrency} threads, each lease held {held}, {budget}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def summary_line(run: RunReport, scenario: HotspotOptions = SCENARIO) -> str:
    api = run.function(scenario.api.name)
    batch = run.function(scenario.batch.name)
    return (
        f"hotspot {run.label}: {scenario.api.group} p99 wait {_ms(api.wait_p99_ms)} ms, "
        f"refused {api.refused}; {scenario.batch.group} peak {batch.peak_held}; "
        f"utilization {100 * run.utilization:.1f}%"
    )


def run(seconds: float = 10.0) -> HotspotRun:
    """Both runs, `seconds` each."""
    shared = run_once(None, seconds)
    print(summary_line(shared))
    reserved = run_once(SCENARIO.groups, seconds)
    print(summary_line(reserved))
    return HotspotRun(shared, reserved)


def report_text(seconds: float = 10.0) -> str:
    """The section as docs/benchmarks.md has it, from a run of its own."""
    return "\n".join(run(seconds).lines())


if __name__ == "__main__":
    print(report_text())
