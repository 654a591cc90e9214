"""Interleavings of a lease store's requests (issue 22): acquirers, releasers, renewers,
force-release and operators run on the deterministic scheduler (reliability.scheduler),
each storage request a scheduling point, and after every step the shared state is checked:

(i)   no step raises the live leases of a database past its limit in force: the largest
      target of the last accepted set_quota and of every set_quota in flight or started
      since it ended (leases held past a lowered limit may only drain);
(ii)  likewise the pool's share, each group's reserved share and each group's max;
(iii) at the end (a quiet status), the quota is what the last accepted change set, unless
      a change started after it, and no share could grant past its limit;
(iv)  no actor ends with an untyped exception (anything not a ConnleaseError: an
      UnboundLocalError, AssertionError, KeyError, ...);
(v)   no item of a database gives a fence twice, across the quota's (or a group's) lives:
      a grant's fence is above every fence its item ever had, so no token names two
      grants (issue 23).

    python -m reliability.interleavings --exhaustive [--preemptions 2] [--max-schedules N]
    python -m reliability.interleavings --random N --seed S [--depth 3]
    python -m reliability.interleavings --scenario NAME --replay SCHEDULE
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol

from adapters.dynamodb import DynamoDBItems, create_table
from adapters.memory import InMemoryItems, operation_of
from domain import Clock, ConnleaseError, Granted, LeaseStore, Quota, QuotaState, QuotaStatus
from domain.changes import SETTLE_EVERY_MS
from domain.groups import Reservation
from domain.item import ItemWrite
from domain.model import MIN_TTL_MS, SKEW_MARGIN_MS
from domain.plan import all_parts
from domain.ports import ItemStore, Written
from local.dynamodb import EmbeddedDynamoDB
from reliability import scheduler
from reliability.common import Campaign, Figure
from reliability.scheduler import Report

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DB = "db"
TTL_MS = 60_000  # nothing a scenario grants expires during a run: time stands still
START_MS = 1_800_000_000_000
Actor = tuple[str, Callable[[], object]]


class SharedClock(Clock):
    """Every actor's clock: it moves only when told (no actor sleeps in a scenario)."""

    def __init__(self) -> None:
        self._now_ms = START_MS

    def now_ms(self) -> int:
        return self._now_ms

    def sleep_ms(self, ms: int) -> None:
        self._now_ms += ms


class World(Protocol):
    """The shared backing state, and a store per actor over it, each with caches of its
    own, as separate Lambda execution environments have."""

    clock: SharedClock

    def new_store(self) -> LeaseStore: ...

    def snapshot(self) -> dict[str, QuotaState]:
        """Every item's state, read unscheduled (for the checks)."""


class ScheduledItems(ItemStore):
    """Items every request to which is a scheduling point, then one atomic step on the
    shared in-memory items."""

    def __init__(self, items: ItemStore, point: Callable[[str], None]) -> None:
        self._items, self._point = items, point

    def read(self, key: str) -> QuotaState | None:
        self._point(f"read {key}")
        return self._items.read(key)

    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        self._point(f"read_many {','.join(keys)}")
        return self._items.read_many(keys)

    def write(self, key: str, write: ItemWrite) -> Written:
        self._point(f"{operation_of(write)} {key}")
        return self._items.write(key, write)

    def delete(self, key: str, epoch: int | None = None) -> bool:
        self._point(f"delete {key}")
        return self._items.delete(key, epoch)

    def all_keys(self) -> list[str]:
        self._point("scan")
        return self._items.all_keys()


class ItemsWorld:
    """Every actor's LeaseStore over the storage port (domain.ports.ItemStore), each request
    a scheduling point, on one store of items: in memory, or a DynamoDB table (`items`,
    made on the world's clock)."""

    def __init__(
        self,
        point: Callable[[str], None],
        shard_capacity: int,
        items: Callable[[Clock], ItemStore] | None = None,
    ) -> None:
        self.clock = SharedClock()
        self._point = point
        self._capacity = shard_capacity
        self._stores = 0
        self._items = items(self.clock) if items is not None else InMemoryItems()

    def new_store(self) -> LeaseStore:
        self._stores += 1
        n = self._stores
        secrets = (f"s{n:03d}x{i:012d}" for i in range(10**9))  # deterministic, distinct
        return LeaseStore(
            ScheduledItems(self._items, self._point),
            self.clock,
            lambda: next(secrets),
            shard_capacity=lambda _db: self._capacity,
            rng=random.Random(n),
        )

    def snapshot(self) -> dict[str, QuotaState]:
        return self._items.read_many(self._items.all_keys())


