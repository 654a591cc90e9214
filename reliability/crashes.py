"""Campaign 1, crashes: a share of holders die between taking a lease and giving it back.

A lease dies with its holder's TTL and the next acquire that finds the quota full reclaims
it, the skew margin after its expiry (domain.model.SKEW_MARGIN_MS); the original sample's
counter, in the same scenario, loses a permit per crash for good.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

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
from domain.groups import TICKET_SLACK_MS, Reservation
from domain.model import SKEW_MARGIN_MS
from reliability.common import (
    NO_GROUP,
    POOL_STEP,
    Campaign,
    Checker,
    Figure,
    GroupGrants,
    GroupsChecker,
    GroupTracker,
    Lab,
    Outcomes,
    Probe,
    Stopwatch,
    Tracker,
    describe_groups,
    expected_usable,
    group_label,
    pick_group,
    probe_groups,
    run_concurrently,
    step_label,
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
    # The groups layout (domain.groups): the quota's reservations, and each holder's group
    # drawn from `callers` by weight (NO_GROUP: none, the pool). Empty: no groups.
    groups: tuple[Reservation, ...] = ()
    callers: tuple[tuple[str, float], ...] = ()


SHORT = Plan(invocations=400, concurrency=12, limit=10)

# `api` reserves two and borrows at will, `batch` reserves none and borrows up to its max,
# `report` keeps to its one reserved lease; a third of the holders name no group. A
# crashed holder of a capped group keeps a ticket of its cap TICKET_SLACK_MS past its lease.
GROUP_CALLERS = (("api", 0.3), ("batch", 0.25), ("report", 0.05), (NO_GROUP, 0.4))
GROUPS = Plan(
    invocations=1_500,
    groups=(
        Reservation("api", 2),
        Reservation("batch", 0, max=6),
        Reservation("report", 1, borrow=False),
    ),
    callers=GROUP_CALLERS,
)
GROUPS_SHORT = replace(
    GROUPS,
    invocations=300,
    concurrency=12,
    limit=10,
    groups=(
        Reservation("api", 2),
        Reservation("batch", 0, max=4),
        Reservation("report", 1, borrow=False),
    ),
)


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
    if plan.groups:
        return run_groups(lab, plan)
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


def final_wave(plan: Plan) -> list[str]:
    """A full quota's worth of holders of the groups layout, by group: each group's
    reservation, each capped group's borrowing up to its max, the rest of no group."""
    wave: list[str] = []
    for step, count in expected_usable(plan.limit, plan.groups).items():
        wave += [NO_GROUP if step == POOL_STEP else step.partition(" ")[0]] * count
    return wave


def ms_until_groups_whole(
    store: LeaseStore, database: str, plan: Plan, grants: GroupGrants, since: float
) -> float:
    """ms_until_whole for the groups layout: until no lease is live and a probe takes every
    group's share at once (probe_groups). A capped group's ticket outlives its lease by
    TICKET_SLACK_MS, so it gives up that much later too."""
    give_up_s = (3 * plan.ttl_ms + TICKET_SLACK_MS + SKEW_MARGIN_MS) / 1000
    while True:
        looked_at = time.monotonic()
        if store.status(database).in_use == 0 and probe_groups(
            store, database, plan.limit, plan.groups, grants, stop_short=True
        ).whole(plan.limit, plan.groups):
            return round((looked_at - since) * 1000)
        if looked_at - since > give_up_s:
            return float("inf")
        time.sleep(0.01)


def group_rows(
    plan: Plan,
    grants: GroupGrants,
    checker: GroupsChecker,
    by_group: Counter[tuple[str, str]],
) -> list[dict[str, object]]:
    """A row per group (and one for callers of no group): its holders, what they got, and
    the most the checker saw it hold."""
    rows: list[dict[str, object]] = []
    for group in [*(reservation.group for reservation in plan.groups), NO_GROUP]:
        reservation = grants.reservation(group)
        rows.append(
            {
                "group": group_label(group),
                "reserved": reservation.reserved if reservation else "-",
                "max": "-" if reservation is None or reservation.max is None else reservation.max,
                "holders": by_group[group, "holders"],
                "crashed": by_group[group, "crashed"],
                "refused": by_group[group, "refused"],
                "reserved grants": grants.kinds[group, "reserved"],
                "borrowed grants": grants.kinds[group, "borrowed"],
                "pool grants": grants.kinds[group, "pool"],
                "most reserved in use (checker)": checker.most_reserved[group]
                if reservation
                else "-",
                "most held, reserved and borrowed (checker)": checker.most_total[group]
                if reservation
                else "-",
            }
        )
    return rows


@dataclass
class GroupHolders:
    """What the groups layout's holders did: outcomes, and per (group, kind) counts."""

    outcomes: Outcomes = field(default_factory=Outcomes)
    by_group: Counter[tuple[str, str]] = field(default_factory=Counter)
    crashes: Crashes = field(default_factory=Crashes)

    def add(self, group: str, kind: str) -> None:
        with self.outcomes.lock:
            self.by_group[group, "holders"] += 1
            self.by_group[group, kind] += 1


