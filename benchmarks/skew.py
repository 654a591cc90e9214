"""The skew margin: name it, measure the trade.

An expiry is the writer's clock plus the TTL, and a reclaimer judges it on its own clock.
A store reclaims an expired lease only `reclaim_grace_ms` (G) after its expiry by the
acquirer's clock (default `domain.model.SKEW_MARGIN_MS`; docs/design.md, "Clocks: the
skew margin"). Two measurements, on the in-memory store (the DynamoDB store plans the same
way, `domain.parts.PartLeases.take_in_item`):

- safety, deterministic: does a reclaimer whose clock runs ahead take a lease that is
  still live in real time (an early reclaim)?
- the cost, on the real clock: how much later a crashed holder's slot comes back.
"""

from __future__ import annotations

import heapq
import random
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.clock import SystemClock
from adapters.memory import InMemoryLeaseStore
from domain import (
    Clock,
    Deadline,
    DecorrelatedJitter,
    Granted,
    NoCapacity,
    Quota,
    acquire_within,
)
from domain.model import SKEW_MARGIN_MS
from domain.services import EXPIRY_SPREAD_MS

DATABASE = "skew-db"

# Safety: a 10 s lease on an exact clock, a reclaimer `offset` ahead (or behind) of real
# time trying to take it when `left` remains.
SAFETY_TTL_MS = 10_000
SAFETY_OFFSETS_MS = (-2_000, -1_000, 0, 1_000, 2_000, 3_000)
SAFETY_MARGINS_MS = (0, SKEW_MARGIN_MS)
SAFETY_LEFT_MS = (1_500, 500)
EPOCH_MS = 1_800_000_000_000

# The cost: crashed holders on a quota of 4, waiters polling for their slots.
COST_LIMIT = 4
COST_TTL_MS = 300
COST_MARGINS_MS = (0, 500, SKEW_MARGIN_MS)
BACKOFF_BASE_MS = 10
BACKOFF_CAP_MS = 100


class ManualClock(Clock):
    """Real time for the deterministic runs: it moves only when told to (sleeping moves it)."""

    def __init__(self, now_ms: int = EPOCH_MS) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        return self._now_ms

    def sleep_ms(self, ms: int) -> None:
        self.advance(max(ms, 0))

    def advance(self, ms: int) -> None:
        self._now_ms += ms


class OffsetClock(Clock):
    """A host's clock: `real` time plus `offset_ms`, which may change between calls, so one
    store stands for the hosts that write and reclaim (they share its state)."""

    def __init__(self, real: Clock, offset_ms: int = 0) -> None:
        self.real = real
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return self.real.now_ms() + self.offset_ms

    def sleep_ms(self, ms: int) -> None:
        self.real.sleep_ms(ms)


# --- safety ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetyCell:
    margin_ms: int  # G, the store's reclaim_grace_ms
    left_ms: int  # the lease's real time left when the reclaimer tries
    offset_ms: int  # the reclaimer's clock less real time
    taken: bool  # the live lease was reclaimed: an early reclaim, a safety failure


def early_reclaim(margin_ms: int, offset_ms: int, left_ms: int) -> bool:
    """A quota of 1 held by a lease of SAFETY_TTL_MS granted on an exact clock; when it has
    `left_ms` of real time left, a reclaimer whose clock reads real + `offset_ms` tries to
    take a lease. True when it got one, in place of the live lease."""
    real = ManualClock()
    host = OffsetClock(real)
    store = InMemoryLeaseStore(host, reclaim_grace_ms=margin_ms)
    store.set_quota(DATABASE, Quota(limit=1, default_ttl_ms=SAFETY_TTL_MS))
    held = store.acquire(DATABASE, "holder", SAFETY_TTL_MS)
    if not isinstance(held, Granted):
        raise RuntimeError(f"the holder's lease was refused: {held}")
    real.advance(held.lease.expires_at_ms - left_ms - real.now_ms())
    host.offset_ms = offset_ms
    result = store.acquire(DATABASE, "reclaimer", SAFETY_TTL_MS)
    if not isinstance(result, Granted):
        return False
    if held.lease.id not in {lease.id for lease in result.reclaimed}:
        raise RuntimeError("a grant on a full quota of 1 that reclaimed nothing")
    return True


def safety(
    margins_ms: Sequence[int] = SAFETY_MARGINS_MS,
    offsets_ms: Sequence[int] = SAFETY_OFFSETS_MS,
    lefts_ms: Sequence[int] = SAFETY_LEFT_MS,
) -> list[SafetyCell]:
    return [
        SafetyCell(margin, left, offset, early_reclaim(margin, offset, left))
        for margin in margins_ms
        for left in lefts_ms
        for offset in offsets_ms
    ]


# --- the cost -------------------------------------------------------------------------


@dataclass(frozen=True)
class DelayRow:
    margin_ms: int
    delays_ms: tuple[int, ...]  # a crashed lease's expiry to the grant that took its slot
    gave_up: int  # waiters that reached their deadline (NoCapacity): none expected
    seconds: float  # the run's wall time on its clock

    @property
    def median_ms(self) -> float:
        return statistics.median(self.delays_ms)

    @property
    def max_ms(self) -> int:
        return max(self.delays_ms)