@dataclass(frozen=True)
class Target:
    """What one set_quota asks: a limit and the groups (by name)."""

    limit: int
    groups: dict[str, Reservation] = field(default_factory=dict)
    deleted: bool = False  # delete_quota's: the quota may end deleted

    @property
    def pool(self) -> int:
        return self.limit - sum(r.reserved for r in self.groups.values())

    def reserved(self, group: str) -> int:
        found = self.groups.get(group)
        return found.reserved if found is not None else 0

    def most(self, group: str) -> float:
        """All a group may hold; a group not named (retired) only drains."""
        found = self.groups.get(group)
        if found is None:
            return 0
        cap = found.borrow_cap
        return math.inf if cap is None else found.reserved + cap


@dataclass
class _Change:
    target: Target
    started: int
    ended: int | None = None
    accepted: bool = False


class Changes:
    """The operators' set_quota calls, in order, for the limit in force."""

    def __init__(self) -> None:
        self._seq = 0
        self._changes: dict[str, list[_Change]] = {}

    def start(
        self,
        database: str,
        limit: int,
        groups: Iterable[Reservation] | None,
        *,
        deleted: bool = False,
    ) -> _Change:
        last = self.last_accepted(database)
        named = (
            {r.group: r for r in groups}
            if groups is not None
            else (dict(last.target.groups) if last else {})
        )
        self._seq += 1
        change = _Change(Target(limit, {} if deleted else named, deleted), self._seq)
        self._changes.setdefault(database, []).append(change)
        return change

    def end(self, change: _Change, accepted: bool) -> None:
        self._seq += 1
        change.ended, change.accepted = self._seq, accepted

    def last_accepted(self, database: str) -> _Change | None:
        done = [c for c in self._changes.get(database, []) if c.accepted]
        return max(done, key=lambda c: c.ended or 0, default=None)

    def _maximal(self, database: str) -> list[_Change]:
        """Accepted changes that may be the last in force: none accepted started after
        one of them ended (overlapping changes may take effect in either order)."""
        done = [c for c in self._changes.get(database, []) if c.accepted]
        return [c for c in done if not any(d.started > (c.ended or 0) for d in done)]

    def _open(self, database: str) -> list[_Change]:
        """Changes in flight, and refused ones that overlapped the last accepted (a refused
        change may leave what it lowered lowered)."""
        since = min((c.started for c in self._maximal(database)), default=0)
        return [
            c
            for c in self._changes.get(database, [])
            if c.ended is None or (not c.accepted and c.ended > since)
        ]

    def in_force(self, database: str) -> list[Target]:
        """The targets any of which may be the limit now."""
        return [c.target for c in self._maximal(database) + self._open(database)]

    def quiet_since(self, database: str) -> int | None:
        """When the last change ended, if none is in flight."""
        changes = self._changes.get(database, [])
        if any(c.ended is None for c in changes):
            return None
        return max((c.ended or 0 for c in changes), default=0)

    def settled(self, database: str) -> list[Target] | None:
        """What the quota may be once quiet, one of these; None if a refused change may
        have left it lowered."""
        return None if self._open(database) else [c.target for c in self._maximal(database)]

    @property
    def databases(self) -> list[str]:
        return list(self._changes)


def measure(database: str, items: dict[str, QuotaState], now_ms: int) -> dict[str, int]:
    """Live leases of one database: `total`, `pool`, `share:<g>` (a group's reserved
    share) and `holds:<g>` (a group's own: its reserved and its borrowed, by tag)."""
    root = items.get(database)
    groups = root.config.groups if root is not None and root.config is not None else None
    tags = {r.tag: r.group for r in groups.rules} if groups is not None else {}
    counts = {"total": 0, "pool": 0}

    def add(name: str, n: int) -> None:
        counts[name] = counts.get(name, 0) + n

    for key, state in items.items():
        base, live = key.split("#")[0], state.live(now_ms)
        if base == database:
            add("pool", len(live))
            for lease in live:
                if lease.tag in tags:
                    add(f"holds:{tags[lease.tag]}", 1)
        elif base.startswith(f"{database}~") and not base.endswith("~max"):  # not tickets
            group = base[len(database) + 1 :]
            add(f"share:{group}", len(live))
            add(f"holds:{group}", len(live))
        else:
            continue
        add("total", len(live))
    return counts


