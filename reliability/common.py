"""What every campaign shares: the lab (embedded DynamoDB, a leases table, MariaDB), the
checker that samples the quota and the server while a campaign runs, and the figures."""

from __future__ import annotations

import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore, create_table
from adapters.mysql import MySqlEndpoint
from domain import (
    AcquireResult,
    ConnleaseError,
    Granted,
    Lease,
    Leases,
    LeaseStore,
    Quota,
    ReleaseOutcome,
    RenewResult,
    StoreUnavailable,
)
from domain.groups import Reservation
from domain.tokens import lease_key, parse_token
from local.dynamodb import EmbeddedDynamoDB
from local.watch import ConnectionWatcher, Poller

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class Figure:
    """One reported number, with the target it is held to (if any)."""

    name: str
    value: float | int | str
    target: str = ""
    met: bool | None = None  # None: reported, not held to a target

    @classmethod
    def at_most(cls, name: str, value: float, limit: float) -> Figure:
        return cls(name, value, f"<= {limit:g}", value <= limit)

    @classmethod
    def exactly(cls, name: str, value: float, wanted: float) -> Figure:
        return cls(name, value, f"{wanted:g}", value == wanted)

    @classmethod
    def at_least(cls, name: str, value: float, floor: float) -> Figure:
        return cls(name, value, f">= {floor:g}", value >= floor)


@dataclass
class Campaign:
    """A campaign's outcome: what ran, its figures, and optional rows of a side-by-side table."""

    title: str
    what: str
    figures: list[Figure] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Figure]:
        return [figure for figure in self.figures if figure.met is False]

    def figure(self, name: str) -> Figure:
        return next(figure for figure in self.figures if figure.name == name)


@dataclass
class Lab:
    """The real local parts a campaign runs against: the embedded DynamoDB (moto, requests
    serialized) with a fresh leases table, and MariaDB."""

    dynamodb: EmbeddedDynamoDB
    mysql: MySqlEndpoint
    table: str
    shards_of: int | None = None  # split every quota, into shards of this many leases

    def client(self, **config: Any) -> DynamoDBClient:
        return self.dynamodb.client(**({"max_pool_connections": 64} | config))

    def store(self, client: DynamoDBClient | None = None) -> DynamoDBLeaseStore:
        return DynamoDBLeaseStore(client or self.client(), self.table, SystemClock())

    def new_database(self, limit: int, ttl_ms: int, groups: Sequence[Reservation] = ()) -> str:
        """A quota of its own for one campaign, so campaigns never see each other's leases;
        split over shards in a split lab (every store follows the layout it finds); with
        `groups`, their reservations (domain.groups), each share split the same way."""
        database = f"rel-{uuid.uuid4().hex[:8]}"
        store = self.store()
        if self.shards_of is not None:
            shards_of = self.shards_of
            store = DynamoDBLeaseStore(
                self.client(), self.table, SystemClock(), shard_capacity=lambda _db: shards_of
            )
        store.set_quota(database, Quota(limit, ttl_ms), groups or None)
        return database

    @property
    def layout(self) -> str:
        """How this lab's quotas are kept, for a campaign's title."""
        return "one item" if self.shards_of is None else f"split, shards of {self.shards_of}"

    @contextmanager
    def throttling(self) -> Iterator[str]:
        """In a split lab, partitions held to SPLIT_LAB_SCALE of DynamoDB's rates while it
        lasts; says so, for the campaign's description."""
        if self.shards_of is None:
            yield ""
            return
        with self.dynamodb.capacity.scaled(SPLIT_LAB_SCALE):
            yield (
                f" Every partition is held to {SPLIT_LAB_SCALE:.0%} of DynamoDB's rates "
                "(the capacity model), so its own throttling joins the injected faults."
            )


# In a split lab the store-fault campaign's partitions take this share of DynamoDB's
# rates: the capacity model's own throttling joins the faults it injects.
SPLIT_LAB_SCALE = 0.02
SPLIT_LAB_SHARDS_OF = 2


