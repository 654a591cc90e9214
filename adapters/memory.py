"""Quota items in process memory: each write applied by `domain.item`'s own rules, under a
lock, one at a time (as DynamoDB applies the writes to one item), so that the in-memory
store and the DynamoDB store differ only in how they keep items, never in the rules.

An observer (local.simulated) may bill and throttle each request as DynamoDB would; none
is needed for the rules.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from adapters.dynamodb_item import entries_per_shard
from domain.item import (
    Accept,
    Clear,
    Commit,
    Extend,
    Grant,
    ItemWrite,
    NoteWanted,
    QuotaState,
    Remove,
    Seal,
    SetLimit,
    apply_write,
    may_forget,
)
from domain.lease_store import LeaseStore
from domain.model import SKEW_MARGIN_MS
from domain.ports import Clock, ItemStore, Written
from domain.tokens import new_secret


class RequestObserver(Protocol):
    """Sees each request inside the store's lock: `items` before it, and after it (for a
    write); it may raise StoreUnavailable before anything is applied (a throttle)."""

    def request(
        self, operation: str, before: dict[str, QuotaState | None], *, read: bool
    ) -> AbstractContextManager[Callable[[dict[str, QuotaState | None]], None]]: ...


def operation_of(write: ItemWrite) -> str:
    """A write's name in request counts: what the DynamoDB store's request does."""
    if isinstance(write, Grant):
        return "reclaim" if write.victims else "add"
    return {
        Clear: "reclaim",
        Remove: "remove",
        Extend: "extend",
        NoteWanted: "note_wanted",
        Seal: "seal",
        SetLimit: "write_quota",
        Accept: "accept",
        Commit: "commit",
    }[type(write)]


class InMemoryItems(ItemStore):
    def __init__(self, observer: RequestObserver | None = None) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, QuotaState] = {}
        self.observer = observer
        self.requests: Counter[str] = Counter()

    @contextmanager
    def _request(
        self, operation: str, keys: Sequence[str], *, read: bool = False
    ) -> Iterator[Callable[[dict[str, QuotaState | None]], None]]:
        with self._lock:
            self.requests[operation] += 1
            if self.observer is None:
                yield lambda _after: None
                return
            before = {key: self._items.get(key) for key in keys}
            with self.observer.request(operation, before, read=read) as after:
                yield after

    def read(self, key: str) -> QuotaState | None:
        with self._request("read", [key], read=True):
            return self._items.get(key)

    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        # One round trip, as a BatchGetItem is.
        with self._request("read_items", keys, read=True):
            return {key: self._items[key] for key in keys if key in self._items}

    def write(self, key: str, write: ItemWrite) -> Written:
        with self._request(operation_of(write), [key]) as after:
            item = self._items.get(key)
            changed = apply_write(key, item, write)
            if changed is not None:
                self._items[key] = changed
            after({key: self._items.get(key)})
            return Written(changed is not None, changed if changed is not None else item)

    def delete(self, key: str, epoch: int | None = None) -> bool:
        with self._request("delete_quota", [key]) as after:
            item = self._items.get(key)
            if item is None or (epoch is not None and not may_forget(item, epoch)):
                return False
            del self._items[key]
            after({key: None})
            return True

    def all_keys(self) -> list[str]:
        with self._request("scan", [], read=True):
            return list(self._items)

    def snapshot(self) -> dict[str, QuotaState]:
        """Every item as it is, without a request: for checks and dumps in tests."""
        with self._lock:
            return dict(self._items)


class InMemoryLeaseStore(LeaseStore):
    """A LeaseStore over items in memory: the domain's own rules, nothing else."""

    def __init__(
        self,
        clock: Clock,
        secrets: Callable[[], str] = new_secret,
        *,
        items: InMemoryItems | None = None,
        rng: random.Random | None = None,
        shard_capacity: Callable[[str], int] | None = None,
        reclaim_grace_ms: int = SKEW_MARGIN_MS,
        reached_through: Callable[[InMemoryItems], ItemStore] | None = None,
    ) -> None:
        """`shard_capacity`: leases per shard item; by default what the DynamoDB store fits
        in 1 KB (tests pass fewer, to split small quotas). `reached_through`: what stands
        between the store and its items (local.simulated's round trips)."""
        self.memory = items or InMemoryItems()
        super().__init__(
            reached_through(self.memory) if reached_through is not None else self.memory,
            clock,
            secrets,
            shard_capacity=shard_capacity or entries_per_shard,
            rng=rng,
            reclaim_grace_ms=reclaim_grace_ms,
        )

    @property
    def requests(self) -> Counter[str]:
        return self.memory.requests

    def request_count(self) -> int:
        return sum(self.memory.requests.values())
