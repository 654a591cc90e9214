"""Quota size against cost and ceiling, side by side: one item per quota (the design before
split quotas), the split quota, and the sample's counter. Every figure is metered and
limited by the capacity model (`local.capacity_model`) on the in-memory store, with
a round trip of `STORE_LATENCY_S` per request; no MySQL, so that only the store is weighed.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from adapters.clock import SystemClock
from adapters.dynamodb import BATCH_GET_LIMIT
from adapters.dynamodb_item import entries_per_shard
from benchmarks.cost import (
    DOLLARS_PER_MILLION_READ_UNITS,
    DOLLARS_PER_MILLION_WRITE_UNITS,
    HOLDER,
    PRICE_DATE,
)
from domain import (
    ConnleaseError,
    Deadline,
    DecorrelatedJitter,
    Granted,
    NoCapacity,
    Quota,
    acquire_within,
)
from domain.model import MAX_LIMIT
from domain.parts import READ_ALL_SHARDS
from domain.shards import plan_shares
from local.capacity_model import PARTITION_WCU_PER_S, CapacityModel, Throttled
from local.simulated import SimulatedLeaseStore

Take = Callable[[], str | None]
GiveBack = Callable[[str], bool]

DATABASE = "scale-db"
STORE_LATENCY_S = 0.004

ONE_ITEM = "one item"
SPLIT = "split quota"
COUNTER = "sample's counter"


def store(design: str, capacity: CapacityModel, latency_s: float = 0.0) -> SimulatedLeaseStore:
    """The lease store of `design`: a single item at any limit, or split over shards."""
    if design == ONE_ITEM:
        return SimulatedLeaseStore(
            SystemClock(),
            latency_s=latency_s,
            capacity=capacity,
            shard_capacity=lambda _database: MAX_LIMIT,
        )
    return SimulatedLeaseStore(SystemClock(), latency_s=latency_s, capacity=capacity)


@dataclass(frozen=True)
class CostRow:
    design: str
    limit: int
    wcu_per_lease: float  # a take and a give-back, half the quota held by others


def lease_costs(limits: tuple[int, ...]) -> list[CostRow]:
    rows = []
    for limit in limits:
        for design in (ONE_ITEM, SPLIT):
            model = CapacityModel(enforce=False)
            leases = store(design, model)
            leases.set_quota(DATABASE, Quota(limit=limit, default_ttl_ms=600_000))
            for _ in range(limit // 2):
                leases.acquire(DATABASE, HOLDER)
            cycles = 20
            before = model.totals.total_write_units()
            for _ in range(cycles):
                grant = leases.acquire(DATABASE, HOLDER)
                assert isinstance(grant, Granted)
                leases.release(DATABASE, grant.token)
            rows.append(
                CostRow(design, limit, (model.totals.total_write_units() - before) / cycles)
            )
    return rows


@dataclass(frozen=True)
class ContentionRow:
    design: str
    limit: int
    workers: int
    leases: int
    wcu_per_lease: float
    rcu_per_lease: float
    longest_wait_ms: float
    median_wait_ms: float


def contention(
    design: str, limit: int, workers: int, hold_s: float, seconds: float
) -> ContentionRow:
    """`workers` callers, each taking a lease (waiting with the client's default backoff),
    holding it `hold_s` and giving it back, again and again for `seconds`."""
    model = CapacityModel(enforce=False)
    leases = store(design, model, STORE_LATENCY_S)
    leases.set_quota(DATABASE, Quota(limit=limit, default_ttl_ms=60_000))
    clock = SystemClock()
    waits: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(workers + 1)
    started = [0.0]
    before = (model.totals.total_write_units(), model.totals.total_read_units())

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        end = started[0] + seconds
        while time.perf_counter() < end:
            asked = time.perf_counter()
            try:
                grant = acquire_within(
                    leases,
                    DATABASE,
                    holder=HOLDER,
                    deadline=Deadline(clock.now_ms() + int((end - asked) * 1000)),
                    clock=clock,
                    backoff=DecorrelatedJitter(base_ms=20, cap_ms=1_000),
                    rng=rng,
                )
            except NoCapacity:
                continue
            got = time.perf_counter()
            time.sleep(hold_s)
            leases.release(DATABASE, grant.token)
            with lock:
                waits.append((got - asked) * 1000)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    started[0] = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    granted = max(1, len(waits))
    return ContentionRow(
        design=design,
        limit=limit,
        workers=workers,
        leases=len(waits),
        wcu_per_lease=(model.totals.total_write_units() - before[0]) / granted,
        rcu_per_lease=(model.totals.total_read_units() - before[1]) / granted,
        longest_wait_ms=max(waits, default=0.0),
        median_wait_ms=statistics.median(waits) if waits else 0.0,
    )


@dataclass(frozen=True)
class CeilingRow:
    design: str
    limit: int
    scale: float
    leases_per_s: float  # measured, partitions at `scale` of DynamoDB's rates
    throttled: int

    @property
    def full_scale_per_s(self) -> float:
        """The same at DynamoDB's own rates: the partitions were the bottleneck, so the
        measured rate divided by the scale."""
        return self.leases_per_s / self.scale


def ceiling(
    design: str, limit: int, scale: float, workers: int, seconds: float, *, warm_up_s: float = 1.5
) -> CeilingRow:
    """How many leases a second one database serves when each partition takes only
    `scale` of DynamoDB's rates. The quota is kept busy as in production (all but
    `workers` of its leases held throughout); the callers take and give back at once, as
    fast as they can, a refusal or a throttle answered with a short pause. The first
    `warm_up_s` are not counted: they spend the second's worth each partition starts with."""
    model = CapacityModel(scale=scale)
    if design == COUNTER:
        take, give_back = _counter(model, limit, held=limit - workers)
    else:
        leases = store(design, CapacityModel(enforce=False))
        leases.set_quota(DATABASE, Quota(limit=limit, default_ttl_ms=600_000))
        for _ in range(limit - workers):
            leases.acquire(DATABASE, HOLDER)
        leases.capacity = model  # throttled from here on
        take, give_back = _store_calls(leases)
    done = [0]
    lock = threading.Lock()
    counting = time.perf_counter() + warm_up_s
    end = counting + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while (now := time.perf_counter()) < end:
            lease = take()
            if lease is None:
                time.sleep(rng.uniform(0.005, 0.02))
                continue
            while not give_back(lease):
                time.sleep(rng.uniform(0.005, 0.02))
            if now >= counting:
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    throttled = sum(model.totals.throttled.values())
    return CeilingRow(design, limit, scale, done[0] / seconds, throttled)


