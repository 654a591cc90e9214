"""The rules of one quota item: what each write to it checks, and what it changes.

Every item that grants leases has the same form (docs/design.md, "Storage"): a quota kept
in one item, a shard of a split one, a group's share, a capped group's tickets. A write is a
typed value built here; `allows(item)` is its condition and `applied(item)` the item after
it. The in-memory store applies them as written here; the DynamoDB store translates each
into one conditional UpdateItem whose condition says the same (the contract tests run both),
so every rule is written once, in this module:

- a grant needs room (`size < limit`: expired entries count until an acquirer removes
  them) and a new id, and takes the item's next fence;
- a reclaim removes expired entries only at the expiry it saw (a renewed one is spared);
- a release or a renewal acts on one grant: the entry with that key and that fence;
- an item's limit is changed only by a change of its quota (domain.changes), whose version
  the item keeps as its `epoch`: a change seals an item by taking it to its version, and
  writes its limit only while the item is still at that version, so that a change that
  lost a race can no longer write anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .groups import Groups
from .model import (
    WANTED_REFRESH_MS,
    WANTED_WINDOW_MS,
    Lease,
    Quota,
    QuotaStatus,
)


@dataclass(frozen=True, slots=True)
class NewLease:
    """A lease an acquirer wants; `ttl_ms` None means the item's default."""

    id: str
    holder: str
    ttl_ms: int | None
    tag: int = 0  # a group's pool lease: the group's tag (domain.groups.GroupRule)
    # Granted only at this version of the quota (None: at any): a group's borrowed lease,
    # whose right to borrow is the configuration's, so that one read before a cap or a
    # `noborrow` was set may not borrow past it.
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """What a quota's root item says of the whole quota: its limit and default TTL, how many
    shard items the pool is split over (0: the root item alone), its groups, and whether a
    change left some item holding more than its share (`pending`: acquirers refused
    meanwhile settle it, at most once a second, `settled_at_ms`)."""

    limit: int
    default_ttl_ms: int
    shards: int = 0
    groups: Groups | None = None
    pending: bool = False
    settled_at_ms: int = 0
    # The quota was deleted: its root stays, so that its versions go on if it is made again
    # (a change of an earlier life can then never land on the new one's items).
    deleted: bool = False
    # The highest fence any of the quota's items had given when its last change counted
    # them, kept across its deletion: an item made since numbers its grants above it, so
    # that no token names two grants (a quota or a group made again, issue 23).
    fence_floor: int = 0
    # The root's version when this was read (its `epoch`): not stored with the rest.
    version: int = 0

    @property
    def quota(self) -> Quota:
        return Quota(self.limit, self.default_ttl_ms)


@dataclass(frozen=True, slots=True)
class QuotaState:
    """A snapshot of one item: its own limit and default TTL, every lease entry (expired
    ones included), the waiters' note, its last grant's fence and the version of the change
    that last set its limit; a quota's root item also says what the quota is (`config`)."""

    database: str  # the item's key: a database's own, a shard's (`db#3`) or a share's
    quota: Quota
    leases: tuple[Lease, ...]
    wanted_at_ms: int = 0  # when a refused acquirer last noted that it waits (0: never)
    fence: int = 0  # the item's last grant's fence (0: none yet)
    # False: an item an older version wrote, without fences; it grants nothing until
    # set_quota upgrades it.
    fenced: bool = True
    epoch: int = 0
    config: QuotaConfig | None = None

    def others_waiting(self, now_ms: int) -> bool:
        # A note from a clock far ahead is not believed: it would read as waiting forever.
        return -WANTED_WINDOW_MS < now_ms - self.wanted_at_ms < WANTED_WINDOW_MS

    def wanted_note_stale(self, now_ms: int) -> bool:
        """Due for a refresh: older than the refresh interval, or too far ahead to be true."""
        age_ms = now_ms - self.wanted_at_ms
        return age_ms >= WANTED_REFRESH_MS or age_ms < -WANTED_WINDOW_MS

    def find(self, lease_id: str) -> Lease | None:
        return next((lease for lease in self.leases if lease.id == lease_id), None)

    def live(self, now_ms: int) -> tuple[Lease, ...]:
        return tuple(lease for lease in self.leases if lease.is_live(now_ms))

    def expired(self, now_ms: int) -> tuple[Lease, ...]:
        return tuple(lease for lease in self.leases if not lease.is_live(now_ms))

    def remaining(self, now_ms: int) -> int:
        return max(0, self.quota.limit - len(self.live(now_ms)))

    def status(self, now_ms: int) -> QuotaStatus:
        live = self.live(now_ms)
        limit = self.config.limit if self.config is not None else self.quota.limit
        return QuotaStatus(
            database=self.database,
            limit=limit,
            default_ttl_ms=self.quota.default_ttl_ms,
            in_use=len(live),
            remaining=max(0, limit - len(live)),
            expired=len(self.leases) - len(live),
            leases=tuple(sorted(self.leases, key=lambda lease: lease.expires_at_ms)),
        )


