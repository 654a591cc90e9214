"""Campaign 2, duplicate and racing releases: every give-back is sent 2-3 times, at once from
threads or one after another, and some come late: after the lease expired and another
holder reclaimed its slot.

A release names its grant (its token), and removes that entry only: a copy finds it gone
and changes nothing, a late one cannot free the holder who took the slot over (a lease is
reclaimed the skew margin after its expiry, so a late holder stalls that much longer). The
original sample's counter cannot tell one give-back from another: every copy hands back a
permit someone else holds, and more callers get in than the quota allows.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from adapters.clock import SystemClock
from adapters.mysql import MySqlConnector
from benchmarks.strategies import DynamoDBCounter, query
from domain import (
    Deadline,
    DecorrelatedJitter,
    Lease,
    LeaseStore,
    ReleaseOutcome,
    acquire_within,
)
from domain.groups import Reservation
from domain.model import SKEW_MARGIN_MS
from local.watch import ConnectionWatcher
from reliability.common import (
    NO_GROUP,
    Campaign,
    Checker,
    Figure,
    GroupGrants,
    GroupsChecker,
    Lab,
    Stopwatch,
    describe_groups,
    expected_usable,
    group_label,
    pick_group,
    probe_groups,
    run_concurrently,
    step_label,
)

QUERY = "SELECT SLEEP(0.02)"


@dataclass(frozen=True)
class Plan:
    holders: int = 2_000
    concurrency: int = 8
    limit: int = 4
    ttl_ms: int = 5_000
    late_share: float = 0.2  # holders that stall past their lease's end before giving it back
    late_ttl_ms: int = 150
    wait_budget_ms: int = 20_000
    seed: int = 0
    # The groups layout (domain.groups): the quota's reservations, and each holder's group
    # drawn from `callers` by weight (NO_GROUP: none, the pool). Empty: no groups.
    groups: tuple[Reservation, ...] = ()
    callers: tuple[tuple[str, float], ...] = ()


SHORT = Plan(holders=200)

# `api` reserves two and borrows at will, `batch` reserves none and borrows up to its max,
# `report` keeps to its one reserved lease; the pool keeps three. Late holders' slots are
# reclaimed in their own share: a reserved one by their group, a borrowed one in the pool.
GROUPS = Plan(
    holders=600,
    concurrency=10,
    limit=6,
    groups=(
        Reservation("api", 2),
        Reservation("batch", 0, max=2),
        Reservation("report", 1, borrow=False),
    ),
    callers=(("api", 0.35), ("batch", 0.3), ("report", 0.1), (NO_GROUP, 0.25)),
)
GROUPS_SHORT = replace(GROUPS, holders=200)


@dataclass
class Books:
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: int = 0
    most_held: int = 0
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    freed_per_lease: Counter[str] = field(default_factory=Counter)
    late_after_reclaim: int = 0
    late_freed_something: int = 0
    gone_before_release: int = 0
    concurrent_rounds: int = 0
    by_group: Counter[tuple[str, str]] = field(default_factory=Counter)  # (group, what)

    def hold(self, delta: int) -> None:
        with self.lock:
            self.held += delta
            self.most_held = max(self.most_held, self.held)

    @property
    def over_releases(self) -> int:
        return sum(n - 1 for n in self.freed_per_lease.values() if n > 1)


def send_copies(give_back: Callable[[], object], copies: int, at_once: bool) -> list[object]:
    """Send the same give-back `copies` times: from threads released together, or in turn."""
    if not at_once:
        return [give_back() for _ in range(copies)]
    answers: list[object] = []
    barrier = threading.Barrier(copies)

    def send() -> None:
        barrier.wait()
        answers.append(give_back())

    threads = [threading.Thread(target=send) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def present(store: LeaseStore, database: str, lease: Lease) -> bool:
    """The lease's entry is still there (a group's shown under its group, by status)."""
    return any(entry.id == lease.id for entry in store.status(database).leases)


def run_connlease(
    lab: Lab, plan: Plan, books: Books, grants: GroupGrants | None = None
) -> tuple[Checker, str]:
    """The holders on connlease; with plan.groups, on a quota with those groups, each
    holder in a group drawn from plan.callers (booked in `grants`). Returns the checker
    that watched and the quota's database."""
    database = lab.new_database(plan.limit, plan.ttl_ms, plan.groups)
    store = lab.store()
    connector = MySqlConnector(lab.mysql, None)
    clock = SystemClock()
    backoff = DecorrelatedJitter(base_ms=10, cap_ms=200)

    def invoke(n: int) -> None:
        rng = random.Random(plan.seed * 1_000_003 + n)
        late = rng.random() < plan.late_share
        copies = rng.choice((2, 3))
        at_once = rng.random() < 0.5
        group = pick_group(rng, plan.callers) if plan.callers else NO_GROUP
        grant = acquire_within(
            store,
            database,
            deadline=Deadline(clock.now_ms() + plan.wait_budget_ms),
            clock=clock,
            backoff=backoff,
            rng=rng,
            holder=f"dup/{n}",
            ttl_ms=plan.late_ttl_ms if late else plan.ttl_ms,
            group=group or None,
        )
        if grants is not None:
            grants.record(group or None, grant)
        lease = grant.lease
        books.hold(+1)
        query(connector, QUERY)
        books.hold(-1)
        reclaimed = gone = False
        if late:
            # Stalled past its lease's end and the skew margin after it, when the lease may
            # be reclaimed: wait until someone else has reclaimed the slot.
            time.sleep((plan.late_ttl_ms + SKEW_MARGIN_MS) / 1000)
            for _ in range(100):
                if reclaimed := not present(store, database, lease):
                    break
                time.sleep(0.02)
        else:
            gone = not present(store, database, lease)  # someone else's release freed it
        answers = send_copies(lambda: store.release(database, grant.token), copies, at_once)
        freed = answers.count(ReleaseOutcome.RELEASED)
        with books.lock:
            books.late_after_reclaim += reclaimed
            books.gone_before_release += gone
            books.sent += copies
            books.concurrent_rounds += at_once
            books.answers.update(str(answer) for answer in answers)
            books.freed_per_lease[lease.id] += freed
            if reclaimed and freed:
                books.late_freed_something += 1
            books.by_group[group, "holders"] += 1
            books.by_group[group, "late"] += late
            books.by_group[group, "late after a reclaim"] += reclaimed
            books.by_group[group, "sent"] += copies
            books.by_group[group, "over-releases"] += max(0, freed - 1)

    checker = (
        Checker(store, database, lab.mysql)
        if grants is None
        else GroupsChecker(store, database, lab.mysql, grants)
    )
    with checker.watching():
        run_concurrently(plan.holders, plan.concurrency, invoke)
    return checker, database


