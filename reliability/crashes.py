"""Campaign 1, crashes: a share of holders die between taking a lease and giving it back.

A lease dies with its holder's TTL and the next acquire that finds the quota full reclaims
it, the skew margin after its expiry (domain.model.SKEW_MARGIN_MS); the original sample's
counter, in the same scenario, loses a permit per crash for good.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import pymysql

from adapters.clock import SystemClock
from adapters.mysql import DatabaseError, MySqlConnector
from benchmarks.strategies import DynamoDBCounter, query
from domain import (
    Deadline,
    DecorrelatedJitter,
    Granted,
    LeaseStore,
    NoCapacity,
    acquire_within,
)
from domain.model import SKEW_MARGIN_MS
from reliability.common import (
    Campaign,
    Checker,
    Figure,
    Lab,
    Outcomes,
    Stopwatch,
    Tracker,
    run_concurrently,
)
from service.client import ConnectionLeases

QUERY = "SELECT SLEEP(0.005)"
# Past the TTL and the skew margin, a few store round trips on this machine (a read, a
# reclaim, under load).
SLACK_MS = 250


@dataclass(frozen=True)
class Plan:
    invocations: int = 5_000
    crash_share: float = 0.2
    concurrency: int = 20
    limit: int = 20
    ttl_ms: int = 1_000  # the holders' invocation timeout: a lease ends with its invocation
    wait_budget_ms: int = 10_000
    seed: int = 0


SHORT = Plan(invocations=400, concurrency=12, limit=10)


@dataclass
class Crashes:
    lock: threading.Lock = field(default_factory=threading.Lock)
    count: int = 0
    last_at: float = 0.0

    def one(self) -> None:
        with self.lock:
            self.count += 1
            self.last_at = time.monotonic()


def full_quota_usable(store: LeaseStore, database: str, limit: int) -> int:
    """How many leases a probe can take at once right now (given back at once after)."""
    taken = []
    for _ in range(limit):
        result = store.acquire(database, "probe", 60_000)
        if not isinstance(result, Granted):
            break
        taken.append(result.token)
    for token in taken:
        store.release(database, token)
    return len(taken)


def ms_until_whole(store: LeaseStore, database: str, plan: Plan, since: float) -> float:
    """Milliseconds from `since` until every lease of the quota can be taken at once; a
    consistent read finds the moment, taking them all (about 100 ms of requests here)
    proves it. Infinite if that does not happen within three TTLs and the skew margin."""
    while True:
        looked_at = time.monotonic()
        if (
            store.status(database).in_use == 0
            and full_quota_usable(store, database, plan.limit) == plan.limit
        ):
            return round((looked_at - since) * 1000)
        if looked_at - since > (3 * plan.ttl_ms + SKEW_MARGIN_MS) / 1000:
            return float("inf")
        time.sleep(0.01)


def run_connlease(lab: Lab, plan: Plan) -> tuple[list[Figure], dict[str, object]]:
    database = lab.new_database(plan.limit, plan.ttl_ms)
    connector = MySqlConnector(lab.mysql, None)
    tracker = Tracker(lab.store())
    outcomes = Outcomes()
    crashes = Crashes()
    backoff = DecorrelatedJitter(base_ms=20, cap_ms=500)
    clock = SystemClock()

    def crash(n: int, rng: random.Random, kind: str = "crashed holding its lease") -> None:
        # The client's own acquire, then death before the give-back.
        acquire_within(
            tracker,
            database,
            deadline=Deadline(clock.now_ms() + plan.wait_budget_ms),
            clock=clock,
            backoff=backoff,
            rng=rng,
            holder=f"crashes/{n}",
            ttl_ms=plan.ttl_ms,
        )
        try:
            # A process that dies closes its sockets too: MariaDB sees the connection go
            # either way; what the crash loses is the give-back.
            query(connector, QUERY)
        finally:
            tracker.dropped()
            crashes.one()
        outcomes.add(kind)

    def invoke(n: int, final_wave: bool = False) -> None:
        rng = random.Random(plan.seed * 1_000_003 + n)
        try:
            if final_wave:
                crash(n, rng, "final wave: died holding it")
                return
            if rng.random() < plan.crash_share:
                crash(n, rng)
                return
            leases = ConnectionLeases(tracker, database, backoff=backoff, rng=rng)
            with (
                leases.connect(
                    connector, wait_budget_ms=plan.wait_budget_ms, ttl_ms=plan.ttl_ms
                ) as connection,
                connection.cursor() as cursor,
            ):
                cursor.execute(QUERY)
                cursor.fetchall()
            outcomes.add("ran its query, gave the lease back")
        except NoCapacity:
            outcomes.add("NoCapacity")
        except DatabaseError as error:
            outcomes.add(f"MySQL error {error.code}")
        except pymysql.err.MySQLError as error:
            # The query ran into its lease's end: the client cut it (service.lease_bound).
            outcomes.add(f"query cut at its lease's end (MySQL error {error.args[0]})")

    checker = Checker(lab.store(), database, lab.mysql)
    with checker.watching():
        run_concurrently(plan.invocations, plan.concurrency, invoke)
        # Last, a whole quota's worth of holders die at once; the quota is whole again
        # once a probe can take every lease at once.
        run_concurrently(plan.limit, plan.limit, lambda n: invoke(plan.invocations + n, True))
        recovered_ms = ms_until_whole(lab.store(), database, plan, crashes.last_at)
    time.sleep((plan.ttl_ms + SKEW_MARGIN_MS) / 1000)  # a lease may be reclaimed by then
    usable_after_ttl = full_quota_usable(lab.store(), database, plan.limit)
    figures = [
        Figure("invocations", plan.invocations),
        *(Figure(f"  {kind}", n) for kind, n in sorted(outcomes.counts.items())),
        Figure.exactly("permits leaked after the TTL", plan.limit - usable_after_ttl, 0),
        Figure.at_most(
            "ms from the last of a full quota's holders dying until the whole quota was usable",
            recovered_ms,
            plan.ttl_ms + SKEW_MARGIN_MS + SLACK_MS,
        ),
        Figure("crashed holders' leases reclaimed by later acquires", tracker.reclaimed),
        Figure.at_most("most leases held at once (in-process)", tracker.most_held, plan.limit),
        *checker.figures(),
    ]
    row: dict[str, object] = {
        "strategy": "connlease",
        "invocations": plan.invocations,
        "crashed": crashes.count,
        "refused": outcomes.counts["NoCapacity"],
        "quota": plan.limit,
        "permits usable after the TTL": usable_after_ttl,
        "whole quota usable again": f"{recovered_ms:g} ms after the last death",
    }
    return figures, row


def run_sample_counter(lab: Lab, plan: Plan) -> dict[str, object]:
    counter = DynamoDBCounter(lab.client(), lab.table, plan.limit)
    connector = MySqlConnector(lab.mysql, None)
    outcomes = Outcomes()

    def invoke(n: int) -> None:
        rng = random.Random(plan.seed * 1_000_003 + n)
        crash = rng.random() < plan.crash_share
        if not counter.take():
            outcomes.add("refused")
            return
        try:
            query(connector, QUERY)
        finally:
            if not crash:
                counter.give_back()
        outcomes.add("crashed" if crash else "ok")

    run_concurrently(plan.invocations, plan.concurrency, invoke)
    time.sleep(plan.ttl_ms / 1000)
    remaining = counter.remaining()
    return {
        "strategy": "the sample's counter",
        "invocations": plan.invocations,
        "crashed": outcomes.counts["crashed"],  # no final wave: the counter is spent by then
        "refused": outcomes.counts["refused"],
        "quota": plan.limit,
        "permits usable after the TTL": remaining,
        "whole quota usable again": "never (no TTL: a lost give-back is lost for good)",
    }


def run(lab: Lab, plan: Plan = Plan()) -> Campaign:
    watch = Stopwatch()
    figures, connlease_row = run_connlease(lab, plan)
    sample_row = run_sample_counter(lab, plan)
    campaign = Campaign(
        "Crashes",
        f"{plan.invocations} invocations, {plan.concurrency} at a time, on a quota of "
        f"{plan.limit}: each takes a lease (TTL {plan.ttl_ms} ms, as an invocation timeout), "
        f"connects to MariaDB, runs `{QUERY}` and disconnects; {plan.crash_share:.0%} of "
        "them (seeded) die before giving the lease back. A dead holder's lease may be "
        f"reclaimed {SKEW_MARGIN_MS} ms (the skew margin) after its expiry. Last, a full "
        "quota's worth of holders die at once; every 10 ms a consistent read looks for no "
        "live lease, and a probe then takes every lease at once. "
        "The original sample's counter runs the same scenario (fail-fast, as it was).",
        figures,
        [connlease_row, sample_row],
    )
    campaign.seconds = watch.seconds
    return campaign