def _store_calls(leases: SimulatedLeaseStore) -> tuple[Take, GiveBack]:
    def take() -> str | None:
        try:
            result = leases.acquire(DATABASE, HOLDER)
        except ConnleaseError:
            return None
        return result.token if isinstance(result, Granted) else None

    def give_back(token: str) -> bool:
        try:
            leases.release(DATABASE, token)
        except ConnleaseError:
            return False
        return True

    return take, give_back


def _counter(model: CapacityModel, limit: int, held: int) -> tuple[Take, GiveBack]:
    """The sample's counter: one small item, a conditional increment to take (1 WCU, a
    refusal too) and a decrement to give back, each one round trip."""
    count = [held]
    lock = threading.Lock()

    def write(change: int) -> bool:
        time.sleep(STORE_LATENCY_S / 2)
        try:
            with lock:
                model.admit("counter", DATABASE, "Write")
                model.charge_write("counter", DATABASE, "UpdateItem", 60, 60)
                if change > 0 and count[0] >= limit:
                    return False
                count[0] += change
        except Throttled:
            return False
        finally:
            time.sleep(STORE_LATENCY_S / 2)
        return True

    def take() -> str | None:
        return "counted" if write(+1) else None

    def give_back(_lease: str) -> bool:
        return write(-1)

    return take, give_back


# DynamoDB on-demand list prices, us-east-1, Standard table class (benchmarks.cost).
def dollars_per_million(wcu: float, rcu: float = 0.0) -> float:
    return wcu * DOLLARS_PER_MILLION_WRITE_UNITS + rcu * DOLLARS_PER_MILLION_READ_UNITS