def bound(name: str, targets: list[Target]) -> float:
    """The most `name` (a count of `measure`) may rise to under any of the targets."""
    kind, _, group = name.partition(":")
    if kind == "total":
        return max(t.limit for t in targets)
    if kind == "pool":
        return max(t.pool for t in targets)
    if kind == "share":
        return max(t.reserved(group) for t in targets)
    return max(t.most(group) for t in targets)


class Lab:
    """One run's world, its operators' changes, and the checks over them."""

    def __init__(
        self,
        point: Callable[[str], None],
        shard_capacity: int,
        items: Callable[[Clock], ItemStore] | None = None,
    ) -> None:
        self.world: World = ItemsWorld(point, shard_capacity, items)
        self.point = point  # a scheduling point of an actor's own (not a request)
        self.changes = Changes()
        self.setup = self.world.new_store()
        self._before: dict[str, dict[str, int]] = {}
        # By database: since when no change is in flight, and the most each count rose to
        # since; checked at the end against the change that stood.
        self._peaks: dict[str, tuple[int, dict[str, int]]] = {}
        # (v): by item key, the highest fence it ever had, and the grants it held when last
        # checked (an entry not among them is a new grant).
        self._fences: dict[str, int] = {}
        self._grants: dict[str, set[tuple[str, int]]] = {}

    def configure(
        self, limit: int, groups: Sequence[Reservation] | None = None, database: str = DB
    ) -> None:
        """Set-up's set_quota, unscheduled, accepted."""
        change = self.changes.start(database, limit, groups)
        self.setup.set_quota(database, Quota(limit, TTL_MS), groups)
        self.changes.end(change, accepted=True)

    def hold(self, count: int, holder: str, group: str | None = None) -> list[str]:
        """Set-up's grants: their tokens."""
        tokens = []
        for _ in range(count):
            result = self.setup.acquire(DB, holder, TTL_MS, group=group)
            assert isinstance(result, Granted), result
            tokens.append(result.token)
        return tokens

    def check(self) -> list[str]:
        items = self.world.snapshot()
        failures = self._fences_reused(items)
        for database in self.changes.databases:
            now = measure(database, items, self.world.clock.now_ms())
            if database not in self._before:
                # The first check sees the set-up's leases: those may be held past a
                # lowered limit (a scenario's point), and only drain from here.
                self._before[database] = now
                continue
            before = self._before[database]
            targets = self.changes.in_force(database)
            quiet = self.changes.quiet_since(database)
            if quiet is not None and self._peaks.get(database, (None,))[0] != quiet:
                self._peaks[database] = (quiet, {})
            for name, count in sorted(now.items()):
                if count <= before.get(name, 0):
                    continue
                most = bound(name, targets)
                if count > most:
                    failures.append(f"over-grant: {database} {name} {count} live, in force {most}")
                if quiet is not None:
                    peaks = self._peaks[database][1]
                    peaks[name] = max(peaks.get(name, 0), count)
            self._before[database] = now
        return failures

    def _fences_reused(self, items: dict[str, QuotaState]) -> list[str]:
        """(v): a new grant whose fence its item (by key, across lives) had given already."""
        failures = []
        for key, state in items.items():
            before, highest = self._grants.get(key, set()), self._fences.get(key, 0)
            grants = {(lease.id, lease.fence) for lease in state.leases}
            for _, fence in sorted(grants - before):
                if 0 < fence <= highest:
                    failures.append(f"fence reused: {key} granted fence {fence} again")
            self._grants[key] = grants
            self._fences[key] = max(highest, state.fence, *(fence for _, fence in grants))
        return failures

    def finish(self) -> list[str]:
        failures = []
        store = self.world.new_store()  # unscheduled: the run is over
        items = self.world.snapshot()
        for database in self.changes.databases:
            failures += self._settled(database, store, items)
            failures += _latent(database, items)
        return failures

    def _settled(self, database: str, store: LeaseStore, items: dict[str, QuotaState]) -> list[str]:
        """(iii): the quiet quota is one an accepted change set, and since the last change
        ended nothing rose past that one's limits."""
        targets = self.changes.settled(database)
        if targets is None:
            return []
        root = items.get(database)
        if root is not None and root.config is not None and root.config.deleted:
            if any(target.deleted for target in targets):
                return []
            return [f"change lost: {database} deleted, accepted {targets}"]
        targets = [target for target in targets if not target.deleted]
        if not targets:
            return [f"change lost: {database} not deleted, as accepted"]
        status = store.status(database)
        found = [_differences(database, status, items, target) for target in targets]
        if all(found):
            return min(found, key=len)
        stood = [target for target, wrong in zip(targets, found, strict=True) if not wrong]
        _, peaks = self._peaks.get(database, (0, {}))
        return [
            f"over-grant: {database} {name} rose to {count} after the changes,"
            f" in force {bound(name, stood)}"
            for name, count in sorted(peaks.items())
            if count > bound(name, stood)
        ]