def fenced_as(lease: Lease, fence: int | None) -> bool:
    """The grant a token names: any (None), else exactly its fence; an entry from before
    fences (0) matches none but a wildcard."""
    return fence is None or (lease.fence != 0 and lease.fence == fence)


def _new_item(key: str, ttl_ms: int) -> QuotaState:
    return QuotaState(key, Quota(0, ttl_ms), ())


def _granting(item: QuotaState | None) -> bool:
    return item is not None and item.fenced


@dataclass(frozen=True, slots=True)
class Grant:
    """Add `lease` (with the item's next fence), removing `victims` (expired entries, each
    only at the expiry seen) in the same write. Without victims it needs a free entry; with
    them it is planned on `planned_limit` and needs the item to hold at most that many
    entries plus the victims, less one, under a limit that has not been lowered since: a
    condition a DynamoDB expression can state, which never leaves more entries than the
    limit."""

    lease: NewLease
    now_ms: int
    victims: tuple[Lease, ...] = ()
    planned_limit: int = 0

    def allows(self, item: QuotaState | None) -> bool:
        if item is None or not _granting(item) or item.find(self.lease.id) is not None:
            return False
        if self.lease.epoch is not None and item.epoch != self.lease.epoch:
            return False
        if not self.victims:
            return len(item.leases) < item.quota.limit
        return (
            victims_match(item, self.victims)
            and item.quota.limit >= self.planned_limit
            and len(item.leases) <= self.planned_limit + len(self.victims) - 1
        )

    def applied(self, item: QuotaState) -> QuotaState:
        kept = _without(item, self.victims)
        ttl_ms = item.quota.default_ttl_ms if self.lease.ttl_ms is None else self.lease.ttl_ms
        fence = item.fence + 1
        lease = Lease(
            self.lease.id,
            self.lease.holder,
            self.now_ms + ttl_ms,
            fence,
            tag=self.lease.tag,
            granted_at_ms=self.now_ms // 1000 * 1000,  # to the second, as DynamoDB keeps it
        )
        return replace(item, leases=(*kept, lease), fence=fence)


@dataclass(frozen=True, slots=True)
class Clear:
    """Remove expired entries, each only at the expiry seen, granting nothing."""

    victims: tuple[Lease, ...]

    def allows(self, item: QuotaState | None) -> bool:
        return item is not None and item.fenced and victims_match(item, self.victims)

    def applied(self, item: QuotaState) -> QuotaState:
        return replace(item, leases=_without(item, self.victims))


@dataclass(frozen=True, slots=True)
class Remove:
    """Give back the grant `fence` (None: any) of the entry `lease_id`."""

    lease_id: str
    fence: int | None

    def allows(self, item: QuotaState | None) -> bool:
        # An item from before fences: set its quota again first (its entries' fences and
        # holders maps are what a removal removes from).
        lease = None if item is None or not item.fenced else item.find(self.lease_id)
        return lease is not None and fenced_as(lease, self.fence)

    def applied(self, item: QuotaState) -> QuotaState:
        return replace(item, leases=tuple(le for le in item.leases if le.id != self.lease_id))


@dataclass(frozen=True, slots=True)
class Extend:
    """Push a live grant's expiry out to `expires_at_ms`; never shortens it."""

    lease_id: str
    fence: int | None
    expires_at_ms: int
    now_ms: int

    def allows(self, item: QuotaState | None) -> bool:
        if item is None or not _granting(item):
            return False
        lease = item.find(self.lease_id)
        return (
            lease is not None
            and lease.is_live(self.now_ms)
            and fenced_as(lease, self.fence)
            and lease.expires_at_ms < self.expires_at_ms
        )

    def applied(self, item: QuotaState) -> QuotaState:
        leases = tuple(
            replace(lease, expires_at_ms=self.expires_at_ms) if lease.id == self.lease_id else lease
            for lease in item.leases
        )
        return replace(item, leases=leases)


@dataclass(frozen=True, slots=True)
class NoteWanted:
    """Note that a refused acquirer waits, over a note that is stale (waiters who saw the
    same stale note write it once between them); it touches no lease."""

    now_ms: int

    def allows(self, item: QuotaState | None) -> bool:
        return item is not None and item.wanted_note_stale(self.now_ms)

    def applied(self, item: QuotaState) -> QuotaState:
        return replace(item, wanted_at_ms=self.now_ms)


