"""Quotas split over shard items (`domain.shards`): how a lease is taken in one of them, a
lease given back by the key it was proposed with, and the limit shared out again.

A `LeaseStore` hands a database here once its root item says it is split; the store's
own hooks do every read and write, so the rules hold alike on every store.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from typing import TYPE_CHECKING

from .decisions import AcquireResult, Granted, Reclaim, Rejected, reclaim_victims
from .errors import ConnleaseError, UnknownDatabase
from .model import Lease, Quota, QuotaState, QuotaStatus, ShardLayout
from .shards import (
    first_shard,
    plan_shares,
    shard_item,
    shard_lease_id,
    shard_order,
    shards_with_room,
    split_status,
)

if TYPE_CHECKING:
    from .ports import Clock, LeaseStore, NewLease

# An acquirer that looks for room in a split quota reads every shard up to this many
# (one batch read, a unit each): it then says "no capacity" only when there is none.
READ_ALL_SHARDS = 16
# Beyond, it reads this many at random: near full (fewer free leases than shards) it may
# then say "no capacity" while a few are free elsewhere, which its next poll may find;
# reading every shard on every poll would pass a shard's 3,000 reads a second.
SAMPLE_SHARDS = 8
# How long a store trusts the layout of a split quota it saw (a change of shares takes
# effect at once, whatever it trusts: each shard enforces its own).
LAYOUT_CACHE_MS = 5_000
# After finding a split quota full, a store's acquirers read before they write this long.
FULL_MEMORY_MS = 1_000
# A split quota waiting for held leases to end is re-shared at most this often.
REBALANCE_EVERY_MS = 1_000


def in_shard(index: int, lease: Lease) -> Lease:
    """A shard's lease as its callers know it: its id names the shard."""
    return replace(lease, id=shard_lease_id(index, lease.id))