def _differences(
    database: str, status: QuotaStatus, items: dict[str, QuotaState], target: Target
) -> list[str]:
    """How the quiet quota differs from what an accepted change set."""
    failures = []
    if status.limit != target.limit:
        failures.append(f"change lost: {database} limit {status.limit}, accepted {target.limit}")
    shown = {g.group: g for g in status.groups.groups} if status.groups else {}
    for group, wanted in target.groups.items():
        seen = shown.get(group)
        if (
            seen is None
            or seen.retired
            or (seen.reserved, seen.borrow, seen.max)
            != (
                wanted.reserved,
                wanted.borrow,
                wanted.max,
            )
        ):
            failures.append(f"change lost: {database} group {group} is {seen}, accepted {wanted}")
    enforced = sum(item.quota.limit for key, item in items.items() if key.split("#")[0] == database)
    root = items[database].config
    if root is not None and not root.pending and enforced < target.pool:
        # Nothing held past a share, and yet less room than the change gave: it was lost
        # (or left the quota stuck).
        failures.append(f"change lost: {database} pool's limit {enforced} < {target.pool}")
    if enforced > target.pool:
        failures.append(f"change lost: {database} pool's limit {enforced} > {target.pool}")
    return failures


def _latent(database: str, items: dict[str, QuotaState]) -> list[str]:
    """Items whose limits sum past their part's share of the quota (domain.changes): a store
    with an older configuration cached would grant there."""
    root = items.get(database)
    if root is None or root.config is None:
        return []
    failures = []
    for part in all_parts(database, root.config):
        limits = sum(items[key].quota.limit for key in part.items if key in items)
        if limits > part.limit:
            failures.append(f"latent over-grant: {part.key} items allow {limits} > {part.limit}")
    return failures


@dataclass
class _Trial:
    actors: Sequence[Actor]
    lab: Lab

    def check(self) -> list[str]:
        return self.lab.check()

    def finish(self) -> list[str]:
        return self.lab.finish()


# Actors: each on its own store, as its own Lambda environment.


def acquirer(lab: Lab, tries: int, holder: str = "app", group: str | None = None) -> Actor:
    store = lab.world.new_store()
    return holder, lambda: [store.acquire(DB, holder, TTL_MS, group=group) for _ in range(tries)]


def cycler(lab: Lab, rounds: int, holder: str = "cyc", group: str | None = None) -> Actor:
    """Acquires, renews, releases, `rounds` times."""
    store = lab.world.new_store()

    def body() -> list[object]:
        outcomes: list[object] = []
        for _ in range(rounds):
            result = store.acquire(DB, holder, TTL_MS, group=group)
            if isinstance(result, Granted):
                outcomes += [store.renew(DB, result.token), store.release(DB, result.token)]
        return outcomes

    return holder, body


