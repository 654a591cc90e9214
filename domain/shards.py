"""A quota over several items: the limit split into shares, one per shard item, so that a
lease costs the same at any limit (docs/design.md, "Cost and ceiling at real quota sizes").

Each shard is an item of the same form as a single quota item, whose limit is its share:
the shares sum to the quota's limit, so live leases across the quota never exceed it (I1)
while each shard keeps I1 on its own. A lease id names its shard (`7-Ab3dE9xQ`), so
release and renew go straight to it. The root item (the database's own) says how many
shards there are, and keeps any leases it held before the quota was split, which count
against the limit until they end.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import zlib

from .decisions import Rejected, plan_acquire
from .item import QuotaState

# Shard items are keyed `database#i`: `#` is never in a database name (model._NAME).
SHARD_MARK = "#"
# A lease's key has no '-' (domain.tokens.lease_key): only a shard's lease id has one.
_SHARD_LEASE_ID = re.compile(r"([0-9]{1,4})-([A-Za-z0-9_]{1,58})", re.ASCII)


def shard_item(database: str, index: int) -> str:
    """The key of shard `index`'s item."""
    return f"{database}{SHARD_MARK}{index}"


def shard_lease_id(index: int, key: str) -> str:
    return f"{index}-{key}"


def parse_shard_lease_id(lease_id: str) -> tuple[int, str] | None:
    """(shard, key) for an id of a shard's lease; None for a single item's."""
    found = _SHARD_LEASE_ID.fullmatch(lease_id)
    return (int(found.group(1)), found.group(2)) if found else None


def plan_shares(limit: int, held: list[int], per_shard: int) -> list[int] | None:
    """Shares for shards holding `held` entries (more shards are added as needed): each
    at least what its shard holds and at most `per_shard`, as level as that allows, summing
    to `limit`; None when what they hold is past the limit (the quota must drain first)."""
    if sum(held) > limit:
        return None
    count = max(len(held), math.ceil(limit / per_shard))
    shares = [*held, *([0] * (count - len(held)))]
    spare = limit - sum(shares)
    # Water-filling: the lowest shares rise first, one lease at a time.
    heap = [(share, index) for index, share in enumerate(shares) if share < per_shard]
    heapq.heapify(heap)
    while spare:
        if not heap:
            shares.append(0)
            heap = [(0, len(shares) - 1)]
        share, index = heapq.heappop(heap)
        shares[index] = share + 1
        spare -= 1
        if share + 1 < per_shard:
            heapq.heappush(heap, (share + 1, index))
    return shares


def first_shard(lease_id: str, active: int) -> int:
    """Where a proposed id is tried first: the same shard every time the same call is
    sent, so that a resent acquire finds the lease its lost first attempt took there."""
    return zlib.crc32(lease_id.encode()) % active


def shard_order(active: int, first: int | None, rng: random.Random) -> list[int]:
    """The shards an acquirer tries, in order: random, but `first` first (a proposed id's
    own shard, or one this store just gave a lease back to)."""
    order = list(range(active))
    rng.shuffle(order)
    if first is not None and first < active:
        order.remove(first)
        order.insert(0, first)
    return order


def shards_with_room(states: dict[int, QuotaState], now_ms: int, rng: random.Random) -> list[int]:
    """The shards read that could take a lease now (free, or holding expired entries to
    reclaim), most free first, ties in random order so that acquirers spread out."""
    room = [
        index
        for index, state in states.items()
        if not isinstance(plan_acquire(state, now_ms), Rejected)
    ]
    rng.shuffle(room)
    return sorted(room, key=lambda index: -states[index].remaining(now_ms))