@contextmanager
def lab(
    mysql: MySqlEndpoint, dynamodb: EmbeddedDynamoDB | None = None, *, split: bool = False
) -> Iterator[Lab]:
    """A lab on `dynamodb` if given (a test session's), else on an embedded one of its own;
    `split`: every quota split into shards of two, on partitions at 2% of DynamoDB's rates
    (its own embedded DynamoDB, so the throttling touches nothing else)."""
    shards_of = SPLIT_LAB_SHARDS_OF if split else None
    if dynamodb is not None and not split:
        yield _with_table(dynamodb, mysql, shards_of)
        return
    with EmbeddedDynamoDB() as own:
        yield _with_table(own, mysql, shards_of)


def _with_table(dynamodb: EmbeddedDynamoDB, mysql: MySqlEndpoint, shards_of: int | None) -> Lab:
    table = f"reliability-{uuid.uuid4().hex[:8]}"
    create_table(dynamodb.client(), table)
    return Lab(dynamodb, mysql, table, shards_of)


class Checker(Poller):
    """Samples, every `interval_s` while a campaign runs, the quota with consistent reads
    (straight to the embedded DynamoDB, past any fault injection), with a
    ConnectionWatcher on MariaDB's Threads_connected beside it."""

    def __init__(
        self, store: LeaseStore, database: str, mysql: MySqlEndpoint, interval_s: float = 0.05
    ) -> None:
        super().__init__(interval_s, "checker")
        self._store = store
        self._database = database
        self.connections = ConnectionWatcher(mysql, interval_s)
        self.limit = store.status(database).limit
        self.max_live = 0
        self.samples = 0
        self.read_errors = 0

    def sample(self) -> None:
        try:
            status = self._store.status(self._database)
        except ConnleaseError:
            self.read_errors += 1
        else:
            self.max_live = max(self.max_live, status.in_use)
            self.samples += 1

    def stopped(self) -> None:
        self.sample()

    def figures(self) -> list[Figure]:
        return [
            Figure.at_most("most live leases seen (checker)", self.max_live, self.limit),
            Figure("checker samples (consistent reads)", self.samples),
            # Reported, not held: the server counts every client's connections, and one
            # its thread has not yet seen close.
            Figure(
                f"peak Threads_connected above baseline (quota {self.limit})",
                self.connections.peak_above_baseline,
            ),
        ]

    @contextmanager
    def watching(self) -> Iterator[Self]:
        with self.connections.watching(), super().watching():
            yield self


class Stopwatch:
    def __init__(self) -> None:
        self._started = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started


class LeasesProxy(ABC):
    """A `Leases` that hands each call on to the store `_leases` gives: a wrapper says where
    that store is, and overrides the calls it keeps books on."""

    @abstractmethod
    def _leases(self) -> Leases: ...

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        return self._leases().acquire(database, holder, ttl_ms, secret, group=group)

    def release(self, database: str, token: str) -> ReleaseOutcome:
        return self._leases().release(database, token)

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        return self._leases().renew(database, token, ttl_ms)