def run_sample_counter(lab: Lab, plan: Plan, books: Books) -> int:
    """The same holders on the sample's counter; returns the peak Threads_connected above
    the baseline, as MariaDB counted it."""
    counter = DynamoDBCounter(lab.client(), lab.table, plan.limit)
    connector = MySqlConnector(lab.mysql, None)

    def invoke(n: int) -> None:
        rng = random.Random(plan.seed * 1_000_003 + n)
        late = rng.random() < plan.late_share
        copies = rng.choice((2, 3))
        at_once = rng.random() < 0.5
        give_up_at = time.monotonic() + plan.wait_budget_ms / 1000
        while not counter.take():  # the sample fails fast; waiting here keeps it comparable
            if time.monotonic() > give_up_at:
                return
            time.sleep(rng.uniform(0.01, 0.05))
        books.hold(+1)
        query(connector, QUERY)
        books.hold(-1)
        if late:
            time.sleep(plan.late_ttl_ms / 1000)
        answers = send_copies(counter.give_back, copies, at_once)
        with books.lock:
            books.sent += copies
            books.freed_per_lease[str(n)] += answers.count(True)

    watcher = ConnectionWatcher(lab.mysql)
    with watcher.watching():
        run_concurrently(plan.holders, plan.concurrency, invoke)
    return watcher.peak_above_baseline


def give_back_figures(books: Books) -> list[Figure]:
    return [
        Figure("give-backs sent", books.sent),
        *(Figure(f"  answered {answer}", n) for answer, n in sorted(books.answers.items())),
        Figure("rounds sent at once from threads", books.concurrent_rounds),
        Figure("holders whose late copies came after a reclaim", books.late_after_reclaim),
        Figure.exactly("over-releases (a lease freed more than once)", books.over_releases, 0),
        Figure.exactly(
            "give-backs after a reclaim that freed anything", books.late_freed_something, 0
        ),
        Figure.exactly(
            "live leases of other holders found freed before their own give-back",
            books.gone_before_release,
            0,
        ),
    ]


