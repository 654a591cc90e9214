"""Leases in one part of a quota (domain.plan.Part): its key item alone, or its shards.

How a lease is taken in one item (`take_in_item`: the plain write, or a reclaim of expired
entries in the same write as the grant), how one is found room for in a split part, given
back and renewed. Every write is a `domain.item` write through the storage port; which
limits the items have is domain.changes' business alone.
"""

from __future__ import annotations

import random
from contextlib import suppress
from dataclasses import dataclass, replace

from .decisions import (
    AcquireResult,
    Granted,
    LeaseLost,
    Reclaim,
    Rejected,
    Renewed,
    RenewResult,
    plan_acquire,
)
from .errors import (
    ConnleaseError,
    CorruptQuota,
    InvalidInput,
    StaleConfiguration,
    StoreUnavailable,
    UnknownDatabase,
)
from .item import Clear, Extend, Grant, NewLease, NoteWanted, QuotaState, Remove
from .model import Lease
from .plan import Part
from .ports import Clock, ItemStore
from .shards import first_shard, shard_item, shard_lease_id, shard_order, shards_with_room

# A conditional write loses only to another write that changed the item; a handful of
# rounds settles any realistic race, and the caller's backoff covers the rest.
MAX_WRITE_ATTEMPTS = 8
# An acquirer that looks for room in a split part reads every shard up to this many (one
# batch read, a unit each): it then says "no capacity" only when there is none.
READ_ALL_SHARDS = 16
# Beyond, it reads this many at random: near full it may then say "no capacity" while a
# few are free elsewhere, which its next poll may find; reading every shard on every poll
# would pass a shard's 3,000 reads a second.
SAMPLE_SHARDS = 8
# After finding a split part full, a store's acquirers read before they write this long.
FULL_MEMORY_MS = 1_000


@dataclass(frozen=True, slots=True)
class Where:
    """Where a grant lives: the part's key and its shard (None: the key item itself)."""

    part: str
    shard: int | None

    @property
    def item(self) -> str:
        return self.part if self.shard is None else shard_item(self.part, self.shard)


def in_shard(index: int, lease: Lease) -> Lease:
    """A shard's lease as its callers know it: its id names the shard."""
    return replace(lease, id=shard_lease_id(index, lease.id))


def _ours(lease: Lease, wanted: NewLease, now_ms: int) -> bool:
    """A stored lease with a proposed id is this caller's only if it is still live and
    names the same holder; anything else is someone else's (or a stale copy's)."""
    return lease.is_live(now_ms) and lease.holder == wanted.holder


def _checked(key: str, item: QuotaState | None) -> QuotaState:
    if item is None:
        raise UnknownDatabase(key)
    if not item.fenced:
        raise CorruptQuota(key, "it has no fences (an older version's item): set its quota again")
    return item