@dataclass
class Tracker(LeasesProxy):
    """Wraps the store a caller uses and keeps the books: who holds what, what came back.
    The books go by lease id; a release names its grant by token, the holder's secret."""

    inner: Leases
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: int = 0
    most_held: int = 0
    granted: set[str] = field(default_factory=set)
    release_calls: Counter[str] = field(default_factory=Counter)
    given_back: set[str] = field(default_factory=set)  # a release answered, either way
    failed_releases: set[str] = field(default_factory=set)  # a release that raised
    freed: Counter[str] = field(default_factory=Counter)  # answered RELEASED
    reclaimed: int = 0
    lease_ids: dict[str, str] = field(default_factory=dict)  # token -> its lease's id
    # What the invocation had left when its give-back last failed (by lease id): a lost
    # release is then explained by its deadline, or not.
    time_left: Callable[[], int | None] = lambda: None
    left_at_failure_ms: dict[str, int | None] = field(default_factory=dict)
    # How long its give-back had been trying when it last failed (by lease id): one that
    # gave up before its budget was spent is a bug; one that spent it is the documented end.
    first_release_s: dict[str, float] = field(default_factory=dict)
    tried_at_failure_ms: dict[str, int] = field(default_factory=dict)

    def _leases(self) -> Leases:
        return self.inner

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        result = super().acquire(database, holder, ttl_ms, secret, group=group)
        if isinstance(result, Granted):
            with self.lock:
                self.granted.add(result.lease.id)
                self.lease_ids[result.token] = result.lease.id
                self.reclaimed += len(result.reclaimed)
                self.held += 1
                self.most_held = max(self.most_held, self.held)
        return result

    def dropped(self) -> None:
        """A holder died with its lease: it holds nothing any more, and gives nothing back."""
        with self.lock:
            self.held -= 1

    def lease_id(self, database: str, token: str) -> str:
        """The id of the lease a token names: a grant's token was seen at its grant; a bare
        secret (a proposer's give-back after a lost answer) names its key."""
        with self.lock:
            known = self.lease_ids.get(token)
        return known if known is not None else lease_key(database, parse_token(token).secret)

    def release(self, database: str, token: str) -> ReleaseOutcome:
        lease_id = self.lease_id(database, token)
        with self.lock:
            self.release_calls[lease_id] += 1
            if self.release_calls[lease_id] == 1:
                self.held -= 1  # the connection is closed before the first attempt
                self.first_release_s[lease_id] = time.monotonic()
        try:
            outcome = super().release(database, token)
        except StoreUnavailable:
            with self.lock:
                self.failed_releases.add(lease_id)
                self.left_at_failure_ms[lease_id] = self.time_left()
                tried_s = time.monotonic() - self.first_release_s[lease_id]
                self.tried_at_failure_ms[lease_id] = round(tried_s * 1000)
            raise
        with self.lock:
            self.given_back.add(lease_id)
            if outcome is ReleaseOutcome.RELEASED:
                self.freed[lease_id] += 1
        return outcome

    @property
    def released_twice(self) -> int:
        return sum(1 for answers in self.freed.values() if answers > 1)

    @property
    def lost_releases(self) -> set[str]:
        return self.granted - self.given_back


@dataclass
class Outcomes:
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)
    overshoot_ms: list[int] = field(default_factory=list)

    def add(self, kind: str, overshoot_ms: int | None = None) -> None:
        with self.lock:
            self.counts[kind] += 1
            if overshoot_ms is not None:
                self.overshoot_ms.append(overshoot_ms)


def run_concurrently(count: int, concurrency: int, invoke: Callable[[int], None]) -> None:
    """Run invoke(0), ..., invoke(count - 1) on `concurrency` threads: that many execution
    environments, each serving one invocation at a time."""
    numbers = iter(range(count))
    lock = threading.Lock()

    def environment() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            invoke(n)

    threads = [threading.Thread(target=environment) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# Groups (domain.groups): the layout the crash and duplicate campaigns also run in, its
# holders spread over the quota's groups, and the books and checks that go with it.

NO_GROUP = ""  # a caller that names no group: it takes the pool's leases
POOL_STEP = "pool, no group"


def group_label(group: str) -> str:
    return group or "(no group)"


def pick_group(rng: random.Random, callers: Sequence[tuple[str, float]]) -> str:
    """A caller's group, drawn by weight (NO_GROUP: none)."""
    return rng.choices([group for group, _ in callers], [weight for _, weight in callers])[0]


def describe_groups(limit: int, reservations: Sequence[Reservation]) -> str:
    """The layout in words, for a campaign's description."""
    parts = []
    for reservation in reservations:
        text = f"`{reservation.group}` {reservation.reserved} reserved"
        if not reservation.borrow:
            text += ", no borrowing"
        elif reservation.max is not None:
            text += f", borrowing up to a max of {reservation.max}"
        else:
            text += ", borrowing"
        parts.append(text)
    pool = limit - sum(reservation.reserved for reservation in reservations)
    return f"a quota of {limit} with groups ({'; '.join(parts)}) and a pool of {pool}"


@dataclass
class GroupGrants:
    """Which group each grant was asked for, and what it got. A lease not borrowed comes
    from the reserved share of the group it names: that must be the asked group. A borrowed
    one counts against its group's max: it must name the asking group too, and only a group
    that may borrow borrows. A caller of no group (or one the quota does not name) takes
    the pool's own leases."""

    reservations: tuple[Reservation, ...]
    lock: threading.Lock = field(default_factory=threading.Lock)
    asked: dict[str, str] = field(default_factory=dict)  # lease id -> the group asked
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)  # (asked, kind)
    probes: int = 0  # grants to probes (probe_groups)
    wrong_group: int = 0
    borrowed_without_leave: int = 0

    def reservation(self, group: str) -> Reservation | None:
        return next((r for r in self.reservations if r.group == group), None)

    def record(self, group: str | None, result: AcquireResult, *, probe: bool = False) -> None:
        """Book a grant asked for `group`; a probe's is checked alike but not counted in
        `kinds`, which count the holders' grants."""
        if not isinstance(result, Granted):
            return
        asked = group or NO_GROUP
        lease = result.lease
        reservation = self.reservation(asked)
        kind = "borrowed" if lease.borrowed else "reserved" if lease.group else "pool"
        with self.lock:
            self.asked[lease.id] = asked
            if probe:
                self.probes += 1
            else:
                self.kinds[asked, kind] += 1
            if lease.group != (asked if reservation is not None else NO_GROUP):
                self.wrong_group += 1
            if lease.borrowed and (reservation is None or not reservation.borrow):
                self.borrowed_without_leave += 1

    def figures(self) -> list[Figure]:
        return [
            Figure.exactly(
                "grants whose lease is not the asked group's (lease.group)", self.wrong_group, 0
            ),
            Figure.exactly(
                "borrowed leases granted to a caller whose group may not borrow",
                self.borrowed_without_leave,
                0,
            ),
        ]


