"""The lease store: per-database quotas of leases, kept so that live leases never exceed the
limit. The facade the helper, the client and the command line call; it composes the layers
below over one storage port (`domain.ports.ItemStore`):

- `domain.item`: the rules of one item (what a grant, a release, a reclaim checks);
- `domain.parts`: a lease in one part of a quota, its key item or its shards;
- `domain.borrowing`: which part a caller's lease goes to (its group's reservation, the
  pool, a capped group's ticket first);
- `domain.changes`: every change of a quota's limit, layout or groups, by one protocol.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import replace

from .borrowing import Ask, Borrowing
from .changes import SETTLE_EVERY_MS, Changes
from .decisions import AcquireResult, Granted, Rejected, ReleaseOutcome, RenewResult
from .errors import InvalidInput, StaleConfiguration, UnknownDatabase
from .groups import Groups, Reservation, check_group, check_reserved_within, reserved_quota
from .item import QuotaConfig, QuotaState
from .model import (
    MAX_LIMIT,
    SKEW_MARGIN_MS,
    GroupStatus,
    GroupsView,
    Lease,
    Quota,
    QuotaStatus,
    check_database,
    check_holder,
    check_limit,
    check_ttl_ms,
    check_wait_ms,
    is_database_name,
)
from .parts import PartLeases, in_shard
from .plan import Part, all_parts, pool_part, reserved_part, share_parts
from .ports import Clock, ItemStore
from .tokens import check_secret, new_secret, parse_token

# How long a store trusts a quota's configuration it read: a change of who is reserved, who
# may borrow or how a part is split reaches its acquirers within this; a change of any
# item's limit holds at once, since each item enforces its own.
CONFIG_CACHE_MS = 5_000


class LeaseStore:
    """Per-database quotas of leases over a store of items. A quota whose limit does not
    fit one item (`shard_capacity` entries) is split over shard items (domain.shards)."""

    def __init__(
        self,
        items: ItemStore,
        clock: Clock,
        secrets: Callable[[], str] = new_secret,
        *,
        shard_capacity: Callable[[str], int] | None = None,
        rng: random.Random | None = None,
        reclaim_grace_ms: int = SKEW_MARGIN_MS,
    ) -> None:
        """`reclaim_grace_ms`: how long after its expiry a lease may be reclaimed (the skew
        margin; tests on one clock may pass 0)."""
        self.items = items
        self.clock = clock
        self._secrets = secrets
        grace_ms = check_wait_ms(reclaim_grace_ms, "reclaim_grace_ms")
        capacity = shard_capacity or (lambda _key: MAX_LIMIT)
        self._parts = PartLeases(items, clock, rng or random.Random(), grace_ms)
        self._changes = Changes(items, clock, capacity, grace_ms)
        self._borrowing = Borrowing(self._parts, clock, self._config)
        self._configs: dict[str, tuple[QuotaConfig, int]] = {}
        # Beside the root's settled_at_ms: spares a refusal the root read that hears "not yet".
        self._settled_at_ms: dict[str, int] = {}

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        """Take a lease if one is free, reclaiming expired ones when the quota looks full.
        The grant's token (`Granted.token`) is what release and renew need.

        A caller may propose the grant's secret (`domain.tokens.new_secret`): the same call
        sent again (a retried request whose answer was lost) then finds its lease instead
        of taking a second one. Such a caller owns the secret: after a StoreUnavailable it
        gives the lease back itself (`release(database, secret)`), since the store cannot
        tell whether another copy of the call holds that lease.

        `group` (domain.groups): a group the quota names takes its reserved leases first,
        then, if it may borrow and is under its max, the pool's; any other caller takes
        the pool's."""
        check_database(database)
        check_holder(holder)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        if group is not None:
            check_group(group)
        if proposed := secret is not None:  # given what status shows of it, at this time
            now_ms = self.clock.now_ms()
            check_secret(secret, holder=holder, database=database, group=group, now_ms=now_ms)
        ask = Ask(database, holder, ttl_ms, secret or self._secrets(), proposed)
        config = self._cached(database)
        if config is None and group is None:
            # Not known yet: tried as a quota in one item, whose answer says what the quota
            # is (no read first: a plain lease stays one write).
            plain = self._borrowing.acquire_plain(ask)
            seen = self._parts.root_seen(database)
            if seen is None or seen.config is None:
                return plain
            config = self._remember(database, seen.config)
            if isinstance(plain, Granted) or not (config.shards or self._settle(config, database)):
                return _named_for(database, config, plain)
        # An item the configuration names may not be made yet (a change is sealing it):
        # after a few reads of the configuration, that is no capacity for now.
        result: AcquireResult = Rejected(database, 0, 0, 0)
        for attempt in range(3):
            if config is None or attempt:
                config = self._config(database, fresh=attempt > 0)
            assert config is not None
            try:
                result = self._borrowing.acquire(
                    ask, config, group, lambda seen: self._settle(seen, database)
                )
            except (UnknownDatabase, StaleConfiguration) as gone:
                if isinstance(gone, UnknownDatabase) and gone.database == database:
                    raise
                continue  # the configuration changed since it was read: read it again
            if isinstance(result, Granted) or not self._refresh_after_refusal(database, config):
                break
        assert config is not None
        return _named_for(database, config, result)

    def _refresh_after_refusal(self, database: str, config: QuotaConfig) -> bool:
        """Refused: worth another try if the root said something new, or a pending change
        could be settled (at most once a second per store; the root keeps the global pace)."""
        seen = self._parts.root_seen(database)
        if seen is not None and seen.config is not None and seen.config != config:
            self._remember(database, seen.config)
            return True
        return self._settle(config, database)

    def _settle(self, config: QuotaConfig, database: str) -> bool:
        """Settle a pending change (domain.changes) after a refusal; True if it was."""
        if not config.pending:
            return False
        now_ms = self.clock.now_ms()
        if now_ms - self._settled_at_ms.get(database, -SETTLE_EVERY_MS) < SETTLE_EVERY_MS:
            return False
        self._settled_at_ms[database] = now_ms
        self._configs.pop(database, None)
        return self._changes.settle(database)

    def release(self, database: str, token: str) -> ReleaseOutcome:
        """Give a lease back. Releasing one that is already gone, or a token that is not
        the current grant's, changes nothing and says ALREADY_RELEASED."""
        check_database(database)
        grant = parse_token(token)
        if grant.group is not None and grant.reserved:
            share = reserved_quota(database, grant.group)
            if self._borrowing.release_in(share, grant):
                return ReleaseOutcome.RELEASED
            self._config(database, fresh=True)  # there is no such quota (any more): said so
            return ReleaseOutcome.ALREADY_RELEASED
        released = self._borrowing.release_in(database, grant)
        if grant.group is not None and grant.ticket is not None:
            # After the lease: the cap counts it for as long as it lives.
            self._borrowing.release_ticket(database, grant)
        if grant.fence is None:
            # A secret alone (its proposer never heard where the grant went): a group's
            # share may hold it, or a group's cap its ticket.
            released = self._borrowing.release_in_groups(database, grant) or released
        if not released:
            self._config(database, fresh=True)  # there is no such quota (any more): said so
        return _outcome(released)

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        """Push a live lease's expiry to now + ttl; a renewal never shortens a lease. An
        expired or unknown lease, or a token not the current grant's, is lost."""
        check_database(database)
        grant = parse_token(token)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        return self._borrowing.renew(database, grant, ttl_ms)

    def status(self, database: str, group: str | None = None) -> QuotaStatus:
        """The quota's use; with `group`, only that group's leases and use (an unknown
        group is an InvalidInput that names the quota's groups)."""
        check_database(database)
        if group is not None:
            check_group(group)
        root = self._root(database)
        assert root.config is not None
        config = self._remember(database, root.config)
        groups = config.groups if config.groups is not None and config.groups.rules else None
        if group is not None and (groups is None or groups.rule(group) is None):
            known = ", ".join(rule.group for rule in groups.active) if groups else ""
            raise InvalidInput(
                "group",
                f"{group!r} is not one of this quota's groups ({known or 'it has none'})",
            )
        status = _status(database, config, self._items_of(root, config), self.clock.now_ms())
        if group is None or status.groups is None:
            return status
        return replace(
            status,
            leases=tuple(lease for lease in status.leases if lease.group == group),
            groups=replace(
                status.groups,
                groups=tuple(view for view in status.groups.groups if view.group == group),
            ),
        )

    def set_quota(
        self, database: str, quota: Quota, groups: Iterable[Reservation] | None = None
    ) -> QuotaStatus:
        """Create or change a database's quota; live leases are kept as they are, and
        leases held past a lowered limit drain as they end (domain.changes). A limit beyond
        one item's capacity splits the quota over shards, for good.

        `groups`: the reservations (domain.groups) that replace the quota's own; None keeps
        them. All of it is checked before anything is written."""
        check_database(database)
        if not isinstance(quota, Quota):
            raise TypeError(f"quota must be a Quota, got {type(quota).__name__}")
        check_limit(quota.limit)
        wanted = None if groups is None else tuple(groups)

        def make(old: QuotaConfig | None) -> QuotaConfig:
            current = old.groups if old is not None else None
            planned: Groups | None
            if wanted is None:
                planned = current
                check_reserved_within(current.reserved if current else 0, quota.limit)
            else:
                planned = (current or Groups()).replaced(wanted, quota.limit)
            if planned is not None and not planned.rules and not planned.last_tag:
                # None ever named; else the record keeps its last tag, never given again.
                planned = None
            base = old or QuotaConfig(quota.limit, quota.default_ttl_ms)
            return replace(
                base, limit=quota.limit, default_ttl_ms=quota.default_ttl_ms, groups=planned
            )

        if wanted is not None:
            Groups().replaced(wanted, quota.limit)  # the reservations alone, before any read
        self._configs.pop(database, None)
        self._remember(database, self._changes.change(database, make))
        return self.status(database)

    def delete_quota(self, database: str) -> bool:
        """Remove a database's quota and its leases, its groups' items with theirs; False
        if there was none. A change like any other (domain.changes): its root stays, saying
        the quota is deleted, so that one made again goes on from its version."""
        check_database(database)
        self._configs.pop(database, None)
        return self._changes.delete(database)

    def databases(self) -> tuple[str, ...]:
        """Every database with a quota, sorted (a full scan of the store: for operators,
        never on a lease's path)."""
        roots = [key for key in self.items.all_keys() if is_database_name(key)]
        found = self.items.read_many(roots)
        return tuple(
            sorted(
                key
                for key, root in found.items()
                if root.config is not None and not root.config.deleted
            )
        )

    def force_release(self, database: str, leases: Iterable[Lease]) -> tuple[Lease, ...]:
        """An operator's release, without the holders' tokens, of leases as status showed
        them (QuotaStatus.named picks them): each is removed only as the grant it was
        then (its fence), so a lease granted anew meanwhile stays. A capped group's
        borrowed lease takes its ticket with it. The leases removed; one that ended
        meanwhile is left out."""
        check_database(database)
        config = self._config(database, fresh=True)
        removed = []
        for lease in leases:
            in_share = bool(lease.group) and not lease.borrowed
            part = reserved_part(database, config, lease.group) if in_share else None
            if in_share and part is None:
                continue  # its group was forgotten, and its leases with it
            if self._borrowing.force_release(
                database, config, part or pool_part(database, config), lease
            ):
                removed.append(lease)
        return tuple(removed)

    def _items_of(self, root: QuotaState, config: QuotaConfig) -> dict[str, QuotaState]:
        """Every item of the quota: its root as read, the rest in one batch read (a quota
        in one item reads one item)."""
        keys = [key for part in all_parts(root.database, config) for key in part.items]
        others = [key for key in keys if key != root.database]
        return {root.database: root} | (self.items.read_many(others) if others else {})

    def _cached(self, database: str) -> QuotaConfig | None:
        seen = self._configs.get(database)
        if seen is None or self.clock.now_ms() - seen[1] >= CONFIG_CACHE_MS:
            return None
        return seen[0]

    def _config(self, database: str, *, fresh: bool = False) -> QuotaConfig:
        seen = self._configs.get(database)
        if fresh or seen is None or self.clock.now_ms() - seen[1] >= CONFIG_CACHE_MS:
            return self._remember(database, self._read_config(database))
        return seen[0]

    def _read_config(self, database: str) -> QuotaConfig:
        config = self._root(database).config
        assert config is not None
        return config

    def _root(self, database: str) -> QuotaState:
        """The quota's root item; UnknownDatabase if there is no quota (or it was deleted)."""
        root = self.items.read(database)
        if root is None or root.config is None or root.config.deleted:
            raise UnknownDatabase(database)
        return root

    def _remember(self, database: str, config: QuotaConfig) -> QuotaConfig:
        self._configs[database] = (config, self.clock.now_ms())
        return config