class SplitQuotas:
    """A store's split quotas, on its hooks, and what it last saw of them: their layouts,
    and when one was found full."""

    def __init__(
        self,
        store: LeaseStore,
        clock: Clock,
        capacity: Callable[[str], int],
        rng: random.Random,
        reclaim_grace_ms: int,
    ) -> None:
        self._store = store
        self._clock = clock
        self._capacity = capacity
        self._rng = rng
        self._grace_ms = reclaim_grace_ms
        self._layouts: dict[str, tuple[ShardLayout, int]] = {}
        self._full_at_ms: dict[str, int] = {}
        self._freed: dict[str, int] = {}  # the shard this store last gave a lease back to

    def freed(self, database: str, index: int) -> None:
        self._freed[database] = index

    def status(self, root: QuotaState) -> QuotaStatus:
        assert root.layout is not None
        self.remember(root.database, root.layout)
        shards = self.read_shards(root.database, list(range(root.layout.shards)))
        return split_status(root, shards, self._clock.now_ms())

    def forget(self, database: str) -> None:
        self._layouts.pop(database, None)

    def take(
        self,
        database: str,
        layout: ShardLayout,
        wanted: NewLease,
        proposed: bool,
        *,
        rebalanced: bool = False,
    ) -> AcquireResult:
        """Take a lease in one of a split quota's shards: straight in one (random, or for a
        proposed id always the same) unless this store found the quota full lately; then,
        or if that one was full, in one that a read of a few others showed had room."""
        if layout.shards == 0:
            return Rejected(database, layout.limit, layout.limit, 0)
        now_ms = self._clock.now_ms()
        # A proposed id's own shard; else one this store just freed a lease in, which has
        # room unless someone was quicker (the same environment takes and gives back).
        first = (
            first_shard(wanted.id, layout.shards) if proposed else self._freed.pop(database, None)
        )
        order = shard_order(layout.shards, first, self._rng)
        recently_full = now_ms - self._full_at_ms.get(database, -FULL_MEMORY_MS) < FULL_MEMORY_MS
        if first is not None or not recently_full:
            granted = self._take_shard(database, order.pop(0), wanted, proposed)
            if granted is not None:
                return granted
            self._full_at_ms[database] = self._clock.now_ms()
        sample = order if len(order) < READ_ALL_SHARDS else order[:SAMPLE_SHARDS]
        states = self.read_shards(database, sample)
        now_ms = self._clock.now_ms()
        for index in shards_with_room(states, now_ms - self._grace_ms, self._rng)[:2]:
            granted = self._take_shard(database, index, wanted, proposed)
            if granted is not None:
                self._full_at_ms.pop(database, None)
                return granted
        if layout.rebalance and not rebalanced:
            fresh = self._rebalance(database)
            if fresh is not None:
                return self.take(database, fresh, wanted, proposed, rebalanced=True)
        # The quota is full: every shard read hears that someone waits, so that warm holders
        # in any of them give back (each note at most every 250 ms, as on one item).
        for index, state in states.items():
            if state.wanted_note_stale(now_ms):
                with suppress(ConnleaseError):
                    self._store._note_wanted(shard_item(database, index), now_ms)
        # When the earliest held lease may be reclaimed (the skew margin past its expiry).
        reclaim_ms = now_ms - self._grace_ms
        held = [lease for state in states.values() for lease in state.live(reclaim_ms)]
        earliest = min((lease.expires_at_ms for lease in held), default=reclaim_ms)
        return Rejected(database, layout.limit, layout.limit, max(0, earliest - reclaim_ms))

    def _take_shard(
        self, database: str, index: int, wanted: NewLease, proposed: bool
    ) -> Granted | None:
        try:
            # One shard full is no sign that anyone waits: the quota notes it when all are.
            taken = self._store._take_on(
                shard_item(database, index), wanted, proposed=proposed, note=False
            )
        except UnknownDatabase:
            self._layouts.pop(database, None)  # a shard gone: the layout changed
            return None
        if not isinstance(taken, Granted):
            return None
        return replace(
            taken,
            lease=in_shard(index, taken.lease),
            reclaimed=tuple(in_shard(index, lease) for lease in taken.reclaimed),
        )

    def release_by_key(self, database: str, key: str, fence: int | None) -> bool:
        """Remove a lease known only by its secret (its proposer lost the answer that named
        its shard): read every shard, give back the one that holds it."""
        layout = self.known_layout(database) or self._store._read(database).layout
        if layout is None:
            return False
        return any(
            state.find(key) is not None
            and self._store._remove(shard_item(database, index), key, fence)
            for index, state in self.read_shards(database, list(range(layout.shards))).items()
        )

    def reshare(
        self,
        database: str,
        limit: int,
        ttl_ms: int,
        root: QuotaState | None,
        per_shard: int,
        *,
        rebalancing: bool = False,
    ) -> bool:
        """Give the shards shares that sum to the limit, each no less than what its shard
        holds, and then write the root's layout, which switches acquirers over; False if a
        lease was taken meanwhile where a share was planned without it, or, rebalancing,
        if nothing changed.

        The live leases a root held before the split stay in it and count; it takes no new
        ones. When the leases held are past the limit, every share is 0 until they drain:
        then an acquirer that finds no room re-shares (`_rebalance`), as it does once the
        root's own leases have ended. Expired entries are removed first, so that what a
        shard holds is what its write conditions count."""
        now_ms = self._clock.now_ms()
        existing = root.layout.shards if root is not None and root.layout else 0
        states = self.read_shards(database, list(range(existing)))
        for index, state in states.items():
            if not state.fenced:  # an older version's shard: its share as it is, and fences
                states[index] = self._store._write_quota(
                    shard_item(database, index), replace(state.quota, default_ttl_ms=ttl_ms)
                ).state
        states = self._without_expired(database, states)
        held = [len(states[i].leases) if i in states else 0 for i in range(existing)]
        old = [states[i].quota.limit if i in states else -1 for i in range(existing)]
        in_root = len(root.live(now_ms - self._grace_ms)) if root is not None else 0
        planned = plan_shares(limit - in_root, held, per_shard)
        if planned is None and rebalancing:
            return False  # still past the limit: the claim holds the next try off a while
        shares = planned if planned is not None else [0] * existing
        layout = ShardLayout(limit, len(shares), rebalance=planned is None or in_root > 0)
        changed = [i for i, share in enumerate(shares) if i >= existing or share != old[i]]
        if rebalancing and not changed and root is not None and root.layout == layout:
            return False
        # Lower shares first, then raise: at every moment they sum to no more than the larger
        # of the old and the new limit.
        for index in sorted(changed, key=lambda i: i < existing and shares[i] > old[i]):
            if not self._store._write_quota(
                shard_item(database, index),
                Quota(shares[index], ttl_ms),
                at_most_held=planned is not None,
            ).applied:
                return False
        seen = len(root.leases) if root is not None else 0
        if not self._store._write_layout(database, ttl_ms, layout, seen).applied:
            return False
        self.remember(database, layout)
        return True

    def _without_expired(
        self, database: str, states: dict[int, QuotaState]
    ) -> dict[int, QuotaState]:
        now_ms = self._clock.now_ms()
        for index, state in states.items():
            victims = reclaim_victims(state, now_ms - self._grace_ms)
            if victims:
                plan = Reclaim(state.quota.limit, victims, grant=False)
                states[index] = self._store._reclaim(
                    shard_item(database, index), plan, None, now_ms
                ).state
        return states

    def _rebalance(self, database: str) -> ShardLayout | None:
        """A split quota waiting for held leases to end: if they have, share the room they
        left. One acquirer at a time, at most once a second (a claim on the root)."""
        now_ms = self._clock.now_ms()
        if not self._store._claim_rebalance(database, now_ms, now_ms + REBALANCE_EVERY_MS):
            return None
        root = self._store._read(database)
        if root.layout is None:
            return None
        if not self.reshare(
            database,
            root.layout.limit,
            root.quota.default_ttl_ms,
            root,
            self._capacity(database),
            rebalancing=True,
        ):
            return None
        return self.known_layout(database)

    def known_layout(self, database: str) -> ShardLayout | None:
        seen = self._layouts.get(database)
        if seen is None or self._clock.now_ms() - seen[1] >= LAYOUT_CACHE_MS:
            return None
        return seen[0]

    def remember(self, database: str, layout: ShardLayout) -> ShardLayout:
        self._layouts[database] = (layout, self._clock.now_ms())
        return layout

    def read_shards(self, database: str, indexes: list[int]) -> dict[int, QuotaState]:
        items = {shard_item(database, index): index for index in indexes}
        return {items[key]: state for key, state in self._store._read_items(list(items)).items()}