def run(lab: Lab, plan: Plan = Plan()) -> Campaign:
    if plan.groups:
        return run_groups(lab, plan)
    watch = Stopwatch()
    books = Books()
    checker, _ = run_connlease(lab, plan, books)
    sample = Books()
    sample_peak = run_sample_counter(lab, plan, sample)
    late = round(plan.holders * plan.late_share)
    campaign = Campaign(
        "Duplicate and racing releases",
        f"{plan.holders} holders, {plan.concurrency} at a time, on a quota of {plan.limit}: "
        f"each takes a lease, connects to MariaDB, runs `{QUERY}`, disconnects and sends its "
        "give-back 2 or 3 times (seeded), half of them from threads released together. About "
        f"{late} of them stall past their lease's end ({plan.late_ttl_ms} ms TTL) and the "
        f"{SKEW_MARGIN_MS} ms skew margin after it, and send their copies only once another "
        "holder has reclaimed the slot. The original "
        "sample's counter runs the same holders.",
    )
    campaign.figures += [
        *give_back_figures(books),
        Figure.at_most("most leases held at once (in-process)", books.most_held, plan.limit),
        *checker.figures(),
    ]
    campaign.table = [
        {
            "strategy": "connlease",
            "give-backs sent": books.sent,
            "over-releases": books.over_releases,
            "quota": plan.limit,
            "most holders at once": books.most_held,
            "peak Threads_connected above baseline": checker.connections.peak_above_baseline,
        },
        {
            "strategy": "the sample's counter",
            "give-backs sent": sample.sent,
            "over-releases": sample.over_releases,
            "quota": plan.limit,
            "most holders at once": sample.most_held,
            "peak Threads_connected above baseline": sample_peak,
        },
    ]
    campaign.seconds = watch.seconds
    return campaign


def run_groups(lab: Lab, plan: Plan) -> Campaign:
    """The campaign in the groups layout: holders spread over the quota's groups; no
    give-back frees anything twice, nor another group's lease or ticket (a GroupsChecker
    holds every share to its limit all along), and once every holder has given its lease
    back, every share is whole again at once."""
    watch = Stopwatch()
    books = Books()
    grants = GroupGrants(plan.groups)
    checker, database = run_connlease(lab, plan, books, grants)
    assert isinstance(checker, GroupsChecker)
    store = lab.store()
    left_live = store.status(database).in_use
    probe = probe_groups(store, database, plan.limit, plan.groups, grants)
    late = round(plan.holders * plan.late_share)
    campaign = Campaign(
        "Duplicate and racing releases, groups",
        f"{plan.holders} holders, {plan.concurrency} at a time, on "
        f"{describe_groups(plan.limit, plan.groups)}; each holder's group is drawn (seeded: "
        + ", ".join(f"{group_label(g)} {w:.0%}" for g, w in plan.callers)
        + f"). Each takes a lease, connects to MariaDB, runs `{QUERY}`, disconnects and "
        "sends its give-back 2 or 3 times (seeded), half of them from threads released "
        f"together. About {late} of them stall past their lease's end ({plan.late_ttl_ms} "
        f"ms TTL) and the {SKEW_MARGIN_MS} ms skew margin after it, and send their copies "
        "only once another holder has reclaimed the slot (a reserved lease's in its group's "
        "share, a borrowed or pool lease's in the pool). A borrowed lease of a capped group "
        "gives back its cap's ticket too. A checker reads every group's use all along; at "
        "the end no lease may be live, and a probe takes every share at once: each group's "
        "reserved leases, a capped group's borrowing up to its max, the rest of the pool.",
    )
    campaign.figures += [
        *give_back_figures(books),
        Figure.exactly("live leases left once every holder gave its lease back", left_live, 0),
        Figure.exactly(
            "leases a probe took at once after every give-back", probe.taken, plan.limit
        ),
        *(
            Figure.exactly(f"  {step_label(step)}", probe.steps[step], wanted)
            for step, wanted in expected_usable(plan.limit, plan.groups).items()
        ),
        Figure.at_most("most leases held at once (in-process)", books.most_held, plan.limit),
        *grants.figures(),
        *checker.figures(),
    ]
    for group in [*(reservation.group for reservation in plan.groups), NO_GROUP]:
        reservation = grants.reservation(group)
        campaign.table.append(
            {
                "group": group_label(group),
                "reserved": reservation.reserved if reservation else "-",
                "max": "-" if reservation is None or reservation.max is None else reservation.max,
                "holders": books.by_group[group, "holders"],
                "reserved grants": grants.kinds[group, "reserved"],
                "borrowed grants": grants.kinds[group, "borrowed"],
                "pool grants": grants.kinds[group, "pool"],
                "give-backs sent": books.by_group[group, "sent"],
                "late": books.by_group[group, "late"],
                "late after a reclaim": books.by_group[group, "late after a reclaim"],
                "over-releases": books.by_group[group, "over-releases"],
                "most held, reserved and borrowed (checker)": checker.most_total[group]
                if reservation
                else "-",
            }
        )
    campaign.seconds = watch.seconds
    return campaign
