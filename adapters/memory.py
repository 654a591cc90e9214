"""A lease store in process memory, with the DynamoDB store's semantics step for step.

Every hook is one atomic step under a lock, as every DynamoDB hook is one conditional
write, so the shared acquire loop takes the same paths on both. An optional per-request
latency stands in for a network round trip, which lets benchmarks weigh the algorithm
apart from any emulator's speed. An optional capacity model bills each step as DynamoDB
would bill the DynamoDB store's request (sizing the item that store would hold) and
throttles a quota past one partition's throughput, as a StoreUnavailable that may pass.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from adapters.dynamodb import entries_per_shard, quota_item
from adapters.dynamodb_limits import CapacityModel, Throttled, item_size
from domain.decisions import Reclaim
from domain.errors import StoreUnavailable, UnknownDatabase
from domain.groups import Groups
from domain.model import SKEW_MARGIN_MS, Lease, Quota, QuotaState, ShardLayout
from domain.ports import Clock, LeaseStore, NewLease, Write
from domain.tokens import new_secret


class InMemoryLeaseStore(LeaseStore):
    def __init__(
        self,
        clock: Clock,
        secrets: Callable[[], str] = new_secret,
        latency_s: float = 0.0,
        capacity: CapacityModel | None = None,
        *,
        rng: random.Random | None = None,
        shard_capacity: Callable[[str], int] = entries_per_shard,
        reclaim_grace_ms: int = SKEW_MARGIN_MS,
    ) -> None:
        super().__init__(
            clock,
            secrets,
            shard_capacity=shard_capacity,
            rng=rng,
            reclaim_grace_ms=reclaim_grace_ms,
        )
        self._latency_s = latency_s
        self.capacity = capacity
        self._lock = threading.Lock()
        # By item: a database's own, or one of its shards' (`database#i`).
        self._quotas: dict[str, Quota] = {}
        self._leases: dict[str, dict[str, Lease]] = {}
        self._wanted_at_ms: dict[str, int] = {}
        self._layouts: dict[str, ShardLayout] = {}
        self._claims: dict[str, int] = {}  # a split quota's root being re-shared, until
        self._fences: dict[str, int] = {}  # each item's last grant's fence
        self._groups: dict[str, Groups] = {}  # a root's groups
        self.requests: Counter[str] = Counter()

    def request_count(self) -> int:
        return sum(self.requests.values())

    @contextmanager
    def _request(self, operation: str, *items: str, read: bool = False) -> Iterator[None]:
        # Half the round trip on the way in, half on the way out, outside the lock:
        # network time overlaps between callers, applying the write does not.
        half = self._latency_s / 2
        if half:
            time.sleep(half)
        with self._lock:
            self.requests[operation] += 1
            if self.capacity is None:
                yield
            else:
                with self._metered(self.capacity, operation, items, read=read):
                    yield
        if half:
            time.sleep(half)

    @contextmanager
    def _metered(
        self, capacity: CapacityModel, operation: str, items: tuple[str, ...], *, read: bool
    ) -> Iterator[None]:
        """Each item billed on its own, as a batch read is billed item by item."""
        kind = "Read" if read else "Write"
        try:
            for item in items:
                capacity.admit("memory", item, kind)
        except Throttled as throttled:
            raise StoreUnavailable(
                operation, f"ProvisionedThroughputExceededException: {throttled}", True
            ) from throttled
        before = {item: self._item_size(item) for item in items}
        try:
            yield
        finally:
            for item in items:
                if read:
                    capacity.charge_read("memory", item, operation, before[item], consistent=True)
                else:
                    after = self._item_size(item)
                    capacity.charge_write("memory", item, operation, before[item], after)

    def _item_size(self, database: str) -> int:
        if database not in self._quotas:
            return 0
        return item_size(quota_item(self._state(database)))

    def _state(self, database: str) -> QuotaState:
        quota = self._quotas.get(database)
        if quota is None:
            raise UnknownDatabase(database)
        leases = tuple(self._leases[database].values())
        return QuotaState(
            database,
            quota,
            leases,
            self._wanted_at_ms.get(database, 0),
            self._layouts.get(database),
            self._fences.get(database, 0),
            groups=self._groups.get(database),
        )

    def _put(self, database: str, lease: NewLease, now_ms: int) -> None:
        ttl_ms = self._quotas[database].default_ttl_ms if lease.ttl_ms is None else lease.ttl_ms
        fence = self._fences[database] = self._fences.get(database, 0) + 1
        self._leases[database][lease.id] = Lease(
            lease.id,
            lease.holder,
            now_ms + ttl_ms,
            fence,
            tag=lease.tag,
            granted_at_ms=now_ms // 1000 * 1000,  # to the second, as DynamoDB keeps it
        )

    def _add(self, database: str, lease: NewLease, now_ms: int) -> Write:
        with self._request("add", database):
            state = self._state(database)
            leases = self._leases[database]
            if len(leases) >= state.quota.limit or lease.id in leases:
                return Write(False, state)
            self._put(database, lease, now_ms)
            return Write(True, self._state(database))

    def _reclaim(self, database: str, plan: Reclaim, lease: NewLease | None, now_ms: int) -> Write:
        with self._request("reclaim", database):
            state = self._state(database)
            leases = self._leases[database]
            if not plan.applies_to(state) or (lease is not None and lease.id in leases):
                return Write(False, state)
            for victim in plan.victims:
                del leases[victim.id]
            if lease is not None:
                self._put(database, lease, now_ms)
            return Write(True, self._state(database))

    def _remove(self, database: str, lease_id: str, fence: int | None) -> bool:
        with self._request("remove", database):
            self._state(database)
            lease = self._leases[database].get(lease_id)
            if lease is None or not _fenced_as(lease, fence):
                return False
            del self._leases[database][lease_id]
            return True

    def _note_wanted(self, database: str, now_ms: int) -> None:
        with self._request("note_wanted", database):
            # As the DynamoDB store's condition: only over a stale or far-ahead note.
            if self._state(database).wanted_note_stale(now_ms):
                self._wanted_at_ms[database] = now_ms

    def _extend(
        self, database: str, lease_id: str, fence: int | None, expires_at_ms: int, now_ms: int
    ) -> Write:
        with self._request("extend", database):
            state = self._state(database)
            lease = self._leases[database].get(lease_id)
            if (
                lease is None
                or not lease.is_live(now_ms)
                or not _fenced_as(lease, fence)
                or lease.expires_at_ms >= expires_at_ms
            ):
                return Write(False, state)
            self._leases[database][lease_id] = replace(lease, expires_at_ms=expires_at_ms)
            return Write(True, self._state(database))

    def _read(self, database: str) -> QuotaState:
        with self._request("read", database, read=True):
            return self._state(database)

    def _read_items(self, items: list[str]) -> dict[str, QuotaState]:
        # One round trip, as a BatchGetItem is.
        with self._request("read_items", *items, read=True):
            return {item: self._state(item) for item in items if item in self._quotas}

    def _write_layout(self, database: str, ttl_ms: int, layout: ShardLayout, seen: int) -> Write:
        with self._request("write_layout", database):
            if len(self._leases.get(database, {})) > seen:
                return Write(False, self._state(database))
            self._quotas[database] = Quota(0, ttl_ms)
            self._leases.setdefault(database, {})
            self._layouts[database] = layout
            self._claims.pop(database, None)
            return Write(True, self._state(database))

    def _claim_rebalance(self, database: str, now_ms: int, until_ms: int) -> bool:
        with self._request("rebalance", database):
            layout = self._layouts.get(database)
            if layout is None or not layout.rebalance:
                return False
            if self._claims.get(database, 0) > now_ms:
                return False
            self._claims[database] = until_ms
            return True

    def _write_quota(self, database: str, quota: Quota, *, at_most_held: bool = False) -> Write:
        with self._request("write_quota", database):
            held = len(self._leases.get(database, {}))
            if database in self._layouts or (at_most_held and held > quota.limit):
                return Write(False, self._state(database))
            self._quotas[database] = quota
            self._leases.setdefault(database, {})
            return Write(True, self._state(database))

    def _write_groups(self, database: str, groups: Groups, seen: int) -> bool:
        with self._request("write_groups", database):
            if database not in self._quotas:
                return False
            held = self._groups.get(database)
            if (held.version if held is not None else 0) != seen:
                return False
            self._groups[database] = groups
            return True

    def _delete_quota(self, database: str) -> bool:
        with self._request("delete_quota", database):
            self._groups.pop(database, None)
            self._leases.pop(database, None)
            self._wanted_at_ms.pop(database, None)
            self._layouts.pop(database, None)
            self._claims.pop(database, None)
            self._fences.pop(database, None)
            return self._quotas.pop(database, None) is not None

    def _quota_keys(self) -> list[str]:
        with self._request("scan", read=True):
            return list(self._quotas)


def _fenced_as(lease: Lease, fence: int | None) -> bool:
    """DynamoDB's `fences.#id = :fence`: an entry with no fence (0) matches none."""
    return fence is None or (lease.fence != 0 and lease.fence == fence)