class PartLeases:
    """Takes, gives back and renews leases in parts, over the storage port; remembers,
    per part, when it found it full and which shard it last freed a lease in."""

    def __init__(
        self, items: ItemStore, clock: Clock, rng: random.Random, reclaim_grace_ms: int
    ) -> None:
        self._items = items
        self._clock = clock
        self._rng = rng
        self._grace_ms = reclaim_grace_ms
        self._full_at_ms: dict[str, int] = {}
        self._freed: dict[str, int] = {}
        self._roots: dict[str, QuotaState] = {}  # the last root items its writes returned

    def take(
        self, into: Part, wanted: NewLease, *, proposed: bool, note: bool = True
    ) -> AcquireResult:
        """Take `wanted` in a part: its key item, or one of its shards once it is split (a
        refusal there says the part's limit)."""
        part, shards = into.key, into.shards
        if shards == 0:
            return self.take_in_item(part, wanted, proposed=proposed, note=note)
        now_ms = self._clock.now_ms()
        # A proposed id's own shard (a resent call finds what its first attempt took); else
        # one this store just freed a lease in, which has room unless someone was quicker.
        first = first_shard(wanted.id, shards) if proposed else self._freed.pop(part, None)
        order = shard_order(shards, first, self._rng)
        recently_full = now_ms - self._full_at_ms.get(part, -FULL_MEMORY_MS) < FULL_MEMORY_MS
        if first is not None or not recently_full:
            granted = self._take_shard(part, order.pop(0), wanted, proposed)
            if granted is not None:
                return granted
            self._full_at_ms[part] = self._clock.now_ms()
        sample = order if len(order) < READ_ALL_SHARDS else order[:SAMPLE_SHARDS]
        states = self.read_shards(part, sample)
        now_ms = self._clock.now_ms()
        for index in shards_with_room(states, now_ms - self._grace_ms, self._rng)[:2]:
            granted = self._take_shard(part, index, wanted, proposed)
            if granted is not None:
                self._full_at_ms.pop(part, None)
                return granted
        # Full: every shard read hears that someone waits, so that warm holders in any of
        # them give back (each note at most every 250 ms, as on one item).
        for index, state in states.items():
            if note and state.wanted_note_stale(now_ms):
                with suppress(ConnleaseError):
                    self._items.write(shard_item(part, index), NoteWanted(now_ms))
        reclaim_ms = now_ms - self._grace_ms
        held = [lease for state in states.values() for lease in state.live(reclaim_ms)]
        earliest = min((lease.expires_at_ms for lease in held), default=reclaim_ms)
        return Rejected(part, into.limit, len(held), max(0, earliest - reclaim_ms))

    def _take_shard(
        self, part: str, index: int, wanted: NewLease, proposed: bool
    ) -> Granted | None:
        try:
            # One shard full is no sign that anyone waits: the part notes it when all are.
            taken = self.take_in_item(
                shard_item(part, index), wanted, proposed=proposed, note=False
            )
        except UnknownDatabase:
            return None  # not made yet: a change is sealing the part's new shards
        if not isinstance(taken, Granted):
            return None
        return replace(
            taken,
            lease=in_shard(index, taken.lease),
            reclaimed=tuple(in_shard(index, lease) for lease in taken.reclaimed),
        )

    def take_in_item(
        self, key: str, wanted: NewLease, *, proposed: bool, note: bool = True
    ) -> AcquireResult:
        try:
            return self._take_in_item(key, wanted, note=note)
        except StoreUnavailable:
            # A write whose answer was lost may have taken the lease: give it back rather
            # than leave a slot held that nobody knows about until its TTL (if the store is
            # still down this fails too, and the TTL is the bound). A proposed id is the
            # proposer's to give back: another copy of its call may hold that lease.
            if not proposed:
                with suppress(ConnleaseError):
                    self._items.write(key, Remove(wanted.id, None))
            raise

    def _take_in_item(self, key: str, wanted: NewLease, *, note: bool) -> AcquireResult:
        plan: Reclaim | None = None
        reclaimed: tuple[Lease, ...] = ()
        for _ in range(MAX_WRITE_ATTEMPTS):
            now_ms = self._clock.now_ms()
            if plan is not None and not plan.grant:
                written = self._items.write(key, Clear(plan.victims))
            elif plan is not None:
                written = self._items.write(key, Grant(wanted, now_ms, plan.victims, plan.limit))
            else:
                written = self._items.write(key, Grant(wanted, now_ms))
            if written.applied and plan is not None:
                reclaimed += plan.victims
            item = _checked(key, written.item)
            self._saw(item)
            lease = item.find(wanted.id)
            if lease is not None:
                if written.applied or _ours(lease, wanted, now_ms):
                    # Found after a refusal too: an earlier attempt of this call (a retried
                    # request whose answer was lost) took it.
                    return Granted(
                        lease,
                        # What may be granted now: a lease within its skew margin counts.
                        item.remaining(now_ms - self._grace_ms),
                        reclaimed,
                        item.others_waiting(now_ms),
                    )
                raise InvalidInput(
                    "secret",
                    "is another holder's, or its last grant ended unreleased and is not yet"
                    " reclaimed: use a new secret",
                )
            if wanted.epoch is not None and item.epoch != wanted.epoch:
                raise StaleConfiguration(key, wanted.epoch, item.epoch)
            # A lease is reclaimed only a skew margin after its expiry (docs/design.md).
            step = plan_acquire(item, now_ms - self._grace_ms)
            if isinstance(step, Rejected):
                split = item.config is not None and item.config.shards > 0
                # A split quota's root grants nothing new: its caller goes to the shards.
                if note and not split and item.wanted_note_stale(now_ms):
                    # Advisory: the refusal stands whether or not the note lands.
                    with suppress(ConnleaseError):
                        self._items.write(key, NoteWanted(now_ms))
                return step
            plan = step if isinstance(step, Reclaim) else None
        return Rejected(key, item.quota.limit, len(item.live(now_ms)), retry_after_ms=0)

    def _saw(self, item: QuotaState) -> None:
        if item.config is not None:
            self._roots[item.database] = item

    def root_seen(self, database: str) -> QuotaState | None:
        """The quota's root item as a write to it last returned (once): what the quota
        is, learned without a read of its own."""
        return self._roots.pop(database, None)

    def release(self, where: Where, key: str, fence: int | None) -> bool:
        """Give back the grant `fence` of `key` where it lives; False if it is not there."""
        if self._remove(where.item, key, fence):
            if where.shard is not None:
                self._freed[where.part] = where.shard
            return True
        return False

    def release_anywhere(self, part: str, shards: int, key: str, fence: int | None) -> bool:
        """Give back a lease known only by its secret (its proposer lost the answer that
        named its shard): the key item, then every shard that holds it."""
        if self._remove(part, key, fence):
            return True
        if shards == 0:
            return False
        return any(
            state.find(key) is not None and self._remove(shard_item(part, index), key, fence)
            for index, state in self.read_shards(part, list(range(shards))).items()
        )

    def _remove(self, item: str, key: str, fence: int | None) -> bool:
        written = self._items.write(item, Remove(key, fence))
        _checked(item, written.item)  # none there, or an item from before fences
        return written.applied

    def renew(self, where: Where, key: str, fence: int | None, ttl_ms: int | None) -> RenewResult:
        """Push a live grant's expiry to now + ttl (the item's default if None)."""
        lease_id = key if where.shard is None else shard_lease_id(where.shard, key)
        try:
            if ttl_ms is None:
                ttl_ms = _checked(where.item, self._items.read(where.item)).quota.default_ttl_ms
            now_ms = self._clock.now_ms()
            expires_at_ms = now_ms + ttl_ms
            written = self._items.write(where.item, Extend(key, fence, expires_at_ms, now_ms))
            item = _checked(where.item, written.item)
        except UnknownDatabase:
            if where.shard is None:
                raise
            if self._items.read(where.part) is None:  # no quota at all, not a shard gone
                raise UnknownDatabase(where.part) from None
            return LeaseLost(lease_id)  # a shard gone: its quota was made anew since
        lease = item.find(key)
        if (
            lease is None
            or not lease.is_live(now_ms)
            or fence not in (None, lease.fence)
            # Refused with the lease already longer: it stays as it is, never shortened.
            or not (written.applied or lease.expires_at_ms >= expires_at_ms)
        ):
            return LeaseLost(lease_id)
        if where.shard is not None:
            lease = in_shard(where.shard, lease)
        remaining = item.remaining(now_ms - self._grace_ms)
        return Renewed(lease, remaining, item.others_waiting(now_ms))

    def read_shards(self, part: str, indexes: list[int]) -> dict[int, QuotaState]:
        keys = {shard_item(part, index): index for index in indexes}
        return {keys[key]: state for key, state in self._items.read_many(list(keys)).items()}
