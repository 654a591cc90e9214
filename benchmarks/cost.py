"""What a lease costs: store requests, item size and write units, and client CPU."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from adapters.clock import SystemClock
from adapters.memory import InMemoryLeaseStore
from domain import Granted, Quota
from domain.model import new_lease_id

HOLDER = "LambdaRDS_Test/8f14e45f"  # what the client library writes: function/request


def number_size(value: int) -> int:
    """DynamoDB's size of a number: about one byte per two significant digits, plus one."""
    digits = len(str(abs(value)).rstrip("0")) or 1
    return math.ceil(digits / 2) + 1


def item_size(limit: int, leases: int, with_holders: bool) -> int:
    """Bytes of a quota item holding `leases` entries (DynamoDB's item-size rules: names
    and string values in UTF-8 bytes, a map adds 3 bytes and 1 byte per element)."""
    expiry = 1_800_000_000_000
    lease_id = len(new_lease_id())
    size = len("pk") + len("orders-mysql") + len("sk") + len("quota")
    size += len("limit") + number_size(limit) + len("ttl_ms") + number_size(60_000)
    size += len("leases") + 3 + leases * (lease_id + number_size(expiry) + 1)
    size += len("holders") + 3
    if with_holders:
        size += leases * (lease_id + len(HOLDER) + 1)
    return size


def write_units(size: int) -> int:
    """An UpdateItem consumes 1 WCU per started KB of the larger of the before and after item."""
    return math.ceil(size / 1024)


@dataclass(frozen=True)
class ItemCost:
    limit: int
    bytes_bare: int
    bytes_with_holders: int

    @property
    def wcu_bare(self) -> int:
        return write_units(self.bytes_bare)

    @property
    def wcu_with_holders(self) -> int:
        return write_units(self.bytes_with_holders)


def item_costs(limits: tuple[int, ...] = (10, 100, 1000)) -> list[ItemCost]:
    # The costliest acquire and release see a full quota: `limit` entries after or before.
    return [
        ItemCost(limit, item_size(limit, limit, False), item_size(limit, limit, True))
        for limit in limits
    ]


def requests_per_uncontended_lease(cycles: int = 500) -> float:
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota("cost-db", Quota(limit=10, default_ttl_ms=60_000))
    before = sum(store.requests.values())
    for _ in range(cycles):
        grant = store.acquire("cost-db", HOLDER)
        assert isinstance(grant, Granted)
        store.release("cost-db", grant.lease.id)
    return (sum(store.requests.values()) - before) / cycles


def client_cpu_us(cycles: int = 20_000) -> float:
    """CPU microseconds for one acquire + release against a zero-latency store."""
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota("cpu-db", Quota(limit=10, default_ttl_ms=60_000))
    started = time.process_time()
    for _ in range(cycles):
        grant = store.acquire("cpu-db", HOLDER)
        assert isinstance(grant, Granted)
        store.release("cpu-db", grant.lease.id)
    return (time.process_time() - started) / cycles * 1e6