@dataclass
class GroupTracker(Tracker):
    """A Tracker that also books, in `grants`, the group each grant was asked for."""

    grants: GroupGrants = field(default_factory=lambda: GroupGrants(()))

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        result = super().acquire(database, holder, ttl_ms, secret, group=group)
        self.grants.record(group, result)
        return result


def expected_usable(limit: int, reservations: Sequence[Reservation]) -> dict[str, int]:
    """What probe_groups takes, step by step, in a quota that holds no lease: each group's
    reservation, then each capped group's borrowing up to its max, then the rest of the
    pool by callers of no group."""
    steps = {f"{r.group} reserved": r.reserved for r in reservations if r.reserved}
    for reservation in reservations:
        if reservation.borrow_cap:
            steps[f"{reservation.group} borrowed"] = reservation.borrow_cap
    steps[POOL_STEP] = limit - sum(steps.values())
    return steps


def step_label(step: str) -> str:
    """A probe step (common.expected_usable) as a figure names it."""
    if step == POOL_STEP:
        return "pool leases usable by callers of no group"
    group, _, kind = step.partition(" ")
    if kind == "reserved":
        return f"`{group}` reserved leases usable"
    return f"`{group}` leases borrowed up to its max usable"


@dataclass(frozen=True)
class Probe:
    """What a probe took at once: the leases of each step that were what the step asks
    for (its group's reserved ones, its borrowed ones, the pool's), and all it took."""

    steps: dict[str, int]
    taken: int

    def whole(self, limit: int, reservations: Sequence[Reservation]) -> bool:
        return self.taken == limit and self.steps == expected_usable(limit, reservations)


def probe_groups(
    store: LeaseStore,
    database: str,
    limit: int,
    reservations: Sequence[Reservation],
    grants: GroupGrants,
    *,
    stop_short: bool = False,
) -> Probe:
    """How many leases a probe can take at once right now, step by step (expected_usable),
    each given back at once after; every grant is booked in `grants`. `stop_short`: stop
    at the first step that falls short (the quota is not whole; a quick answer)."""
    tokens: list[str] = []
    steps: Counter[str] = Counter()

    def take(group: str | None, step: str, wanted: int, fits: Callable[[Lease], bool]) -> None:
        for _ in range(wanted):
            result = store.acquire(database, "probe", 60_000, group=group)
            grants.record(group, result, probe=True)
            if not isinstance(result, Granted):
                return
            tokens.append(result.token)
            steps[step] += fits(result.lease)

    try:
        for step, wanted in expected_usable(limit, reservations).items():
            group, _, kind = step.partition(" ")
            if step == POOL_STEP:
                take(None, step, limit, lambda lease: not lease.group)
            elif kind == "reserved":
                take(group, step, wanted, lambda lease: not lease.borrowed)
            else:
                take(group, step, wanted, lambda lease: lease.borrowed)
            if stop_short and steps[step] < wanted:
                break
    finally:
        for token in tokens:
            store.release(database, token)
    return Probe({step: steps[step] for step in expected_usable(limit, reservations)}, len(tokens))