def releaser(lab: Lab, tokens: Sequence[str], then: Actor | None = None) -> Actor:
    store = lab.world.new_store()

    def body() -> object:
        released = [store.release(DB, token) for token in tokens]
        return released, then[1]() if then else None

    return f"release+{then[0]}" if then else "release", body


def renewer(lab: Lab, tokens: Sequence[str]) -> Actor:
    store = lab.world.new_store()
    return "renew", lambda: [store.renew(DB, token, TTL_MS) for token in tokens]


def force_releaser(lab: Lab, holder: str) -> Actor:
    store = lab.world.new_store()
    return "force", lambda: store.force_release(DB, store.status(DB).named(holder=holder))


def operator(
    lab: Lab,
    limit: int,
    groups: Sequence[Reservation] | None = None,
    name: str = "op",
    *,
    then: int | None = None,
) -> Actor:
    """One operator's set_quota; `then`, a second limit it sets once the first is done."""
    store = lab.world.new_store()

    def change(limit: int) -> None:
        started = lab.changes.start(DB, limit, groups)
        try:
            store.set_quota(DB, Quota(limit, TTL_MS), groups)
        except ConnleaseError:
            lab.changes.end(started, accepted=False)  # refused: a typed outcome
            raise
        lab.changes.end(started, accepted=True)

    def body() -> object:
        change(limit)
        if then is not None:
            change(then)
        return limit

    return name, body


def deleter(lab: Lab) -> Actor:
    """An operator's delete_quota (a change to nothing)."""
    store = lab.world.new_store()

    def body() -> object:
        started = lab.changes.start(DB, 0, [], deleted=True)
        try:
            deleted = store.delete_quota(DB)
        except ConnleaseError:
            lab.changes.end(started, accepted=False)
            raise
        lab.changes.end(started, accepted=deleted)
        return deleted

    return "del", body


def ticker(lab: Lab) -> Actor:
    """The shared clock moved on past the settle pacing (SETTLE_EVERY_MS), at a point the
    scheduler chooses: without it time stands still, and every settle after the set-up's
    change is refused as too soon."""

    def body() -> int:
        lab.point("tick")
        lab.world.clock.sleep_ms(SETTLE_EVERY_MS + 1)
        return 1

    return "tick", body


def in_turn(first: Actor, second: Actor) -> Actor:
    """One actor doing `first`, then `second`."""
    return f"{first[0]}+{second[0]}", lambda: (first[1](), second[1]())


# Scenarios: small configurations, one per race of issue 22 (and a mix for random runs).


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    build: Callable[[Lab], list[Actor]]  # set-up (unscheduled), then the actors
    shard_capacity: int = 2

    def setup(self, point: Callable[[str], None]) -> scheduler.Trial:
        lab = Lab(point, self.shard_capacity)
        return _Trial(self.build(lab), lab)

    def on(self, items: Callable[[Clock], ItemStore]) -> scheduler.Setup:
        """The scenario on another store of items (a fresh one each run)."""

        def setup(point: Callable[[str], None]) -> scheduler.Trial:
            lab = Lab(point, self.shard_capacity, items)
            return _Trial(self.build(lab), lab)

        return setup


def _first_split_vs_reclaim(lab: Lab) -> list[Actor]:
    lab.configure(2)
    for _ in range(2):  # holders that crashed: expired past the skew margin
        lab.setup.acquire(DB, "gone", MIN_TTL_MS)
    lab.world.clock.sleep_ms(MIN_TTL_MS + SKEW_MARGIN_MS + 1)
    return [operator(lab, 4), acquirer(lab, 3, "a"), acquirer(lab, 3, "b")]


def _settle_vs_operator(lab: Lab) -> list[Actor]:
    lab.configure(5, [Reservation("api", 2)])
    api = lab.hold(2, "api", "api")
    lab.hold(3, "app")
    lab.configure(5, [Reservation("api", 1)])  # api holds 2 past its 1: pending
    lab.setup.release(DB, api[0])
    return [operator(lab, 2, [Reservation("api", 1)]), acquirer(lab, 2), ticker(lab)]


def _rebalance_vs_lowering(lab: Lab) -> list[Actor]:
    lab.configure(2)
    early = lab.hold(2, "early")
    lab.configure(6)  # split, its shares held down by the root's 2: rebalance later
    for token in early:
        lab.setup.release(DB, token)
    lab.hold(4, "app")
    return [operator(lab, 4), acquirer(lab, 2)]


