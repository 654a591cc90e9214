"""How a quota changes: its limit, its split over shard items, its groups, and the settling
of a change that left some item holding more than its share. Every one of them is the same
versioned protocol (docs/design.md, "Changes"):

1. **Accept.** The root item goes from the version it was read at to the next and says the
   new configuration, in one conditional write (`domain.item.Accept`): of two changes read
   at one version, one is accepted and the other reads again. The root's own limit is 0
   until step 4 (unless the quota is one item, when this one write is the whole change).
2. **Seal.** Every other item of the quota, old and new, is taken to that version with a
   limit of 0 (`Seal`, refused once an item is at a later version): from then on no write
   of an earlier change lands on it, and no item grants, so what items hold only shrinks.
3. **Plan.** With what each item holds counted after the seal (live within the skew
   margin), `plan_limits` gives each item a limit so that live leases, however they drain
   and refill, stay within the quota's limit, each share within its own, each capped group
   within its max; an item past its share holds the others down, and the change is left
   `pending` until it drains.
4. **Set.** Each item's limit is written only while the item is still at this version
   (`SetLimit`), then the root says what the change found (`Commit`).

A later change seals every item again, so it overrides an earlier one that is still
writing; an acquirer that settles a pending change re-applies the configuration the root
says, under a version of its own, so it can never undo an operator's change. A change
that loses the race for the root is read again and retried a few times, then refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .errors import CorruptQuota, StoreUnavailable
from .groups import GroupRule, Groups, cap_quota, reserved_quota
from .item import Accept, Clear, Commit, QuotaConfig, QuotaState, Seal, SetLimit
from .model import Quota
from .ports import Clock, ItemStore
from .shards import SHARD_MARK, plan_shares, shard_item

# A change read again after losing the race for the root, at most this many times.
CHANGE_ATTEMPTS = 6
# A pending change is settled by refused acquirers at most this often (the root says when).
SETTLE_EVERY_MS = 1_000


@dataclass(frozen=True, slots=True)
class Part:
    """A quota's share held in items of its own: the pool, a group's reservation or a
    capped group's tickets. Its `key` item, and `shards` more (`key#i`) once it is split:
    the key item then grants nothing, keeping what it held before the split."""

    key: str
    limit: int
    shards: int = 0

    @property
    def items(self) -> list[str]:
        return [self.key, *(shard_item(self.key, index) for index in range(self.shards))]


def pool_part(database: str, config: QuotaConfig) -> Part:
    reserved = config.groups.reserved if config.groups is not None else 0
    return Part(database, config.limit - reserved, config.shards)


def share_parts(database: str, groups: Groups | None) -> list[Part]:
    """Each group's reservation (0 once retired)."""
    return [
        Part(
            reserved_quota(database, rule.group),
            0 if rule.retired else rule.reservation.reserved,
            rule.share_shards,
        )
        for rule in (groups.rules if groups is not None else ())
    ]


def cap_part(database: str, rule: GroupRule) -> Part:
    """A group's tickets: its cap less its reservation (0 while it is not capped)."""
    cap = rule.reservation.borrow_cap
    limit = cap if cap is not None and not rule.retired else 0
    return Part(cap_quota(database, rule.group), limit, rule.cap_shards)


def cap_parts(database: str, groups: Groups | None) -> list[tuple[GroupRule, Part, Part]]:
    """Each capped group's rule, tickets and reservation (a group that was ever capped
    keeps its cap's items until it is forgotten)."""
    rules = groups.rules if groups is not None else ()
    return [
        (rule, cap_part(database, rule), share)
        for rule, share in zip(rules, share_parts(database, groups), strict=True)
        if rule.capped
    ]


def reserved_part(database: str, config: QuotaConfig, group: str) -> Part | None:
    """The reservation of `group`, retired or not (None: the quota does not name it)."""
    rules = config.groups.rules if config.groups is not None else ()
    shares = share_parts(database, config.groups)
    found = (part for rule, part in zip(rules, shares, strict=True) if rule.group == group)
    return next(found, None)


def all_parts(database: str, config: QuotaConfig) -> list[Part]:
    groups = config.groups
    return [
        pool_part(database, config),
        *share_parts(database, groups),
        *(cap for _, cap, _ in cap_parts(database, groups)),
    ]