def run_group_holders(lab: Lab, plan: Plan, database: str, tracker: Tracker) -> GroupHolders:
    """The invocations, each in a group drawn by weight, then a final wave of a full
    quota's worth (final_wave) that dies at once."""
    connector = MySqlConnector(lab.mysql, None)
    books = GroupHolders()
    backoff = DecorrelatedJitter(base_ms=20, cap_ms=500)
    clock = SystemClock()

    def crash(n: int, rng: random.Random, group: str, kind: str) -> str:
        acquire_within(
            tracker,
            database,
            deadline=Deadline(clock.now_ms() + plan.wait_budget_ms),
            clock=clock,
            backoff=backoff,
            rng=rng,
            holder=f"crashes/{n}",
            ttl_ms=plan.ttl_ms,
            group=group or None,
        )
        try:
            query(connector, QUERY)
        finally:
            tracker.dropped()
            books.crashes.one()
        books.outcomes.add(kind)
        return "crashed"

    def hold(n: int, rng: random.Random, group: str, final: bool) -> str:
        if final:
            return crash(n, rng, group, "final wave: died holding it")
        if rng.random() < plan.crash_share:
            return crash(n, rng, group, "crashed holding its lease")
        leases = ConnectionLeases(tracker, database, backoff=backoff, rng=rng, group=group or None)
        with (
            leases.connect(
                connector, wait_budget_ms=plan.wait_budget_ms, ttl_ms=plan.ttl_ms
            ) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(QUERY)
            cursor.fetchall()
        books.outcomes.add("ran its query, gave the lease back")
        return "ran its query"

    def invoke(n: int, final_group: str | None = None) -> None:
        rng = random.Random(plan.seed * 1_000_003 + n)
        group = pick_group(rng, plan.callers) if final_group is None else final_group
        try:
            kind = hold(n, rng, group, final_group is not None)
        except NoCapacity:
            kind = "refused"
            books.outcomes.add("NoCapacity")
        except DatabaseError as error:
            kind = "other"
            books.outcomes.add(f"MySQL error {error.code}")
        except pymysql.err.MySQLError as error:
            kind = "other"
            books.outcomes.add(f"query cut at its lease's end (MySQL error {error.args[0]})")
        books.add(group, kind)

    wave = final_wave(plan)
    run_concurrently(plan.invocations, plan.concurrency, invoke)
    run_concurrently(len(wave), len(wave), lambda n: invoke(plan.invocations + n, wave[n]))
    return books


def run_groups(lab: Lab, plan: Plan) -> Campaign:
    """The campaign in the groups layout: holders spread over the quota's groups, each
    group's share and the pool held to their limits all along (a GroupsChecker), and every
    share whole again once the crashed holders' leases (and tickets) are reclaimed."""
    watch = Stopwatch()
    database = lab.new_database(plan.limit, plan.ttl_ms, plan.groups)
    grants = GroupGrants(plan.groups)
    tracker = GroupTracker(lab.store(), grants=grants)
    checker = GroupsChecker(lab.store(), database, lab.mysql, grants)
    with checker.watching():
        books = run_group_holders(lab, plan, database, tracker)
        recovered_ms = ms_until_groups_whole(
            lab.store(), database, plan, grants, books.crashes.last_at
        )
    time.sleep((plan.ttl_ms + TICKET_SLACK_MS + SKEW_MARGIN_MS) / 1000)
    probe: Probe = probe_groups(lab.store(), database, plan.limit, plan.groups, grants)
    expected = expected_usable(plan.limit, plan.groups)
    figures = [
        Figure("invocations", sum(books.outcomes.counts.values())),
        *(Figure(f"  {kind}", n) for kind, n in sorted(books.outcomes.counts.items())),
        Figure.exactly("permits leaked after the TTL", plan.limit - probe.taken, 0),
        *(
            Figure.exactly(f"  {step_label(step)} after the TTL", probe.steps[step], wanted)
            for step, wanted in expected.items()
        ),
        Figure.at_most(
            "ms from the last of a full quota's holders dying until every share was usable",
            recovered_ms,
            plan.ttl_ms + TICKET_SLACK_MS + SKEW_MARGIN_MS + SLACK_MS,
        ),
        Figure("crashed holders' leases reclaimed by later acquires", tracker.reclaimed),
        Figure.at_most("most leases held at once (in-process)", tracker.most_held, plan.limit),
        *grants.figures(),
        *checker.figures(),
    ]
    campaign = Campaign(
        "Crashes, groups",
        f"{plan.invocations} invocations, {plan.concurrency} at a time, on "
        f"{describe_groups(plan.limit, plan.groups)}; each holder's group is drawn (seeded: "
        + ", ".join(f"{group_label(g)} {w:.0%}" for g, w in plan.callers)
        + f"). Each takes a lease (TTL {plan.ttl_ms} ms), connects to MariaDB, runs "
        f"`{QUERY}` and disconnects; {plan.crash_share:.0%} of them die before giving the "
        "lease back. A capped group's borrowed lease holds a ticket of its cap "
        f"{TICKET_SLACK_MS} ms longer than the lease. Last, a full quota's worth of holders "
        "die at once (each group its reservation, a capped group its max, the rest of no "
        "group); every 10 ms a consistent read looks for no live lease, and a probe then "
        "takes every share at once: each group's reserved leases, a capped group's borrowing "
        "up to its max, and the rest of the pool. A checker reads every group's use all "
        "along, and each lease it sees is held to the group its grant was asked for.",
        figures,
        group_rows(plan, grants, checker, books.by_group),
    )
    campaign.seconds = watch.seconds
    return campaign