def _two_operators(lab: Lab) -> list[Actor]:
    lab.configure(4)  # split over 2 shards
    return [operator(lab, 8, name="op8"), operator(lab, 2, name="op2"), acquirer(lab, 4)]


def _changes_overlap(lab: Lab) -> list[Actor]:
    lab.configure(4)  # split over 2 shards
    return [operator(lab, 8, name="op8"), operator(lab, 2, name="op2")]


def _reclaim_across_changes(lab: Lab) -> list[Actor]:
    """A reclaim planned on a full item of expired leases lands after the limit was raised,
    taken up and lowered again: it must not grant past the lowered limit."""
    lab.configure(3)
    for _ in range(3):  # holders that crashed: expired past the skew margin
        lab.setup.acquire(DB, "gone", MIN_TTL_MS)
    lab.world.clock.sleep_ms(MIN_TTL_MS + SKEW_MARGIN_MS + 1)
    return [acquirer(lab, 1, "late"), operator(lab, 6, then=3), acquirer(lab, 3, "b")]


def _split_share_lowered(lab: Lab) -> list[Actor]:
    """A reservation split over two items lowered below what it holds: the group may not
    take its share again in one item while the other still holds past it."""
    lab.configure(8, [Reservation("api", 4, borrow=False)])
    api = lab.hold(4, "api", "api")
    lab.configure(8, [Reservation("api", 2, borrow=False)])
    return [
        releaser(lab, api[:2], acquirer(lab, 2, "api", "api")),
        acquirer(lab, 2, "x", "api"),
        ticker(lab),
    ]


def _stale_cap(lab: Lab) -> list[Actor]:
    """A group's acquirer that read the quota before a cap was set (its configuration is
    cached for seconds) may not borrow past the cap once it is accepted."""
    lab.configure(4, [Reservation("batch", 0)])
    store = lab.world.new_store()
    store.status(DB)  # read now, unscheduled: cached when the operator caps the group
    capped = [Reservation("batch", 0, max=1)]
    borrower = ("b", lambda: [store.acquire(DB, "b", TTL_MS, group="batch") for _ in range(3)])
    return [operator(lab, 4, capped), borrower]


def _cap_created_late(lab: Lab) -> list[Actor]:
    lab.configure(4)
    return [operator(lab, 4, [Reservation("batch", 0, max=2)]), acquirer(lab, 2, "b", "batch")]


def _force_release_sweep(lab: Lab) -> list[Actor]:
    lab.configure(4, [Reservation("batch", 0, max=2)])
    lab.hold(1, "h", "batch")
    return [
        force_releaser(lab, "h"),
        acquirer(lab, 1, "h", "batch"),
        acquirer(lab, 2, "x", "batch"),
    ]


def _groups_lower_pool(lab: Lab) -> list[Actor]:
    lab.configure(5, [Reservation("batch", 1, borrow=False), Reservation("api", 1, borrow=False)])
    lab.hold(1, "batch", "batch")
    api = lab.hold(1, "api", "api")
    lab.hold(3, "app")
    change = [Reservation("api", 1, borrow=False), Reservation("batch", 0, borrow=False)]
    return [
        operator(lab, 4, change),
        releaser(lab, api, acquirer(lab, 1, "api", "api")),
        ticker(lab),
    ]


def _delete_vs_recreate(lab: Lab) -> list[Actor]:
    """A deletion racing a re-creation of the quota: the new life's items number their
    grants above every fence the last life gave (a commit's floor never lost)."""
    lab.configure(4)  # split over 2 shards
    for token in lab.hold(2, "old"):
        lab.setup.release(DB, token)
    return [deleter(lab), in_turn(operator(lab, 4, name="mk"), acquirer(lab, 2, "new"))]


def _forget_vs_readd(lab: Lab) -> list[Actor]:
    """A group forgotten by one operator and named again by another: its items, made
    again, number their grants above every fence they gave."""
    api = [Reservation("api", 2)]
    lab.configure(4, api)
    for token in lab.hold(2, "old", "api"):
        lab.setup.release(DB, token)
    return [
        operator(lab, 4, [], "forget"),
        in_turn(operator(lab, 4, api, "readd"), acquirer(lab, 2, "api", "api")),
    ]


