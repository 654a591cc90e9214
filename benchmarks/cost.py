"""What a lease costs: store requests, item size, write units and dollars (metered by the
capacity model, `local.capacity_model`), and client CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass

from adapters.clock import SystemClock
from adapters.dynamodb_item import quota_item
from adapters.dynamodb_size import item_size
from adapters.memory import InMemoryLeaseStore
from domain import Granted, Quota
from domain.model import MAX_LIMIT
from local.capacity_model import PARTITION_WCU_PER_S, CapacityModel
from local.simulated import SimulatedLeaseStore

# What the client library writes (`service.client.holder_of`) for a function whose name
# fills its 23 characters: the longest holder, as production leases carry.
HOLDER = "orders-service-prod-api/8f14e45f"

# DynamoDB on-demand list prices, us-east-1, Standard table class, in effect since the
# reduction of 2024-11-01 (the prices page as stored by the search tool on 2026-11-27).
PRICE_DATE = "2024-11-01"
DOLLARS_PER_MILLION_WRITE_UNITS = 0.625
DOLLARS_PER_MILLION_READ_UNITS = 0.125


@dataclass(frozen=True)
class LeaseCost:
    """What one lease (a take and a give-back) is billed, metered by the capacity model
    on the store's own writes, for a quota of `limit` leases."""

    limit: int
    full_item_bytes: int
    wcu_empty: float  # the quota otherwise empty
    wcu_full: float  # taking the last free lease, then giving it back

    def dollars_per_million(self, wcu: float) -> float:
        return wcu * DOLLARS_PER_MILLION_WRITE_UNITS

    def leases_per_s_per_partition(self, wcu: float) -> float:
        """One item's ceiling: a partition's 1,000 WCU a second, spent on this lease cost."""
        return PARTITION_WCU_PER_S / wcu


def lease_costs(limits: tuple[int, ...] = (10, 100, 1000, 2000)) -> list[LeaseCost]:
    costs = []
    for limit in limits:
        model = CapacityModel(enforce=False)
        # One item at any limit: the design before split quotas (benchmarks.scale has both).
        store = SimulatedLeaseStore(
            SystemClock(), capacity=model, shard_capacity=lambda _database: MAX_LIMIT
        )
        store.set_quota("cost-db", Quota(limit=limit, default_ttl_ms=600_000))
        empty = _one_lease_wcu(store, model)
        for _ in range(limit - 1):
            store.acquire("cost-db", HOLDER)
        full = _one_lease_wcu(store, model)
        store.acquire("cost-db", HOLDER)
        size = item_size(quota_item(store.memory.snapshot()["cost-db"]))
        costs.append(LeaseCost(limit, size, empty, full))
    return costs


def _one_lease_wcu(store: SimulatedLeaseStore, model: CapacityModel) -> float:
    before = model.totals.total_write_units()
    grant = store.acquire("cost-db", HOLDER)
    assert isinstance(grant, Granted)
    store.release("cost-db", grant.token)
    return model.totals.total_write_units() - before


def requests_per_uncontended_lease(cycles: int = 500) -> float:
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota("cost-db", Quota(limit=10, default_ttl_ms=60_000))
    before = sum(store.requests.values())
    for _ in range(cycles):
        grant = store.acquire("cost-db", HOLDER)
        assert isinstance(grant, Granted)
        store.release("cost-db", grant.token)
    return (sum(store.requests.values()) - before) / cycles


def client_cpu_us(cycles: int = 20_000) -> float:
    """CPU microseconds for one acquire + release against a zero-latency store."""
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota("cpu-db", Quota(limit=10, default_ttl_ms=60_000))
    started = time.process_time()
    for _ in range(cycles):
        grant = store.acquire("cpu-db", HOLDER)
        assert isinstance(grant, Granted)
        store.release("cpu-db", grant.token)
    return (time.process_time() - started) / cycles * 1e6
