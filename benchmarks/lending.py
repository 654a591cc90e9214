"""Lending idle reservations: how much more of the quota is used, and how long an owner
waits to get a lent lease back (docs/design.md, "Groups").

On the in-memory store with a round-trip latency, in real time. A quota of 6: `api`
reserves 3 and lends them while idle (`lend=LEND_MS`, no borrowing, so that its waits are
for its own leases only), `batch` reserves none and borrows. Batch workers run short
queries on short leases (they fit the lending bound) for the whole run; the API is idle
for the first half, then its workers come, each wanting a lease. Two runs side by side:
without lending and with it. In a third run the batch workers vanish holding what they
were lent (no release), which the skew margin adds to the owner's bound.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

from adapters.clock import SystemClock
from adapters.memory import InMemoryLeaseStore
from domain import (
    Deadline,
    DecorrelatedJitter,
    NoCapacity,
    Quota,
    acquire_within,
)
from domain.groups import parse_reservations
from domain.model import SKEW_MARGIN_MS

DATABASE = "lending-db"
LIMIT = 6
LEND_MS = 1_000
LATENCY_S = 0.002  # a DynamoDB round trip's order
BATCH_WORKERS = 8
BATCH_HOLD_S = (0.05, 0.2)
API_WORKERS = 3
API_HOLD_S = 0.05
POLL_CAP_MS = 100


@dataclass
class LendingRun:
    label: str
    seconds: float
    lend: bool
    vanish: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    held_samples: list[int] = field(default_factory=list)
    owner_waits_ms: list[int] = field(default_factory=list)
    owner_refused: int = 0
    batch_leases: int = 0

    @property
    def utilization(self) -> float:
        """Mean leases held over the whole run, over the limit."""
        return statistics.fmean(self.held_samples) / LIMIT if self.held_samples else 0.0

    @property
    def longest_owner_wait_ms(self) -> int:
        return max(self.owner_waits_ms, default=0)

    @property
    def bound_ms(self) -> int | None:
        """How long the owner may wait for a lent lease, and one poll more (its backoff's
        cap: it may be asleep when the lease comes back)."""
        if not self.lend:
            return None
        return LEND_MS + (SKEW_MARGIN_MS if self.vanish else 0) + POLL_CAP_MS


def run_one(label: str, *, lend: bool, seconds: float, vanish: bool = False) -> LendingRun:
    clock = SystemClock()
    store = InMemoryLeaseStore(clock, latency_s=LATENCY_S)
    lending = f":lend={LEND_MS}" if lend else ""
    store.set_quota(
        DATABASE,
        Quota(LIMIT, 30_000),
        parse_reservations(f"api=3:noborrow{lending},batch=0"),
    )
    run = LendingRun(label, seconds, lend, vanish)
    stop = threading.Event()
    api_from = time.monotonic() + seconds / 2

    def batch(n: int) -> None:
        rng = random.Random(n)
        while not stop.is_set():
            try:
                grant = acquire_within(
                    store,
                    DATABASE,
                    deadline=Deadline(clock.now_ms() + 500),
                    clock=clock,
                    backoff=DecorrelatedJitter(base_ms=10, cap_ms=100),
                    rng=rng,
                    holder=f"batch/{n}",
                    ttl_ms=LEND_MS,
                    group="batch",
                )
            except NoCapacity:
                continue
            with run.lock:
                run.batch_leases += 1
            time.sleep(rng.uniform(*BATCH_HOLD_S))
            lent = grant.lease.group == "api"
            if not (vanish and lent and time.monotonic() >= api_from - 0.5):
                store.release(DATABASE, grant.token)

    def api(n: int) -> None:
        rng = random.Random(100 + n)
        time.sleep(max(0.0, api_from - time.monotonic()))
        while not stop.is_set():
            started = clock.now_ms()
            try:
                grant = acquire_within(
                    store,
                    DATABASE,
                    deadline=Deadline(started + 10_000),
                    clock=clock,
                    backoff=DecorrelatedJitter(base_ms=10, cap_ms=POLL_CAP_MS),
                    rng=rng,
                    holder=f"api/{n}",
                    ttl_ms=5_000,
                    group="api",
                )
            except NoCapacity:
                with run.lock:
                    run.owner_refused += 1
                continue
            with run.lock:
                run.owner_waits_ms.append(clock.now_ms() - started)
            time.sleep(API_HOLD_S)
            store.release(DATABASE, grant.token)
            time.sleep(rng.uniform(0.2, 0.6))  # an API's own pace: idle leases between calls

    def sample() -> None:
        while not stop.is_set():
            run.held_samples.append(store.status(DATABASE).in_use)
            time.sleep(0.05)

    threads = [threading.Thread(target=batch, args=(n,)) for n in range(BATCH_WORKERS)]
    threads += [threading.Thread(target=api, args=(n,)) for n in range(API_WORKERS)]
    threads.append(threading.Thread(target=sample))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return run


def run(seconds: float = 8.0) -> list[LendingRun]:
    return [
        run_one("no lending", lend=False, seconds=seconds),
        run_one(f"lend={LEND_MS} ms", lend=True, seconds=seconds),
        run_one(f"lend={LEND_MS} ms, borrowers vanish", lend=True, seconds=seconds, vanish=True),
    ]


def lines(runs: list[LendingRun]) -> list[str]:
    out = [
        "## Lending idle reservations (`benchmarks/lending.py`)",
        "",
        f"In-memory store, {LATENCY_S * 1000:.0f} ms a request, real time. Quota {LIMIT}: "
        f"`api=3:noborrow:lend={LEND_MS}` (or without `lend`), `batch=0`. {BATCH_WORKERS} batch "
        f"workers on {LEND_MS} ms leases all run long; {API_WORKERS} API workers come halfway "
        "and want their reserved leases back. The owner's bound: "
        f"{LEND_MS} ms (a borrower that gives back sooner returns it sooner), "
        f"{LEND_MS + SKEW_MARGIN_MS} ms when borrowers vanish (the skew margin before a "
        "reclaim).",
        "",
        "| run | utilization | batch leases | API grants | API p50 wait | longest API wait "
        "| the owner's bound (and a poll) | API refused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for one in runs:
        p50 = statistics.median(one.owner_waits_ms) if one.owner_waits_ms else 0
        bound = one.bound_ms
        within = (
            "-"
            if bound is None
            else f"{bound} ms, {'met' if one.longest_owner_wait_ms <= bound else 'MISSED'}"
        )
        out.append(
            f"| {one.label} | {one.utilization:.0%} | {one.batch_leases} | "
            f"{len(one.owner_waits_ms)} | {p50:.0f} ms | {one.longest_owner_wait_ms} ms | "
            f"{within} | {one.owner_refused} |"
        )
    return [*out, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    print("\n".join(lines(run(args.seconds))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