def _mix(lab: Lab) -> list[Actor]:
    lab.configure(4, [Reservation("api", 1), Reservation("batch", 0, max=2)])
    held = lab.hold(2, "app")
    lab.hold(1, "h", "batch")
    return [
        operator(lab, 6, [Reservation("api", 2), Reservation("batch", 1, max=2)], "op6"),
        operator(lab, 3, [Reservation("api", 1)], "op3"),
        acquirer(lab, 3, "api", "api"),
        acquirer(lab, 3, "b", "batch"),
        cycler(lab, 2),
        renewer(lab, held),
        force_releaser(lab, "h"),
    ]


SCENARIOS = {
    s.name: s
    for s in [
        Scenario(
            "race1-first-split-vs-reclaim",
            "a reclaim in the root while it splits",
            _first_split_vs_reclaim,
        ),
        Scenario(
            "race2-settle-vs-operator",
            "a settle's raises after an accepted change",
            _settle_vs_operator,
            10,
        ),
        Scenario(
            "race3-rebalance-vs-lowering",
            "a rebalance's layout over a lowering",
            _rebalance_vs_lowering,
        ),
        Scenario("race4-two-operators", "two operators re-share one split quota", _two_operators),
        Scenario(
            "race5-cap-created-late",
            "a capped group's acquirer before its cap item",
            _cap_created_late,
        ),
        Scenario(
            "race6-force-release-sweep",
            "a same-holder grant in the ticket sweep",
            _force_release_sweep,
        ),
        Scenario(
            "race7-groups-lower-pool",
            "a change of groups lowers the pool below its holdings",
            _groups_lower_pool,
            10,
        ),
        Scenario("changes-overlap", "two operators' changes, nothing else", _changes_overlap),
        Scenario(
            "reclaim-across-changes",
            "a reclaim planned before a raise and a lowering",
            _reclaim_across_changes,
            10,
        ),
        Scenario(
            "split-share-lowered",
            "a reservation over two items lowered below what it holds",
            _split_share_lowered,
        ),
        Scenario("stale-cap", "a borrower's cached configuration meets a new cap", _stale_cap),
        Scenario(
            "delete-vs-recreate",
            "a deletion and a re-creation: no fence given twice",
            _delete_vs_recreate,
        ),
        Scenario(
            "forget-vs-readd",
            "a group forgotten and named again: no fence given twice",
            _forget_vs_readd,
            10,
        ),
        Scenario("mix", "operators, groups, caps, renewals, force-release together", _mix),
    ]
}
EXPECTED = (ConnleaseError,)


def dynamodb_tables(client: DynamoDBClient) -> Callable[[Clock], ItemStore]:
    """A fresh table for each run, on the embedded DynamoDB (moto: another implementation
    of every condition the DynamoDB store writes, against the in-memory store's rules)."""

    def items(clock: Clock) -> ItemStore:
        table = f"interleave-{uuid.uuid4().hex[:12]}"
        create_table(client, table)
        return DynamoDBItems(client, table, clock)

    return items


def explore(
    scenario: Scenario, args: argparse.Namespace, items: Callable[[Clock], ItemStore] | None
) -> tuple[str, Report]:
    setup = scenario.setup if items is None else scenario.on(items)
    if args.replay:
        run = scheduler.replay(setup, args.replay, EXPECTED, args.timeout)
        return "replay", Report(1, [run] if run.failures else [])
    if args.random:
        report = scheduler.randomized(
            setup,
            EXPECTED,
            runs=args.random,
            seed=args.seed,
            depth=args.depth,
            timeout_s=args.timeout,
        )
        return f"PCT depth {args.depth}, seeds {args.seed}..", report
    report = scheduler.exhaustive(
        setup,
        EXPECTED,
        preemptions=args.preemptions,
        max_schedules=args.max_schedules,
        timeout_s=args.timeout,
        kinds=args.kinds,
    )
    return f"exhaustive, <= {args.preemptions} preemptions", report


