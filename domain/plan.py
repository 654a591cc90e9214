"""What a change gives each item of a quota (domain.changes): the quota's parts and
their items, and the limits that keep live leases within the quota's limit, each
reservation and each capped group's max, whatever drains and refills (docs/design.md,
"Changes", steps 3 and 4). Pure: no store, no clock."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .groups import GroupRule, Groups, cap_quota, reserved_quota
from .item import QuotaConfig
from .shards import plan_shares, shard_item


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


def share_part(database: str, rule: GroupRule) -> Part:
    """A group's reservation (0 once retired)."""
    reserved = 0 if rule.retired else rule.reservation.reserved
    return Part(reserved_quota(database, rule.group), reserved, rule.share_shards)


def share_parts(database: str, groups: Groups | None) -> list[Part]:
    """Each group's reservation, in the order of its rules."""
    return [share_part(database, rule) for rule in (groups.rules if groups is not None else ())]


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
    rule = config.groups.named(group) if config.groups is not None else None
    return None if rule is None else share_part(database, rule)


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