class GroupsChecker(Checker):
    """A Checker that also reads, in each sample, every group's use: reserved leases in use
    never above the reservation, a capped group's reserved and borrowed never above its
    max, a group that may not borrow never borrowing, the pool never above its limit. It
    notes each lease's group as the store shows it, and at the end holds it to the group
    its grant was asked for (`grants`)."""

    def __init__(
        self,
        store: LeaseStore,
        database: str,
        mysql: MySqlEndpoint,
        grants: GroupGrants,
        interval_s: float = 0.05,
    ) -> None:
        self.grants = grants
        self.reservations = grants.reservations
        self.most_reserved: Counter[str] = Counter()
        self.most_borrowed: Counter[str] = Counter()
        self.most_total: Counter[str] = Counter()
        self.most_pool = 0
        self.pool_limit = 0
        self.without_groups = 0
        # lease id -> (its group as status showed it, borrowed)
        self.seen: dict[str, tuple[str, bool]] = {}
        super().__init__(store, database, mysql, interval_s)

    def sample(self) -> None:
        try:
            status = self._store.status(self._database)
        except ConnleaseError:
            self.read_errors += 1
            return
        self.max_live = max(self.max_live, status.in_use)
        self.samples += 1
        view = status.groups
        if view is None:
            self.without_groups += 1
            return
        self.pool_limit = view.pool_limit
        self.most_pool = max(self.most_pool, view.pool_in_use)
        for group in view.groups:
            name = group.group
            self.most_reserved[name] = max(self.most_reserved[name], group.reserved_in_use)
            self.most_borrowed[name] = max(self.most_borrowed[name], group.borrowed)
            total = group.reserved_in_use + group.borrowed
            self.most_total[name] = max(self.most_total[name], total)
        now_ms = round(time.time() * 1000)
        for lease in status.leases:
            if lease.is_live(now_ms):
                self.seen[lease.id] = (lease.group, lease.borrowed)

    @property
    def wrong_holders(self) -> int:
        """Live leases seen in a group (reserved or borrowed) other than their grant's."""
        with self.grants.lock:
            asked = dict(self.grants.asked)
        return sum(
            1
            for lease_id, (group, _) in self.seen.items()
            if lease_id in asked
            and group != (asked[lease_id] if self.grants.reservation(asked[lease_id]) else "")
        )

    @property
    def unaccounted(self) -> int:
        with self.grants.lock:
            return sum(1 for lease_id in self.seen if lease_id not in self.grants.asked)

    def figures(self) -> list[Figure]:
        figures = [
            *super().figures(),
            Figure.exactly("checker samples without the quota's groups", self.without_groups, 0),
            Figure.at_most("most pool leases in use (checker)", self.most_pool, self.pool_limit),
        ]
        for reservation in self.reservations:
            group = reservation.group
            if reservation.reserved:
                figures.append(
                    Figure.at_most(
                        f"most `{group}` reserved leases in use (checker)",
                        self.most_reserved[group],
                        reservation.reserved,
                    )
                )
            if not reservation.borrow:
                figures.append(
                    Figure.exactly(
                        f"most `{group}` borrowed leases (checker; it may not borrow)",
                        self.most_borrowed[group],
                        0,
                    )
                )
            elif reservation.max is not None:
                figures.append(
                    Figure.at_most(
                        f"most `{group}` leases in use, reserved and borrowed (checker)",
                        self.most_total[group],
                        reservation.max,
                    )
                )
            else:
                figures.append(
                    Figure(f"most `{group}` borrowed leases (checker)", self.most_borrowed[group])
                )
        figures += [
            Figure("live leases the checker saw, with their group", len(self.seen)),
            Figure.exactly("  of which held by a caller of another group", self.wrong_holders, 0),
            Figure("  of which no grant accounts for (yet)", self.unaccounted),
        ]
        return figures