def describe(name: str, strategy: str, report: Report, seconds: float, trace: bool) -> str:
    head = f"{name}: {strategy}: {report.schedules} schedules, {seconds:.2f} s"
    if not report.failing:
        return f"{head}: no violation" + (
            " (all schedules within the bound)" if report.complete else ""
        )
    lines = [f"{head}: FOUND"]
    for run in report.failing:
        lines += [f"  {failure}" for failure in run.failures]
        lines.append(f"    replay: --scenario {name} --replay {run.schedule}")
        if run.seed is not None:
            lines.append(f"    seed: --scenario {name} --random 1 --seed {run.seed}")
        lines += [f"      {step}" for step in run.trace] if trace else []
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reliability.interleavings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--exhaustive", action="store_true", help="depth-first (the default)")
    mode.add_argument("--random", type=int, metavar="N", help="N seeded PCT schedules")
    mode.add_argument("--replay", metavar="SCHEDULE", help="one schedule (needs --scenario)")
    parser.add_argument("--preemptions", type=int, default=2)
    parser.add_argument("--max-schedules", type=int, default=20_000)
    parser.add_argument("--kinds", type=int, default=1, help="go on until this many kinds found")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depth", type=int, default=3, help="PCT's bug depth (change points + 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a step may take")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--trace", action="store_true", help="print a failing run's steps")
    parser.add_argument(
        "--store",
        choices=["memory", "dynamodb"],
        default="memory",
        help="the items' store: in memory (domain.item's rules applied as written) or the"
        " DynamoDB store on an embedded DynamoDB (its conditions, evaluated by moto)",
    )
    args = parser.parse_args(argv)
    if args.replay and not args.scenario:
        parser.error("--replay needs --scenario")
    with ExitStack() as stack:
        items = None
        if args.store == "dynamodb":
            embedded = stack.enter_context(EmbeddedDynamoDB())
            items = dynamodb_tables(embedded.client())
        found = 0
        for name in args.scenario or list(SCENARIOS):
            started = time.perf_counter()
            strategy, report = explore(SCENARIOS[name], args, items)
            seconds = time.perf_counter() - started
            print(describe(name, f"{args.store}, {strategy}", report, seconds, args.trace))
            found += report.failed is not None
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())


def campaign(dynamodb: DynamoDBClient, *, short: bool = False) -> Campaign:
    """`make reliability`'s long form: every scenario explored in full within two
    preemptions (capped), by seeded random schedules, and on the DynamoDB store."""
    started = time.monotonic()
    bound, cap, runs, on_dynamodb = (1, 500, 50, 2) if short else (2, 5_000, 1_000, 6)
    title = "Interleavings of changes and acquirers (reliability/interleavings.py)"
    what = (
        f"Each scenario's schedules within {bound} preemptions (at most {cap:,} a scenario),"
        f" {runs:,} seeded PCT schedules (depth 3) in memory, and {on_dynamodb} on the"
        " DynamoDB store (the embedded DynamoDB evaluating its conditions); every request a"
        " scheduling point, the checks of docs/design.md, 'Changes', after every step."
    )
    items = dynamodb_tables(dynamodb)
    # Each column: how a scenario's schedules are explored, and on which store of items.
    explorations = [
        ("exhaustive", partial(scheduler.exhaustive, preemptions=bound, max_schedules=cap), False),
        ("random", partial(scheduler.randomized, runs=runs, seed=2026, depth=3), False),
        ("DynamoDB", partial(scheduler.randomized, runs=on_dynamodb, seed=2026, depth=3), True),
    ]
    rows, found = [], 0
    for name, scenario in SCENARIOS.items():
        reports = {
            column: explored(scenario.on(items) if on_table else scenario.setup, EXPECTED)
            for column, explored, on_table in explorations
        }
        failing = [run for report in reports.values() for run in report.failing]
        found += len(failing)
        counts = {
            column: f"{report.schedules:,}" + (" (all)" if report.complete else "")
            for column, report in reports.items()
        }
        violations = "; ".join(f"{run.failures[0]} (replay {run.schedule})" for run in failing)
        rows.append({"scenario": name, **counts, "violations": violations or "none"})
    return Campaign(
        title,
        what,
        [Figure.exactly("schedules with a violation", found, 0)],
        rows,
        time.monotonic() - started,
    )