def _outcome(released: bool) -> ReleaseOutcome:
    return ReleaseOutcome.RELEASED if released else ReleaseOutcome.ALREADY_RELEASED


def _named_for(database: str, config: QuotaConfig, result: AcquireResult) -> AcquireResult:
    """A refusal as the caller knows its quota: by the database's name and limit."""
    if isinstance(result, Rejected):
        return replace(result, database=database, limit=config.limit)
    return result


def _status(
    database: str, config: QuotaConfig, items: dict[str, QuotaState], now_ms: int
) -> QuotaStatus:
    """The quota's status from every item of every part: leases named by where they live
    (a group's reservation, or a pool lease carrying a group's tag: borrowed)."""
    groups = config.groups

    def leases_of(part: Part) -> list[Lease]:
        found = []
        for index, key in enumerate(part.items):
            item = items.get(key)
            for lease in item.leases if item is not None else ():
                found.append(lease if index == 0 else in_shard(index - 1, lease))
        return found

    pool = [_named(lease, groups) for lease in leases_of(pool_part(database, config))]
    leases = list(pool)
    views = []
    rules = groups.rules if groups is not None and groups.rules else ()
    for rule, share in zip(rules, share_parts(database, groups), strict=True):
        reserved = [replace(lease, group=rule.group) for lease in leases_of(share)]
        leases += reserved
        borrowed = sum(1 for lease in pool if lease.tag == rule.tag and lease.is_live(now_ms))
        reservation = rule.reservation
        views.append(
            GroupStatus(
                rule.group,
                reservation.reserved,
                reservation.borrow,
                reservation.max,
                sum(1 for lease in reserved if lease.is_live(now_ms)),
                borrowed,
                rule.retired,
            )
        )
    live = sum(1 for lease in leases if lease.is_live(now_ms))
    pool_live = sum(1 for lease in pool if lease.is_live(now_ms))
    return QuotaStatus(
        database=database,
        limit=config.limit,
        default_ttl_ms=config.default_ttl_ms,
        in_use=live,
        remaining=max(0, config.limit - live),
        expired=len(leases) - live,
        leases=tuple(sorted(leases, key=lambda lease: lease.expires_at_ms)),
        groups=GroupsView(pool_part(database, config).limit, pool_live, tuple(views))
        if rules
        else None,
    )


def _named(lease: Lease, groups: Groups | None) -> Lease:
    """A pool lease as status shows it: a tagged one is a group's, borrowed."""
    rule = groups.by_tag(lease.tag) if groups is not None and lease.tag else None
    return lease if rule is None else replace(lease, group=rule.group, borrowed=True)