@dataclass(frozen=True, slots=True)
class Seal:
    """Take an item to a change's version `epoch`, granting nothing (limit 0) until the
    change sets its limit: created empty if missing, its fences starting above
    `fence_floor` (the quota's: QuotaConfig.fence_floor). Refused once the item is at
    `epoch` or later, so that a change that lost the race to a later one stops here."""

    epoch: int
    default_ttl_ms: int
    fence_floor: int = 0

    def allows(self, item: QuotaState | None) -> bool:
        return item is None or item.epoch < self.epoch

    def applied(self, item: QuotaState | None, key: str) -> QuotaState:
        item = item or _new_item(key, self.default_ttl_ms)
        return replace(
            item,
            quota=Quota(0, self.default_ttl_ms),
            epoch=self.epoch,
            fenced=True,
            config=None,
            fence=item.fence or self.fence_floor,  # none given yet: from the floor
        )


@dataclass(frozen=True, slots=True)
class SetLimit:
    """Set a sealed item's limit, only while it is still at the change's version."""

    epoch: int
    quota: Quota

    def allows(self, item: QuotaState | None) -> bool:
        return item is not None and item.epoch == self.epoch

    def applied(self, item: QuotaState) -> QuotaState:
        return replace(item, quota=self.quota)


@dataclass(frozen=True, slots=True)
class Accept:
    """A change of a quota, accepted: the root item goes from version `seen` to the next,
    and says `config`; its own limit (the pool's when the pool is the root alone) becomes
    `own_limit`. Created if `seen` is 0 and it is missing. A commit moves the root's
    fence floor but not its version, so an accept is also refused once the floor is above
    the one its change read (it would write the lower one back). A settle (`settle_at_ms`) is
    accepted only while the root says a change is pending and none settled in the last
    `settle_every_ms`, so that acquirers refused at once settle once between them."""

    seen: int
    config: QuotaConfig
    own_limit: int
    settle_at_ms: int | None = None
    settle_every_ms: int = 0

    def allows(self, item: QuotaState | None) -> bool:
        if item is None:
            return self.seen == 0 and self.settle_at_ms is None
        if item.epoch != self.seen:
            return False
        if item.config is not None and item.config.fence_floor > self.config.fence_floor:
            return False  # a commit raised the floor since it was read: read again
        if self.settle_at_ms is None:
            return True
        config = item.config
        return (
            config is not None
            and config.pending
            and config.settled_at_ms <= self.settle_at_ms - self.settle_every_ms
        )

    def applied(self, item: QuotaState | None, key: str) -> QuotaState:
        item = item or _new_item(key, self.config.default_ttl_ms)
        return replace(
            item,
            quota=Quota(self.own_limit, self.config.default_ttl_ms),
            epoch=self.seen + 1,
            fenced=True,
            config=replace(self.config, version=self.seen + 1),
        )


@dataclass(frozen=True, slots=True)
class Commit:
    """What a change found once it set every limit (still pending or not, groups
    forgotten), written only while the root is at its version; a deletion's also empties
    the root."""

    epoch: int
    config: QuotaConfig

    def allows(self, item: QuotaState | None) -> bool:
        return item is not None and item.epoch == self.epoch

    def applied(self, item: QuotaState) -> QuotaState:
        # A deleted quota's root holds no lease (its fence goes on: a quota made again never
        # grants a fence its last life gave).
        leases = () if self.config.deleted else item.leases
        return replace(item, leases=leases, config=replace(self.config, version=self.epoch))


ItemWrite = Grant | Clear | Remove | Extend | NoteWanted | Seal | SetLimit | Accept | Commit


def may_forget(item: QuotaState | None, epoch: int) -> bool:
    """An item a change may delete (a forgotten group's, a deleted quota's): only while it
    is still at that change's version, so that a later change's items are never lost."""
    return item is not None and item.epoch == epoch


def apply_write(key: str, item: QuotaState | None, write: ItemWrite) -> QuotaState | None:
    """The item after `write`, or None if its condition refuses it: the in-memory store's
    whole write path, and the reference the DynamoDB store's expressions are tested against."""
    if not write.allows(item):
        return None
    if isinstance(write, Seal | Accept):
        return write.applied(item, key)
    assert item is not None  # every other write's condition needs the item
    return write.applied(item)


def victims_match(item: QuotaState, victims: tuple[Lease, ...]) -> bool:
    """Every victim is still there at the expiry seen: none renewed or re-granted since."""
    current = {lease.id: lease.expires_at_ms for lease in item.leases}
    return all(current.get(victim.id) == victim.expires_at_ms for victim in victims)


def _without(item: QuotaState, victims: tuple[Lease, ...]) -> tuple[Lease, ...]:
    gone = {victim.id for victim in victims}
    return tuple(lease for lease in item.leases if lease.id not in gone)