@dataclass(frozen=True)
class ScaleRun:
    costs: list[CostRow]
    contended: list[ContentionRow]
    ceilings: list[CeilingRow]
    ceiling_limit: int
    scale: float

    def cost(self, design: str, limit: int) -> float:
        return next(r.wcu_per_lease for r in self.costs if r.design == design and r.limit == limit)

    def lines(self, one_item_full_wcu: float) -> list[str]:
        """The section; `one_item_full_wcu`: a lease on a full single item at the ceiling's
        limit (the lease-cost table's), for the paper figure."""
        limits = sorted({row.limit for row in self.costs})
        lines = [
            "## Scale: quota size, cost and ceiling",
            "",
            "One item per quota (the design before split quotas) against the split quota "
            "(`domain/parts.py`) and the sample's counter, metered and limited by the "
            "capacity model on the in-memory store (a 4 ms round trip per request; no MySQL, "
            "the store alone is weighed). Dollars at DynamoDB's on-demand list price "
            f"(${DOLLARS_PER_MILLION_WRITE_UNITS} per million write units, "
            f"${DOLLARS_PER_MILLION_READ_UNITS} per million read units, us-east-1, in effect "
            f"since {PRICE_DATE}).",
            "",
            "Write units per lease (a take and a give-back) with half the quota held by "
            "others, every lease naming a 32-character holder:",
            "",
            "| limit | one item: WCU | $ per million leases | split quota: WCU "
            "| $ per million leases |",
            "|---:|---:|---:|---:|---:|",
        ]
        for limit in limits:
            one, split = self.cost(ONE_ITEM, limit), self.cost(SPLIT, limit)
            lines.append(
                f"| {limit:,} | {one:.2f} | {dollars_per_million(one):.2f} | {split:.2f} "
                f"| {dollars_per_million(split):.2f} |"
            )
        lines += [
            "",
            "Under contention: 4x oversubscription, every caller holding its lease 20 ms and "
            "waiting with the client's default backoff (decorrelated 20-1000 ms); all callers "
            "share one store, so one store's hints (the shard it last freed) serve them all:",
            "",
            "| design | limit | callers | leases | WCU per lease | RCU per lease "
            "| $ per million leases | median wait ms | longest wait ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.contended:
            lines.append(
                f"| {row.design} | {row.limit:,} | {row.workers} | {row.leases:,} "
                f"| {row.wcu_per_lease:.2f} | {row.rcu_per_lease:.2f} "
                f"| {dollars_per_million(row.wcu_per_lease, row.rcu_per_lease):.2f} "
                f"| {row.median_wait_ms:.0f} | {row.longest_wait_ms:.0f} |"
            )
        lines += [
            "",
            f"One database's ceiling at limit {self.ceiling_limit:,}, every partition key "
            f"held to {self.scale:g} of DynamoDB's rates ({self.scale * 1000:g} WCU and "
            f"{self.scale * 3000:g} RCU a second), the quota kept busy (all but the callers' "
            "leases held) while callers take and give back as fast as they can; the full-scale "
            "figure is the measured rate divided by the scale, as the partitions were the "
            "bottleneck. On paper: one item, 1,000 WCU a second over the WCU of a lease on a "
            "full quota; the counter, 1,000 over 2; the split quota, 500 a second per shard.",
            "",
            "| design | leases/s measured | leases/s at full scale | on paper "
            "| throttled requests |",
            "|---|---:|---:|---:|---:|",
        ]
        for top in self.ceilings:
            lines.append(
                f"| {top.design} | {top.leases_per_s:.1f} | {top.full_scale_per_s:,.0f} "
                f"| {on_paper(top.design, self.ceiling_limit, one_item_full_wcu):,.0f} "
                f"| {top.throttled:,} |"
            )
        return [*lines, ""]


def on_paper(design: str, limit: int, one_item_full_wcu: float) -> float:
    if design == COUNTER:
        return PARTITION_WCU_PER_S / 2
    if design == ONE_ITEM:
        return PARTITION_WCU_PER_S / one_item_full_wcu
    shards = len(plan_shares(limit, [], entries_per_shard(DATABASE)) or [])
    return shards * PARTITION_WCU_PER_S / 2


def shard_figures() -> dict[str, str]:
    """The arithmetic of split quotas docs/design.md quotes, from the code that sizes
    them, so that a change of an entry's size cannot leave the doc behind."""
    per_shard = entries_per_shard(DATABASE)

    def shards(limit: int) -> int:
        return len(plan_shares(limit, [], per_shard) or [])

    return {
        "shards.leases_per_shard": f"{per_shard}",
        "shards.at_1000": f"{shards(1_000):,}",
        "shards.at_2000": f"{shards(2_000):,}",
        "shards.leases_per_s_1000": f"{on_paper(SPLIT, 1_000, 0):,.0f}",
        "shards.read_all_up_to_limit": f"{READ_ALL_SHARDS * per_shard:,}",
        "shards.one_status_batch_up_to": f"{BATCH_GET_LIMIT * per_shard:,}",
    }


def run(
    limits: tuple[int, ...],
    contention_s: float,
    ceiling_s: float,
    *,
    ceiling_limit: int = 1_000,
    scale: float = 0.01,
) -> ScaleRun:
    costs = lease_costs(limits)
    print("scale: lease costs done")
    contended = [contention(design, 100, 400, 0.02, contention_s) for design in (ONE_ITEM, SPLIT)]
    print("scale: contention done")
    ceilings = [
        ceiling(design, ceiling_limit, scale, 32, ceiling_s)
        for design in (ONE_ITEM, SPLIT, COUNTER)
    ]
    print("scale: ceilings done")
    return ScaleRun(costs, contended, ceilings, ceiling_limit, scale)
