"""A lease store in memory that behaves like DynamoDB for benchmarks and cost tests: each
request takes a round trip (`latency_s`, half before and half after, outside the store's
lock: network time overlaps between callers, applying the write does not), and a capacity
model bills it as DynamoDB would bill the DynamoDB store's request (sizing the item that
store would hold) and throttles an item past one partition's throughput, as a
StoreUnavailable that may pass. The rules are the domain's; only the costs are simulated.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from adapters.dynamodb_item import entries_per_shard, quota_item
from adapters.dynamodb_size import item_size
from adapters.memory import InMemoryItems, InMemoryLeaseStore
from domain.errors import StoreUnavailable
from domain.item import ItemWrite, QuotaState
from domain.model import SKEW_MARGIN_MS
from domain.ports import Clock, ItemStore, Written
from domain.tokens import new_secret
from local.capacity_model import CapacityModel, Throttled


class CapacityObserver:
    """Bills each request of an InMemoryItems by the sizes of the items it touched."""

    def __init__(self, model: CapacityModel) -> None:
        self.model = model

    @contextmanager
    def request(
        self, operation: str, before: dict[str, QuotaState | None], *, read: bool
    ) -> Iterator[Callable[[dict[str, QuotaState | None]], None]]:
        kind = "Read" if read else "Write"
        try:
            for key in before:
                self.model.admit("memory", key, kind)
        except Throttled as throttled:
            raise StoreUnavailable(
                operation, f"ProvisionedThroughputExceededException: {throttled}", True
            ) from throttled
        after: dict[str, QuotaState | None] = {}
        try:
            yield after.update
        finally:
            for key, item in before.items():
                size = _size(item)
                if read:
                    self.model.charge_read("memory", key, operation, size, consistent=True)
                else:
                    self.model.charge_write(
                        "memory", key, operation, size, _size(after.get(key, item))
                    )


def _size(item: QuotaState | None) -> int:
    return 0 if item is None else item_size(quota_item(item))


class DelayedItems(ItemStore):
    """Items behind a round trip of `latency_s`."""

    def __init__(self, inner: InMemoryItems, latency_s: float) -> None:
        self.inner = inner
        self._half_s = latency_s / 2

    @contextmanager
    def _trip(self) -> Iterator[None]:
        if self._half_s:
            time.sleep(self._half_s)
        yield
        if self._half_s:
            time.sleep(self._half_s)

    def read(self, key: str) -> QuotaState | None:
        with self._trip():
            return self.inner.read(key)

    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        with self._trip():
            return self.inner.read_many(keys)

    def write(self, key: str, write: ItemWrite) -> Written:
        with self._trip():
            return self.inner.write(key, write)

    def delete(self, key: str, epoch: int | None = None) -> bool:
        with self._trip():
            return self.inner.delete(key, epoch)

    def all_keys(self) -> list[str]:
        with self._trip():
            return self.inner.all_keys()


class SimulatedLeaseStore(InMemoryLeaseStore):
    """An in-memory lease store with DynamoDB's round trips, bills and throttles."""

    def __init__(
        self,
        clock: Clock,
        secrets: Callable[[], str] = new_secret,
        *,
        latency_s: float = 0.0,
        capacity: CapacityModel | None = None,
        rng: random.Random | None = None,
        shard_capacity: Callable[[str], int] = entries_per_shard,
        reclaim_grace_ms: int = SKEW_MARGIN_MS,
    ) -> None:
        super().__init__(
            clock,
            secrets,
            items=InMemoryItems(CapacityObserver(capacity) if capacity is not None else None),
            rng=rng,
            shard_capacity=shard_capacity,
            reclaim_grace_ms=reclaim_grace_ms,
            reached_through=(lambda items: DelayedItems(items, latency_s)) if latency_s else None,
        )

    @property
    def capacity(self) -> CapacityModel | None:
        observer = self.memory.observer
        return observer.model if isinstance(observer, CapacityObserver) else None

    @capacity.setter
    def capacity(self, model: CapacityModel | None) -> None:
        """Bill and throttle from now on (None: no more)."""
        self.memory.observer = CapacityObserver(model) if model is not None else None
