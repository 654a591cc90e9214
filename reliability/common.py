"""What every campaign shares: the lab (embedded DynamoDB, a leases table, MariaDB), the
checker that samples the quota and the server while a campaign runs, and the figures."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
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
    Leases,
    LeaseStore,
    Quota,
    ReleaseOutcome,
    RenewResult,
    StoreUnavailable,
)
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

    def new_database(self, limit: int, ttl_ms: int) -> str:
        """A quota of its own for one campaign, so campaigns never see each other's leases;
        split over shards in a split lab (every store follows the layout it finds)."""
        database = f"rel-{uuid.uuid4().hex[:8]}"
        store = self.store()
        if self.shards_of is not None:
            shards_of = self.shards_of
            store = DynamoDBLeaseStore(
                self.client(), self.table, SystemClock(), shard_capacity=lambda _db: shards_of
            )
        store.set_quota(database, Quota(limit, ttl_ms))
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


@dataclass
class Tracker:
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

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        result = self.inner.acquire(database, holder, ttl_ms, secret, group=group)
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
        try:
            outcome = self.inner.release(database, token)
        except StoreUnavailable:
            with self.lock:
                self.failed_releases.add(lease_id)
            raise
        with self.lock:
            self.given_back.add(lease_id)
            if outcome is ReleaseOutcome.RELEASED:
                self.freed[lease_id] += 1
        return outcome

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        return self.inner.renew(database, token, ttl_ms)

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
