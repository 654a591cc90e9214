"""The stores tests use, made one way: seeded randomness (the shard a lease tries first) and
a seeded secret source, so that a hypothesis replay or a failing run takes the same paths
again; small shard items on request, to split small quotas."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from adapters.dynamodb import DynamoDBLeaseStore
from adapters.memory import InMemoryItems, InMemoryLeaseStore
from domain.model import SKEW_MARGIN_MS
from domain.ports import Clock, ItemStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def seeded_secrets(seed: int = 0) -> Callable[[], str]:
    """Secrets as a caller draws them (22 URL-safe characters), from a seeded stream."""
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return lambda: "".join(rng.choice(alphabet) for _ in range(22))


def _capacity(shard_capacity: int | None) -> Callable[[str], int] | None:
    return None if shard_capacity is None else (lambda _key: shard_capacity)


def memory_store(
    clock: Clock,
    *,
    seed: int = 0,
    shard_capacity: int | None = None,
    reclaim_grace_ms: int = SKEW_MARGIN_MS,
    items: InMemoryItems | None = None,
    secrets: Callable[[], str] | None = None,
    reached_through: Callable[[InMemoryItems], ItemStore] | None = None,
) -> InMemoryLeaseStore:
    """`reached_through`: what stands between the store and its items (a test's slow or
    failing round trips)."""
    return InMemoryLeaseStore(
        clock,
        secrets or seeded_secrets(seed),
        items=items,
        rng=random.Random(seed),
        shard_capacity=_capacity(shard_capacity),
        reclaim_grace_ms=reclaim_grace_ms,
        reached_through=reached_through,
    )


def dynamodb_store(
    client: DynamoDBClient,
    table: str,
    clock: Clock,
    *,
    seed: int = 0,
    shard_capacity: int | None = None,
    reclaim_grace_ms: int = SKEW_MARGIN_MS,
    secrets: Callable[[], str] | None = None,
) -> DynamoDBLeaseStore:
    capacity = _capacity(shard_capacity)
    if capacity is None:
        return DynamoDBLeaseStore(
            client,
            table,
            clock,
            secrets or seeded_secrets(seed),
            rng=random.Random(seed),
            reclaim_grace_ms=reclaim_grace_ms,
        )
    return DynamoDBLeaseStore(
        client,
        table,
        clock,
        secrets or seeded_secrets(seed),
        rng=random.Random(seed),
        shard_capacity=capacity,
        reclaim_grace_ms=reclaim_grace_ms,
    )