def shards_needed(part: Part, capacity: int, existing: int) -> int:
    """Shards a part needs for its limit: none while one item holds it and it was never
    split; once split it stays split (acquirers may still hold the layout they read)."""
    if existing == 0 and part.limit <= capacity:
        return 0
    return max(existing, math.ceil(part.limit / capacity))


def plan_limits(targets: Mapping[str, int], held: Mapping[str, int]) -> tuple[dict[str, int], bool]:
    """Limits for items whose targets sum to a limit, given what each holds, such that live
    leases stay within that limit whatever drains and refills: an item past its target
    holds the others down by its excess, taken from their free room, the first-named first
    (the pool's: reservations are promises). When the items hold more than the limit in all
    (a lowered limit), none grants until they have drained and a settle plans again. The
    second value: some item holds more than its target (the change is pending)."""
    over = sum(max(0, held.get(key, 0) - target) for key, target in targets.items())
    pending = over > 0
    if sum(held.get(key, 0) for key in targets) > sum(targets.values()):
        return dict.fromkeys(targets, 0), True
    limits = dict(targets)
    for key, target in targets.items():
        if over and held.get(key, 0) <= target:
            taken = min(target - held.get(key, 0), over)
            limits[key] -= taken
            over -= taken
    return limits, pending


def item_targets(part: Part, held: Mapping[str, int], capacity: int) -> dict[str, int]:
    """A part's limit shared over its items: its key item alone, or its shards, each at
    least what it holds where the limit allows, as level as that leaves (plan_shares)."""
    if part.shards == 0:
        return {part.key: part.limit}
    shards = part.items[1:]
    counts = [held.get(key, 0) for key in shards]
    # The shards there are, whatever this store's capacity (another version's may differ).
    capacity = max(capacity, math.ceil(part.limit / len(shards)))
    shares = plan_shares(part.limit, counts, capacity) or plan_shares(
        part.limit, [0] * len(shards), capacity
    )
    assert shares is not None
    assert len(shares) == len(shards)
    return {part.key: 0} | dict(zip(shards, shares, strict=True))


def _within_max(database: str, config: QuotaConfig, borrowed: Mapping[int, int]) -> list[Part]:
    """Each reservation, held down by what its group borrowed past its cap (a max lowered
    under what it holds from the pool): the group as a whole stays within its max."""
    found = []
    rules = config.groups.rules if config.groups is not None else ()
    for rule, share in zip(rules, share_parts(database, config.groups), strict=True):
        most = rule.reservation.max
        room = share.limit
        if most is not None and not rule.retired:
            room = max(0, min(room, most - borrowed.get(rule.tag, 0)))
        found.append(replace(share, limit=room))
    return found


def plan_items(
    database: str,
    config: QuotaConfig,
    held: Mapping[str, int],
    capacity: Callable[[str], int],
    borrowed: Mapping[int, int] | None = None,
) -> tuple[dict[str, int], bool]:
    """Every item's limit under `config`, given what each holds: first the parts that count
    against the limit (the pool, the reservations), as wholes (plan_limits), then each
    part's share over its items (plan_limits again: a part holding more than its share
    grants nothing anywhere until it drains); then each capped group's tickets, held down
    by what its reservation holds past its own and by its pool leases no ticket counts
    (`borrowed`, by tag: taken before its cap), so that the group stays within its max."""
    parts = [pool_part(database, config), *_within_max(database, config, borrowed or {})]
    part_held = {part.key: sum(held.get(key, 0) for key in part.items) for part in parts}
    part_limits, pending = plan_limits({part.key: part.limit for part in parts}, part_held)
    pending = pending or any(
        part.limit < share.limit
        for part, share in zip(parts[1:], share_parts(database, config.groups), strict=True)
    )
    rooms = [replace(part, limit=part_limits[part.key]) for part in parts]
    for rule, cap, share in cap_parts(database, config.groups):
        excess = max(0, part_held[share.key] - share.limit)
        tickets = sum(held.get(key, 0) for key in cap.items)
        untracked = max(0, (borrowed or {}).get(rule.tag, 0) - tickets)
        rooms.append(replace(cap, limit=max(0, cap.limit - excess - untracked)))
        # Held down until they drain: settled again as they do.
        pending = pending or excess + untracked > 0
    limits: dict[str, int] = {}
    for room in rooms:
        item_limits, item_pending = plan_limits(item_targets(room, held, capacity(room.key)), held)
        limits |= item_limits
        pending = pending or item_pending
    return limits, pending