def match_delays(grants: Sequence[Granted], ttl_ms: int) -> list[int]:
    """For every grant that took a slot freed by a reclaim, the time from that slot's
    crashed lease's expiry to the grant, both on the store's clock.

    Grants in the order they were written (a quota item's fences rise with each grant);
    a reclaim frees its victims' slots, the grant that reclaimed takes one, and plain grants
    after it take the others; each slot goes to the oldest expiry first."""
    freed: list[int] = []
    delays = []
    for grant in sorted(grants, key=lambda granted: granted.lease.fence):
        for victim in grant.reclaimed:
            heapq.heappush(freed, victim.expires_at_ms)
        if freed:
            granted_at_ms = grant.lease.expires_at_ms - ttl_ms  # the granting write's clock
            delays.append(granted_at_ms - heapq.heappop(freed))
    return delays


def reclaim_delays(
    margin_ms: int,
    clock: Clock,
    *,
    cycles: int = 1,
    threads: bool = True,
    limit: int = COST_LIMIT,
    ttl_ms: int = COST_TTL_MS,
    seed: int = 0,
) -> DelayRow:
    """`limit` holders take leases of `ttl_ms`, `ttl_ms / limit` apart, and crash (never
    release); `limit * cycles` waiters poll for a lease with `acquire_within` and crash in
    turn once granted, so every grant takes the slot of a crashed lease.

    With `threads` the waiters poll at once, each on its own thread (the real clock);
    without, one after the other on the caller's thread (any clock, a fake one included:
    its sleeps move it)."""
    store = InMemoryLeaseStore(clock, reclaim_grace_ms=margin_ms)
    store.set_quota(DATABASE, Quota(limit=limit, default_ttl_ms=ttl_ms))
    started_ms = clock.now_ms()
    for i in range(limit):
        if i:
            clock.sleep_ms(ttl_ms // limit)
        if not isinstance(store.acquire(DATABASE, f"crashed-{i}", ttl_ms), Granted):
            raise RuntimeError("a holder found no room on an empty quota")
    deadline = Deadline(clock.now_ms() + (cycles + 1) * (ttl_ms + margin_ms) + 5_000)
    grants: list[Granted] = []
    gave_up = 0
    lock = threading.Lock()

    def wait(i: int) -> None:
        nonlocal gave_up
        try:
            granted = acquire_within(
                store,
                DATABASE,
                deadline=deadline,
                clock=clock,
                backoff=DecorrelatedJitter(base_ms=BACKOFF_BASE_MS, cap_ms=BACKOFF_CAP_MS),
                rng=random.Random(seed * 1_000_003 + i),
                holder=f"waiter-{i}",
                ttl_ms=ttl_ms,
            )
        except NoCapacity:
            with lock:
                gave_up += 1
            return
        with lock:
            grants.append(granted)  # and crash: the lease is never released

    waiters = limit * cycles
    if threads:
        workers = [threading.Thread(target=wait, args=(i,)) for i in range(waiters)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    else:
        for i in range(waiters):
            wait(i)
    delays = match_delays(grants, ttl_ms)
    if not delays:
        raise RuntimeError(f"no crashed lease's slot was taken (G = {margin_ms} ms)")
    return DelayRow(margin_ms, tuple(delays), gave_up, (clock.now_ms() - started_ms) / 1000)


# --- the section ----------------------------------------------------------------------


@dataclass(frozen=True)
class SkewRun:
    safety: list[SafetyCell]
    delays: list[DelayRow]
    cycles: int

    def lines(self) -> list[str]:
        offsets = sorted({cell.offset_ms for cell in self.safety})
        margins = sorted({cell.margin_ms for cell in self.safety})
        lefts = sorted({cell.left_ms for cell in self.safety}, reverse=True)
        lines = [
            "## Skew: the reclaim margin",
            "",
            "An expiry is the writer's clock plus the TTL; a reclaimer judges it on its own "
            "clock. A store reclaims an expired lease only G (`reclaim_grace_ms`, default "
            f"`SKEW_MARGIN_MS` = {SKEW_MARGIN_MS} ms) after its expiry by the acquirer's "
            'clock (docs/design.md, "Clocks: the skew margin"). Both measurements run on the '
            "in-memory store, whose acquire plans as the DynamoDB store's does.",
            "",
            "**Safety**, deterministic (a hand-moved clock): a quota of 1 held by a lease of "
            f"{SAFETY_TTL_MS // 1000} s granted by a writer whose clock is exact; when the "
            "lease has the given real time left, a reclaimer whose clock reads real time + s "
            "tries to take a lease. **taken**: it reclaimed the live lease (an early reclaim, "
            "a safety failure); held: it was refused.",
            "",
            "| margin G | time left | "
            + " | ".join(f"s = {_offset(offset)} ms" for offset in offsets)
            + " |",
            "|---:|---:|" + "---|" * len(offsets),
        ]
        for margin in margins:
            for left in lefts:
                cells = {
                    cell.offset_ms: cell.taken
                    for cell in self.safety
                    if cell.margin_ms == margin and cell.left_ms == left
                }
                lines.append(
                    f"| {margin} ms | {left / 1000:g} s | "
                    + " | ".join("**taken**" if cells[offset] else "held" for offset in offsets)
                    + " |"
                )
        lines += ["", *self._safety_summary(margins), ""]
        lines += self._cost_lines()
        return [*lines, ""]

    def _safety_summary(self, margins: list[int]) -> list[str]:
        lines = []
        for margin in margins:
            mine = [cell for cell in self.safety if cell.margin_ms == margin]
            taken = [cell for cell in mine if cell.taken]
            if not taken:
                lines.append(f"- G = {margin} ms: no offset tried took a live lease.")
                continue
            first = min(cell.offset_ms for cell in taken)
            held = [cell.offset_ms for cell in mine if cell.offset_ms < first]
            by_left = ", ".join(
                f"{_offset(min(c.offset_ms for c in taken if c.left_ms == left))} ms with "
                f"{left / 1000:g} s left"
                for left in sorted({c.left_ms for c in taken}, reverse=True)
            )
            lines.append(
                f"- G = {margin} ms: "
                + (f"every offset up to {_offset(max(held))} ms held; " if held else "")
                + f"a live lease was taken from s = {by_left}."
            )
        rule = all(
            cell.taken == (cell.offset_ms - cell.margin_ms >= cell.left_ms) for cell in self.safety
        )
        return [
            *lines,
            "",
            "In every cell a lease was taken early exactly when s - G reached the time it had "
            "left: the margin lets a reclaimer's clock run up to G ahead of the writer's "
            "before any live lease is at risk."
            if rule
            else "**Not every cell follows the rule s - G >= time left: see the table.**",
        ]

    def _cost_lines(self) -> list[str]:
        lines = [
            "**The cost**, measured on the real clock (`SystemClock`) and the in-memory store "
            f"(no latency): a quota of {COST_LIMIT}, leases of {COST_TTL_MS} ms; "
            f"{COST_LIMIT} holders take leases {COST_TTL_MS // COST_LIMIT} ms apart and crash "
            f"(never release); {COST_LIMIT * self.cycles} waiters poll at once with "
            "`acquire_within` (decorrelated jitter "
            f"{BACKOFF_BASE_MS}-{BACKOFF_CAP_MS} ms) and crash in turn once granted. Each "
            "grant is matched to the crashed lease whose slot it took (through the grants' "
            "`reclaimed`, oldest expiry first); the delay runs from that lease's expiry to "
            "the granting write, both on the store's clock.",
            "",
            "| margin G | slots matched | median delay ms | max delay ms "
            "| median less G | waiters that gave up | run s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.delays:
            lines.append(
                f"| {row.margin_ms} ms | {len(row.delays_ms)} | {row.median_ms:.0f} "
                f"| {row.max_ms} | {row.median_ms - row.margin_ms:.0f} | {row.gave_up} "
                f"| {row.seconds:.1f} |"
            )
        examples = ", ".join(
            f"{row.margin_ms / 1000:g} slots for G = {row.margin_ms} ms"
            for row in self.delays
            if row.margin_ms
        )
        return [
            *lines,
            "",
            "A crashed holder's slot comes back about G after its expiry, plus a few ms: a "
            "refused waiter sleeps until the earliest lease becomes reclaimable (plus up to "
            f"{EXPIRY_SPREAD_MS} ms of spread) rather than a whole backoff step. "
            "So each crash keeps its slot G ms longer than its TTL: at a crash rate of c a "
            "second, c * G / 1000 slots of the quota are held by the dead on average, on top "
            "of c * TTL / 1000 for the TTL itself. At one crash a second (an example, "
            f"arithmetic, not a measurement) that is {examples}. The other side of the "
            f"trade: a per-invocation lease ends {SKEW_MARGIN_MS} ms before its invocation's "
            "deadline, so an invocation can use its connection for that much less of its "
            "timeout.",
        ]


def _offset(ms: int) -> str:
    return f"{ms:+d}" if ms else "0"


def run(cycles: int = 1, clock: Clock | None = None) -> SkewRun:
    """Both measurements; `cycles` rounds of crashes per margin for the cost (each round
    takes about the TTL plus the margin: about 4 s for all three margins)."""
    cells = safety()
    print("skew: safety done")
    real = clock or SystemClock()
    delays = [reclaim_delays(margin, real, cycles=cycles) for margin in COST_MARGINS_MS]
    print("skew: reclaim delays done")
    return SkewRun(cells, delays, cycles)


def report_text(cycles: int = 1) -> str:
    """The section as docs/benchmarks.md has it, from a run of its own."""
    return "\n".join(run(cycles).lines())


if __name__ == "__main__":
    print(report_text())
