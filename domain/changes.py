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

from collections.abc import Callable, Mapping
from dataclasses import replace

from .errors import CorruptQuota, StoreUnavailable
from .item import Accept, Clear, Commit, QuotaConfig, QuotaState, Seal, SetLimit
from .model import Quota
from .plan import Part, all_parts, cap_part, plan_items, pool_part, shards_needed, share_part
from .ports import Clock, ItemStore
from .shards import SHARD_MARK

# A change read again after losing the race for the root, at most this many times.
CHANGE_ATTEMPTS = 6
# A pending change is settled by refused acquirers at most this often (the root says when).
SETTLE_EVERY_MS = 1_000


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
            floor = old.fence_floor if old is not None else 0
            if old is not None and old.deleted:
                old = None  # made again: a new life, on the versions and fences of the last
            # A change is a settle too: refused acquirers need not settle it again at once.
            new = replace(
                make(old), settled_at_ms=self._clock.now_ms(), deleted=False, fence_floor=floor
            )
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
            gone = QuotaConfig(
                0, root.config.default_ttl_ms, deleted=True, fence_floor=root.config.fence_floor
            )
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
        """`new` with each part split over as many shards as its limit needs, and a group
        given a cap marked as capped (its cap's items are made, kept until it is forgotten)."""
        shards = self._shards(pool_part(database, new), old.shards if old else 0)
        groups = new.groups
        if groups is not None:
            rules = []
            for rule in groups.rules:
                cap = cap_part(database, rule)
                rules.append(
                    replace(
                        rule,
                        capped=rule.capped or cap.limit > 0,
                        share_shards=self._shards(share_part(database, rule), rule.share_shards),
                        cap_shards=self._shards(cap, rule.cap_shards),
                    )
                )
            groups = replace(groups, rules=tuple(rules))
        return replace(new, shards=shards, groups=groups, pending=False)

    def _shards(self, part: Part, existing: int) -> int:
        return shards_needed(part, self._capacity(part.key), existing)

    def _run(
        self, database: str, root: QuotaState | None, new: QuotaConfig, settle_at_ms: int | None
    ) -> QuotaConfig | None:
        """One attempt: the configuration it left (what its commit said), or None if another
        change was accepted first."""
        seen = root.epoch if root is not None else 0
        old = root.config if root is not None else None
        parts = all_parts(database, new) + (all_parts(database, old) if old else [])
        keys = list(dict.fromkeys(key for part in parts for key in part.items))
        if keys == [database] and not new.deleted:
            # One item: its own limit is the quota's, and it keeps it by itself.
            new = replace(new, pending=False, version=seen + 1)
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
            sealed = self._items.write(key, Seal(epoch, ttl_ms, new.fence_floor))
            if sealed.applied and sealed.item is not None:
                items[key] = sealed.item
            else:
                # A later change sealed it first. The rest are sealed all the same: none
                # may keep a limit from before this change once it returns.
                refused.append(key)
        if refused:
            return self._superseded(database, epoch, refused[0], new)
        # Sealed, no item grants: their fences are final until this change sets limits.
        floor = max(new.fence_floor, *(item.fence for item in items.values()))
        new = replace(new, fence_floor=floor)
        if new.deleted:
            # The floor first: once the items are gone, only the root knows their fences.
            if self._floor_first(database, Commit(epoch, new)):
                for key in keys[1:]:
                    self._items.delete(key, epoch)  # refused: a later change made it again
            return new
        return self._set(database, epoch, items, new)

    def _set(
        self, database: str, epoch: int, items: dict[str, QuotaState], new: QuotaConfig
    ) -> QuotaConfig:
        """Steps 3 to 6 of an accepted change whose items are sealed: what its commit said."""
        ttl_ms = new.default_ttl_ms
        held, borrowed = self._held(database, items)
        limits, pending = plan_items(database, new, held, self._capacity, borrowed)
        for key, limit in limits.items():
            if (limit or key == database) and not self._items.write(
                key, SetLimit(epoch, Quota(limit, ttl_ms))
            ).applied:
                return self._superseded(database, epoch, key, new)
        groups = new.groups
        if groups is not None and any(rule.retired for rule in groups.rules):
            # The floor first, as for a deletion: a forgotten group's items are deleted.
            floored = Commit(epoch, replace(new, pending=True, version=epoch))
            if not self._floor_first(database, floored):
                return self._superseded(database, epoch, database, new)
        if groups is not None:
            gone = self._forgotten(database, new, held, borrowed, epoch)
            groups = groups.without(gone) if gone else groups
        done = replace(new, pending=pending, groups=groups, version=epoch)
        self._items.write(database, Commit(epoch, done))
        return done

    def _floor_first(self, database: str, commit: Commit) -> bool:
        """Commit the fence floor before items are deleted; False if a later change was
        accepted first: nothing may be deleted then (it seals the items and goes on from
        their fences, which only they know until a commit of its own)."""
        return self._items.write(database, commit).applied

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
        self,
        database: str,
        config: QuotaConfig,
        held: Mapping[str, int],
        borrowed: Mapping[int, int],
        epoch: int,
    ) -> list[str]:
        """Retired groups whose items hold nothing and that hold no borrowed pool lease (a
        group named again gets a new tag: those would no longer count against its max):
        their items go, each only while still at this change's version (sealed at 0, they
        took nothing meanwhile; a later change that names the group again keeps them), and
        the commit forgets them."""
        gone = []
        for rule in config.groups.rules if config.groups is not None else ():
            if not rule.retired or borrowed.get(rule.tag, 0):
                continue
            keys = share_part(database, rule).items + cap_part(database, rule).items
            if any(held.get(key, 0) for key in keys):
                continue
            # A missing item (a cap never made) is gone already; a refused one was sealed
            # by a later change, which keeps the group.
            deleted = [self._items.delete(key, epoch) or key not in held for key in keys]
            if all(deleted):
                gone.append(rule.group)
        return gone