class Changes:
    """Applies changes to quotas by the protocol above, over the storage port."""

    def __init__(
        self,
        items: ItemStore,
        clock: Clock,
        capacity: Callable[[str], int],
        reclaim_grace_ms: int,
    ) -> None:
        self._items = items
        self._clock = clock
        self._capacity = capacity
        self._grace_ms = reclaim_grace_ms

    def change(
        self, database: str, make: Callable[[QuotaConfig | None], QuotaConfig]
    ) -> QuotaConfig:
        """Apply the configuration `make` gives for the quota as it is (None: there is
        none yet); `make` may raise InvalidInput, before anything is written."""
        for _ in range(CHANGE_ATTEMPTS):
            try:
                root = self._items.read(database)
            except CorruptQuota:
                root = None  # an older version's item gone bad: the change writes it anew
            old = root.config if root is not None else None
            if old is not None and old.deleted:
                old = None  # made again: a new life, on the versions of the last
            # A change is a settle too: refused acquirers need not settle it again at once.
            new = replace(make(old), settled_at_ms=self._clock.now_ms(), deleted=False)
            done = self._run(database, root, self._shaped(database, new, old), None)
            if done is not None:
                return done
        raise StoreUnavailable(
            "set_quota", "other changes of this quota kept coming first; try again", True
        )

    def delete(self, database: str) -> bool:
        """Delete a quota, as a change: every item sealed, then deleted at that version;
        the root stays, saying the quota is deleted, so that a quota made again goes on
        from its version. False if there was none."""
        for _ in range(CHANGE_ATTEMPTS):
            root = self._items.read(database)
            if root is None or root.config is None or root.config.deleted:
                return False
            gone = QuotaConfig(0, root.config.default_ttl_ms, deleted=True)
            if self._run(database, root, gone, None) is not None:
                return True
        raise StoreUnavailable(
            "delete_quota", "other changes of this quota kept coming first; try again", True
        )

    def settle(self, database: str) -> bool:
        """Plan a pending change again for what its items hold now; False if it was not
        pending, or another acquirer settled it within the last SETTLE_EVERY_MS."""
        root = self._items.read(database)
        if root is None or root.config is None or not root.config.pending:
            return False
        now_ms = self._clock.now_ms()
        if now_ms - root.config.settled_at_ms < SETTLE_EVERY_MS:
            return False
        config = replace(root.config, settled_at_ms=now_ms)
        return self._run(database, root, config, settle_at_ms=now_ms) is not None

    def _shaped(self, database: str, new: QuotaConfig, old: QuotaConfig | None) -> QuotaConfig:
        """`new` with each part split over as many shards as its limit needs."""
        pool = pool_part(database, new)
        shards = shards_needed(pool, self._capacity(database), old.shards if old else 0)
        groups = new.groups
        if groups is not None:
            rules = []
            for rule in groups.rules:
                share = reserved_quota(database, rule.group)
                reserved = 0 if rule.retired else rule.reservation.reserved
                cap = rule.reservation.borrow_cap
                capped = rule.capped or (cap is not None and cap > 0 and not rule.retired)
                cap_limit = cap if cap is not None and capped and not rule.retired else 0
                cap_key = cap_quota(database, rule.group)
                rules.append(
                    replace(
                        rule,
                        capped=capped,
                        share_shards=shards_needed(
                            Part(share, reserved), self._capacity(share), rule.share_shards
                        ),
                        cap_shards=shards_needed(
                            Part(cap_key, cap_limit), self._capacity(cap_key), rule.cap_shards
                        ),
                    )
                )
            groups = replace(groups, rules=tuple(rules))
        return replace(new, shards=shards, groups=groups, pending=False)

    def _run(
        self, database: str, root: QuotaState | None, new: QuotaConfig, settle_at_ms: int | None
    ) -> QuotaConfig | None:
        """One attempt: the configuration it left (what its commit said), or None if another
        change was accepted first."""
        seen = root.epoch if root is not None else 0
        old = root.config if root is not None else None
        parts = all_parts(database, new) + (all_parts(database, old) if old else [])
        keys = list(dict.fromkeys(key for part in parts for key in part.items))
        if keys == [database]:
            # One item: its own limit is the quota's, and it keeps it by itself.
            new = replace(new, pending=False)
            accept = Accept(seen, new, new.limit, settle_at_ms, SETTLE_EVERY_MS)
            return new if self._items.write(database, accept).applied else None
        accepted = self._items.write(
            database,
            Accept(seen, replace(new, pending=True), 0, settle_at_ms, SETTLE_EVERY_MS),
        )
        if not accepted.applied or accepted.item is None:
            return None
        epoch = accepted.item.epoch
        ttl_ms = new.default_ttl_ms
        items = {database: accepted.item}
        refused = []
        for key in keys[1:]:
            sealed = self._items.write(key, Seal(epoch, ttl_ms))
            if sealed.applied and sealed.item is not None:
                items[key] = sealed.item
            else:
                # A later change sealed it first. The rest are sealed all the same: none
                # may keep a limit from before this change once it returns.
                refused.append(key)
        if refused:
            return self._superseded(database, epoch, refused[0], new)
        if new.deleted:
            for key in keys[1:]:
                self._items.delete(key, epoch)  # refused: a later change made it again
            self._items.write(database, Commit(epoch, new))
            return new
        held, borrowed = self._held(database, items)
        limits, pending = plan_items(database, new, held, self._capacity, borrowed)
        for key, limit in limits.items():
            if (limit or key == database) and not self._items.write(
                key, SetLimit(epoch, Quota(limit, ttl_ms))
            ).applied:
                return self._superseded(database, epoch, key, new)
        groups = new.groups
        if groups is not None:
            gone = self._forgotten(database, new, held, epoch)
            groups = groups.without(gone) if gone else groups
        done = replace(new, pending=pending, groups=groups, version=epoch)
        self._items.write(database, Commit(epoch, done))
        return done

    def _superseded(self, database: str, epoch: int, key: str, new: QuotaConfig) -> QuotaConfig:
        """A seal or a limit refused: a later change sealed the item, and its limits stand
        (the root says so); anything else is an item of an earlier life of the quota at a
        later version than its root, which no change can reach."""
        root = self._items.read(database)
        if root is not None and root.epoch > epoch:
            return new
        raise StoreUnavailable(
            "set_quota",
            f"item {key!r} is at a later version than its quota's root (an item left by an"
            " older version): delete it, then set the quota again",
            False,
        )

    def _held(
        self, database: str, items: dict[str, QuotaState]
    ) -> tuple[dict[str, int], dict[int, int]]:
        """What each sealed item holds: its leases live within the skew margin, once the
        entries past it are cleared (so that what an item holds is what its writes count);
        and the pool's leases by the tag of the group that borrowed them."""
        at_ms = self._clock.now_ms() - self._grace_ms
        held: dict[str, int] = {}
        borrowed: dict[int, int] = {}
        for key, sealed in items.items():
            item, dead = sealed, sealed.expired(at_ms)
            if dead:
                cleared = self._items.write(key, Clear(dead))
                item = cleared.item if cleared.applied and cleared.item is not None else item
            live = item.live(at_ms)
            held[key] = len(live)
            if key.split(SHARD_MARK)[0] == database:
                for lease in live:
                    borrowed[lease.tag] = borrowed.get(lease.tag, 0) + 1
        return held, borrowed

    def _forgotten(
        self, database: str, config: QuotaConfig, held: Mapping[str, int], epoch: int
    ) -> list[str]:
        """Retired groups whose items hold nothing: their items go, each only while still
        at this change's version (sealed at 0, they took nothing meanwhile; a later change
        that names the group again keeps them), and the commit forgets them."""
        gone = []
        for rule in config.groups.rules if config.groups is not None else ():
            if not rule.retired:
                continue
            share = Part(reserved_quota(database, rule.group), 0, rule.share_shards)
            keys = share.items + cap_part(database, rule).items
            if any(held.get(key, 0) for key in keys):
                continue
            # A missing item (a cap never made) is gone already; a refused one was sealed
            # by a later change, which keeps the group.
            deleted = [self._items.delete(key, epoch) or key not in held for key in keys]
            if all(deleted):
                gone.append(rule.group)
        return gone
