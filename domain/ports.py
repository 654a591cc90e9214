"""The ports: what the domain needs from a lease store, a clock and a metrics sink.

As in cosmicpython, a port's public methods do the shared work (input checks, the acquire
loop) and call private hooks that each adapter implements, so every store behaves alike.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from .decisions import (
    AcquireResult,
    AddLease,
    Granted,
    LeaseLost,
    Reclaim,
    Rejected,
    ReleaseOutcome,
    Renewed,
    RenewResult,
    plan_acquire,
)
from .errors import ConnleaseError, CorruptQuota, InvalidInput, StoreUnavailable, UnknownDatabase
from .groups import (
    TICKET_SLACK_MS,
    GroupRule,
    Groups,
    GroupStatus,
    GroupsView,
    Reservation,
    cap_quota,
    check_group,
    plan_limits,
    reserved_quota,
)
from .model import (
    MAX_LIMIT,
    MIN_TTL_MS,
    SKEW_MARGIN_MS,
    Lease,
    Quota,
    QuotaState,
    QuotaStatus,
    ShardLayout,
    check_database,
    check_holder,
    check_limit,
    check_ttl_ms,
    check_wait_ms,
    is_database_name,
)
from .shards import parse_shard_lease_id, shard_item, shard_lease_id
from .split_quota import SplitQuotas, in_shard
from .tokens import Token, check_secret, lease_id_of, lease_key, new_secret, parse_token

# How long a store trusts a quota's groups it read: a change of groups (who is reserved,
# who may borrow) reaches its acquirers within this; a change of any share's limit at once.
GROUPS_CACHE_MS = 5_000
# A change of groups that left a share past its own holds the others down; an acquirer
# refused meanwhile raises them as far as that share has drained, at most this often.
SETTLE_EVERY_MS = 1_000
# A conditional write loses only to another write that changed the item; a handful of
# rounds settles any realistic race, and the caller's backoff covers the rest.
MAX_WRITE_ATTEMPTS = 8


class Clock(ABC):
    @abstractmethod
    def now_ms(self) -> int:
        """Epoch milliseconds."""

    @abstractmethod
    def sleep_ms(self, ms: int) -> None: ...


class Metric(StrEnum):
    REMAINING_CONNECTIONS = "RemainingConnections"
    NO_CONNECTIONS_LEFT = "NoConnectionsLeftError"
    LEASES_ACQUIRED = "LeasesAcquired"
    LEASES_RELEASED = "LeasesReleased"
    LEASES_RECLAIMED = "LeasesReclaimed"
    ACQUIRE_WAIT_MS = "AcquireWaitMs"
    # Per group (domain.groups), beside the database: what is left of its reservation after
    # a reserved grant, and each lease it borrowed from the pool.
    REMAINING_RESERVED = "RemainingReserved"
    LEASES_BORROWED = "LeasesBorrowed"
    # An operator's force-release (connlease release): each lease removed without its token.
    LEASES_FORCE_RELEASED = "LeasesForceReleased"


class MetricsSink(ABC):
    @abstractmethod
    def record(self, metric: Metric, value: float, database: str, group: str | None = None) -> None:
        """Record one value for the database; with `group`, for that group of it."""


@dataclass(frozen=True, slots=True)
class NewLease:
    """A lease an acquirer wants; `ttl_ms` None means the quota's default."""

    id: str
    holder: str
    ttl_ms: int | None
    tag: int = 0  # a group's pool lease: the group's tag (domain.groups.GroupRule)


@dataclass(frozen=True, slots=True)
class Write:
    """The outcome of one conditional write: applied or not, and the item it saw or left."""

    applied: bool
    state: QuotaState


class Leases(Protocol):
    """What a caller needs to take and give back leases: a store in-process, or the helper
    function over Lambda invoke."""

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult: ...

    def release(self, database: str, token: str) -> ReleaseOutcome: ...

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult: ...


def with_token(
    result: AcquireResult,
    secret: str,
    *,
    group: str | None = None,
    reserved: bool = False,
    ticket: Token | None = None,
) -> AcquireResult:
    """A grant with the token only its holder learns: the secret, the fence, the shard,
    and for a group's lease where it lives."""
    if not isinstance(result, Granted):
        return result
    token = replace(_token_of(result, secret), group=group, reserved=reserved, ticket=ticket)
    return replace(result, token=str(token))


def _token_of(granted: Granted, secret: str) -> Token:
    shard = parse_shard_lease_id(granted.lease.id)
    return Token(secret, granted.lease.fence, None if shard is None else shard[0])


def _refused(database: str, refusals: list[Rejected]) -> Rejected:
    """A group's refusal: as full as its last step found, and worth retrying when the
    first of its steps could have room again."""
    last = refusals[-1] if refusals else Rejected(database, 0, 0, 0)
    retry = min((refusal.retry_after_ms for refusal in refusals), default=0)
    return Rejected(database, last.limit, last.in_use, retry)


def _ours(lease: Lease, wanted: NewLease, now_ms: int) -> bool:
    """A stored lease with a proposed id is this caller's only if it is still live and
    names the same holder; anything else is someone else's (or a stale copy's)."""
    return lease.is_live(now_ms) and lease.holder == wanted.holder


class LeaseStore(ABC):
    """Per-database quotas of leases, kept so that live leases never exceed the limit.

    A quota whose limit does not fit one item (`shard_capacity` entries) is split over
    shard items (`domain.shards`); the hooks address an item by its key, the database's
    own or a shard's, and the methods here do the rest the same way for every store."""

    def __init__(
        self,
        clock: Clock,
        secrets: Callable[[], str] = new_secret,
        *,
        shard_capacity: Callable[[str], int] | None = None,
        rng: random.Random | None = None,
        reclaim_grace_ms: int = SKEW_MARGIN_MS,
    ) -> None:
        """`reclaim_grace_ms`: how long after its expiry a lease may be reclaimed (the skew
        margin; tests on one clock may pass 0)."""
        self._clock = clock
        self._secrets = secrets
        self._shard_capacity = shard_capacity or (lambda _database: MAX_LIMIT)
        self._reclaim_grace_ms = check_wait_ms(reclaim_grace_ms, "reclaim_grace_ms")
        self._split = SplitQuotas(
            self, clock, self._shard_capacity, rng or random.Random(), self._reclaim_grace_ms
        )
        # By database: its groups, its default TTL, and when they were read.
        self._groups_seen: dict[str, tuple[Groups, int, int]] = {}
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
        the pool's.
        """
        check_database(database)
        check_holder(holder)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        if group is not None:
            check_group(group)
        proposed = secret is not None
        secret = self._secrets() if secret is None else check_secret(secret)
        for settling in (False, True):
            rule = None if group is None else self._groups_of(database).rule(group)
            if rule is None:
                wanted = NewLease(lease_key(database, secret), holder, ttl_ms)
                result = with_token(self._acquire_in(database, wanted, proposed), secret)
            else:
                try:
                    result = self._acquire_group(
                        database,
                        rule,
                        holder=holder,
                        ttl_ms=ttl_ms,
                        secret=secret,
                        proposed=proposed,
                    )
                except UnknownDatabase as gone:
                    if gone.database == database:
                        raise
                    # A share forgotten since this store read the groups: read them again.
                    self._groups_seen.pop(database, None)
                    continue
            # Refused while a change of groups holds shares down: settle it, and try again.
            if settling or isinstance(result, Granted) or not self._pending(database):
                break
            if not self._settle(database):
                break
        return result

    def _saw_root(self, state: QuotaState) -> None:
        """A root item with groups, read or written for any reason: what it says of them
        is news (a plain caller on a split pool may touch the root only that way)."""
        if state.groups is not None:
            ttl_ms = state.quota.default_ttl_ms
            self._groups_seen[state.database] = (state.groups, ttl_ms, self._clock.now_ms())

    def _pending(self, database: str) -> bool:
        """Whether a change of the quota's groups is pending, as this store last saw the
        root (no read of its own: a quota without groups pays nothing for this)."""
        seen = self._groups_seen.get(database)
        return seen is not None and seen[0].pending

    def _acquire_in(self, quota: str, wanted: NewLease, proposed: bool) -> AcquireResult:
        """Take `wanted` in one quota: the database's own (the pool) or a group's share."""
        layout = self._split.known_layout(quota)
        if layout is None:
            taken = self._take_on(quota, wanted, proposed=proposed)
            if not isinstance(taken, ShardLayout):
                return taken
            layout = self._split.remember(quota, taken)
        return self._split.take(quota, layout, wanted, proposed)

    def _acquire_group(
        self,
        database: str,
        rule: GroupRule,
        *,
        holder: str,
        ttl_ms: int | None,
        secret: str,
        proposed: bool,
    ) -> AcquireResult:
        group = rule.group
        refusals: list[Rejected] = []
        if rule.reservation.reserved:
            share = reserved_quota(database, group)
            wanted = NewLease(lease_key(share, secret), holder, ttl_ms)
            taken = self._acquire_in(share, wanted, proposed)
            if (
                not isinstance(taken, Granted)
                and self._pending(database)
                and self._settle(database)
            ):
                # Its share held down by a change: settled first, or it would borrow from the
                # pool that others are entitled to while its own reservation idles.
                taken = self._acquire_in(share, wanted, proposed)
            if isinstance(taken, Granted):
                lease = replace(taken.lease, group=group)
                return with_token(replace(taken, lease=lease), secret, group=group, reserved=True)
            refusals.append(taken)
        cap = rule.reservation.borrow_cap
        if cap == 0:
            return _refused(database, refusals)
        if cap is not None:
            return self._borrow_capped(
                database,
                rule,
                refusals,
                holder=holder,
                ttl_ms=ttl_ms,
                secret=secret,
                proposed=proposed,
            )
        wanted = NewLease(lease_key(database, secret), holder, ttl_ms, tag=rule.tag)
        taken = self._acquire_in(database, wanted, proposed)
        if isinstance(taken, Granted):
            lease = replace(taken.lease, group=group, borrowed=True)
            return with_token(replace(taken, lease=lease), secret, group=group)
        return _refused(database, [*refusals, taken])

    def _borrow_capped(
        self,
        database: str,
        rule: GroupRule,
        refusals: list[Rejected],
        *,
        holder: str,
        ttl_ms: int | None,
        secret: str,
        proposed: bool,
    ) -> AcquireResult:
        """A pool lease for a capped group: a ticket in its cap first, then the lease."""
        group, capped = rule.group, cap_quota(database, rule.group)
        # The lease gets the TTL the ticket is sized from, not the pool item's default at
        # the time of the write, which an operator may have raised since it was read.
        ttl_ms = ttl_ms if ttl_ms is not None else self._default_ttl_ms(database)
        held = self._acquire_in(
            capped,
            NewLease(lease_key(capped, secret), holder, ttl_ms + TICKET_SLACK_MS),
            proposed,
        )
        if not isinstance(held, Granted):
            return _refused(database, [*refusals, held])
        ticket = _token_of(held, secret)
        wanted = NewLease(lease_key(database, secret), holder, ttl_ms, tag=rule.tag)
        try:
            taken = self._acquire_in(database, wanted, proposed)
        except ConnleaseError:
            if not proposed:
                with suppress(ConnleaseError):
                    self._release_in(capped, ticket)
            raise
        covered = isinstance(taken, Granted) and self._ticket_covers(
            database, group, ticket, held.lease.expires_at_ms, taken.lease.expires_at_ms
        )
        if not isinstance(taken, Granted) or not covered:
            # No lease after all, or one its ticket could not be made to outlive: neither
            # is kept (or each ends at its TTL).
            with suppress(ConnleaseError):
                if isinstance(taken, Granted):
                    self._release_in(database, _token_of(taken, secret))
                self._release_in(capped, ticket)
            refusal = taken if isinstance(taken, Rejected) else Rejected(database, 0, 0, 0)
            return _refused(database, [*refusals, refusal])
        lease = replace(taken.lease, group=group, borrowed=True)
        return with_token(replace(taken, lease=lease), secret, group=group, ticket=ticket)

    def _ticket_covers(
        self, database: str, group: str, ticket: Token, ticket_until_ms: int, lease_until_ms: int
    ) -> bool:
        """Whether the ticket outlives the lease by the slack, extended if it must be (the
        lease's write came late: a retry, a throttle, a split pool's search)."""
        needed_ms = lease_until_ms + TICKET_SLACK_MS
        if ticket_until_ms >= needed_ms:
            return True
        ttl_ms = max(MIN_TTL_MS, needed_ms - self._clock.now_ms())
        try:
            renewed = self._renew_quota(cap_quota(database, group), ticket, ttl_ms)
        except UnknownDatabase:
            return False
        return isinstance(renewed, Renewed) and renewed.lease.expires_at_ms >= needed_ms

    def _groups_of(self, database: str) -> Groups:
        """The quota's groups as this store last read them (at most GROUPS_CACHE_MS ago):
        a change of groups reaches acquirers within that; each share's limit holds at once."""
        seen = self._groups_seen.get(database)
        now_ms = self._clock.now_ms()
        if seen is None or now_ms - seen[2] >= GROUPS_CACHE_MS:
            root = self._read(database)
            seen = (root.groups or Groups(), root.quota.default_ttl_ms, now_ms)
            self._groups_seen[database] = seen
        return seen[0]

    def _default_ttl_ms(self, database: str) -> int:
        self._groups_of(database)
        return self._groups_seen[database][1]

    def _take_on(
        self, item: str, wanted: NewLease, *, proposed: bool = False, note: bool = True
    ) -> AcquireResult | ShardLayout:
        try:
            return self._take(item, wanted, note=note)
        except StoreUnavailable:
            # A write whose answer was lost may have taken the lease: give it back rather
            # than leave a slot held that nobody knows about until its TTL (if the store is
            # still down this fails too, and the TTL is the bound). A proposed id is the
            # proposer's to give back: another copy of its call may hold that lease.
            if not proposed:
                with suppress(ConnleaseError):
                    self._remove(item, wanted.id, None)
            raise

    def _take(
        self, item: str, wanted: NewLease, *, note: bool = True
    ) -> AcquireResult | ShardLayout:
        """Take `wanted` in one item; a split quota's root answers with its layout when its
        own share (the leases it held before the split) has no room."""
        plan: AddLease | Reclaim = AddLease()
        reclaimed: tuple[Lease, ...] = ()
        for _ in range(MAX_WRITE_ATTEMPTS):
            now_ms = self._clock.now_ms()
            if isinstance(plan, Reclaim):
                write = self._reclaim(item, plan, wanted if plan.grant else None, now_ms)
                if write.applied:
                    reclaimed += plan.victims
            else:
                write = self._add(item, wanted, now_ms)
            lease = write.state.find(wanted.id)
            if lease is not None:
                if write.applied or _ours(lease, wanted, now_ms):
                    # Found after a refusal too: an earlier attempt of this call (a retried
                    # request whose answer was lost) took it.
                    return Granted(
                        lease,
                        # What may be granted now: a lease within its skew margin counts.
                        write.state.remaining(now_ms - self._reclaim_grace_ms),
                        reclaimed,
                        write.state.others_waiting(now_ms),
                    )
                raise InvalidInput(
                    "secret",
                    "is another holder's, or its last grant ended unreleased and is not yet"
                    " reclaimed: use a new secret",
                )
            self._saw_root(write.state)
            # A lease is reclaimed only a skew margin after its expiry (docs/design.md).
            next_step = plan_acquire(write.state, now_ms - self._reclaim_grace_ms)
            if isinstance(next_step, Rejected):
                if write.state.layout is not None:
                    return write.state.layout
                if note and write.state.wanted_note_stale(now_ms):
                    # Advisory: the refusal stands whether or not the note lands.
                    with suppress(ConnleaseError):
                        self._note_wanted(item, now_ms)
                return next_step
            plan = next_step
        state = write.state
        return Rejected(
            state.database, state.quota.limit, len(state.live(now_ms)), retry_after_ms=0
        )

    def release(self, database: str, token: str) -> ReleaseOutcome:
        """Give a lease back. Releasing one that is already gone, or a token that is not
        the current grant's, changes nothing and says ALREADY_RELEASED."""
        check_database(database)
        grant = parse_token(token)
        if grant.group is not None and grant.reserved:
            try:
                return self._release_in(reserved_quota(database, grant.group), grant)
            except UnknownDatabase:
                self._read(database)  # the database's quota exists: the group was forgotten
                return ReleaseOutcome.ALREADY_RELEASED
        outcome = self._release_in(database, grant)
        if grant.group is not None and grant.ticket is not None:
            # After the lease: the cap counts it for as long as it lives.
            with suppress(UnknownDatabase):  # the group's cap is gone, and its tickets
                self._release_in(cap_quota(database, grant.group), grant.ticket)
        # A secret alone (its proposer never heard where the grant went): a group's share
        # may hold it, or a group's cap its ticket.
        in_groups = grant.fence is None and self._release_in_groups(database, grant)
        return ReleaseOutcome.RELEASED if in_groups is ReleaseOutcome.RELEASED else outcome

    def _release_in(self, quota: str, grant: Token) -> ReleaseOutcome:
        key = lease_key(quota, grant.secret)
        if grant.shard is not None and self._remove_in_shard(quota, grant.shard, key, grant.fence):
            return ReleaseOutcome.RELEASED
        if self._remove(quota, key, grant.fence):
            return ReleaseOutcome.RELEASED
        if grant.shard is None and self._split.release_by_key(quota, key, grant.fence):
            return ReleaseOutcome.RELEASED
        return ReleaseOutcome.ALREADY_RELEASED

    def _release_in_groups(self, database: str, grant: Token) -> ReleaseOutcome:
        outcome = ReleaseOutcome.ALREADY_RELEASED
        groups = self._read(database).groups
        for rule in groups.rules if groups is not None else ():
            with suppress(UnknownDatabase):
                if self._release_in(reserved_quota(database, rule.group), grant) is (
                    ReleaseOutcome.RELEASED
                ):
                    outcome = ReleaseOutcome.RELEASED
            with suppress(UnknownDatabase):  # a borrowed lease's ticket, if it took one
                self._release_in(cap_quota(database, rule.group), grant)
        return outcome

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        """Push a live lease's expiry to now + ttl; a renewal never shortens a lease. An
        expired or unknown lease, or a token not the current grant's, is lost."""
        check_database(database)
        grant = parse_token(token)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        if grant.group is None:
            return self._renew_untracked(database, grant, ttl_ms)
        if grant.reserved:
            return self._renew_reserved(database, grant, ttl_ms)
        ticket_until_ms = None
        if grant.ticket is not None:
            # The ticket first, and longer: the cap counts the lease while it lives.
            ttl_ms = ttl_ms or self._read(database).quota.default_ttl_ms
            ticket_until_ms = self._ticket_renewed(database, grant.group, grant.ticket, ttl_ms)
            if ticket_until_ms is None:
                return LeaseLost(lease_id_of(database, grant))
        renewed = self._renew_quota(database, grant, ttl_ms)
        if grant.ticket is not None and (
            isinstance(renewed, LeaseLost)
            or not self._ticket_covers(
                database,
                grant.group,
                grant.ticket,
                ticket_until_ms or 0,
                renewed.lease.expires_at_ms,
            )
        ):
            with suppress(ConnleaseError):
                if isinstance(renewed, Renewed):  # it would outlive its ticket: it ends now
                    self._release_in(database, grant)
                self._release_in(cap_quota(database, grant.group), grant.ticket)
            return LeaseLost(lease_id_of(database, grant))
        if isinstance(renewed, LeaseLost):
            return renewed
        return replace(renewed, lease=replace(renewed.lease, group=grant.group, borrowed=True))

    def _renew_untracked(self, database: str, grant: Token, ttl_ms: int | None) -> RenewResult:
        """A pool lease whose token names no group: a plain one, or a group's borrowed lease
        taken without a ticket. One of a group that is capped now (or may not borrow) is not
        renewed but given back, so that leases taken before its cap drain."""
        renewed = self._renew_quota(database, grant, ttl_ms)
        if not isinstance(renewed, Renewed) or not renewed.lease.tag:
            return renewed
        groups = self._groups_of(database)
        rule = groups.by_tag(renewed.lease.tag)
        if rule is not None and not rule.retired and rule.reservation.borrow_cap is not None:
            with suppress(ConnleaseError):
                self._release_in(database, grant)
            return LeaseLost(renewed.lease.id)
        return replace(renewed, lease=_named(renewed.lease, groups))

    def _ticket_renewed(self, database: str, group: str, ticket: Token, ttl_ms: int) -> int | None:
        """The renewed ticket's expiry; None if it is lost."""
        try:
            renewed = self._renew_quota(
                cap_quota(database, group), ticket, ttl_ms + TICKET_SLACK_MS
            )
        except UnknownDatabase:  # the group's cap is gone, and its tickets with it
            return None
        return renewed.lease.expires_at_ms if isinstance(renewed, Renewed) else None

    def _renew_reserved(self, database: str, grant: Token, ttl_ms: int | None) -> RenewResult:
        assert grant.group is not None
        try:
            renewed = self._renew_quota(reserved_quota(database, grant.group), grant, ttl_ms)
        except UnknownDatabase:
            self._read(database)  # the database's quota exists: the group was forgotten
            return LeaseLost(lease_id_of(database, grant))
        if isinstance(renewed, Renewed):
            return replace(renewed, lease=replace(renewed.lease, group=grant.group))
        return renewed

    def _renew_quota(self, quota: str, grant: Token, ttl_ms: int | None) -> RenewResult:
        key = lease_key(quota, grant.secret)
        if grant.shard is not None:
            with suppress(UnknownDatabase):
                renewed = self._renew_in(shard_item(quota, grant.shard), key, grant, ttl_ms)
                if isinstance(renewed, Renewed):
                    return replace(renewed, lease=in_shard(grant.shard, renewed.lease))
            return LeaseLost(shard_lease_id(grant.shard, key))
        renewed = self._renew_in(quota, key, grant, ttl_ms)
        return renewed if isinstance(renewed, Renewed) else LeaseLost(key)

    def _renew_in(self, item: str, key: str, grant: Token, ttl_ms: int | None) -> RenewResult:
        if ttl_ms is None:
            ttl_ms = self._read(item).quota.default_ttl_ms  # the quota's default, as granted
        now_ms = self._clock.now_ms()
        expires_at_ms = now_ms + ttl_ms
        write = self._extend(item, key, grant.fence, expires_at_ms, now_ms)
        lease = write.state.find(key)
        if (
            lease is None
            or not lease.is_live(now_ms)
            or grant.fence not in (None, lease.fence)
            # Refused with the lease already longer: it stays as it is, never shortened.
            or not (write.applied or lease.expires_at_ms >= expires_at_ms)
        ):
            return LeaseLost(key)
        remaining = write.state.remaining(now_ms - self._reclaim_grace_ms)
        return Renewed(lease, remaining, write.state.others_waiting(now_ms))

    def status(self, database: str, group: str | None = None) -> QuotaStatus:
        """The quota's use; with `group`, only that group's leases and use (an unknown
        group is an InvalidInput that names the quota's groups)."""
        check_database(database)
        if group is not None:
            check_group(group)
        root = self._read(database)
        self._saw_root(root)
        pool = self._status_of(root)
        groups = root.groups if root.groups is not None and root.groups.rules else None
        if group is not None and (groups is None or groups.rule(group) is None):
            known = ", ".join(rule.group for rule in groups.active) if groups else ""
            raise InvalidInput(
                "group",
                f"{group!r} is not one of this quota's groups ({known or 'it has none'})",
            )
        if groups is None:
            return pool
        status = self._with_groups(groups, pool)
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

    def databases(self) -> tuple[str, ...]:
        """Every database with a quota, sorted (a full scan of the store: for operators,
        never on a lease's path)."""
        return tuple(sorted(key for key in self._quota_keys() if is_database_name(key)))

    def force_release(self, database: str, leases: Iterable[Lease]) -> tuple[Lease, ...]:
        """An operator's release, without the holders' tokens, of leases as status showed
        them (QuotaStatus.named picks them): each is removed only as the grant it was
        then (its fence), so a lease granted anew meanwhile stays. The leases removed; one
        that ended meanwhile is left out.

        A capped group's borrowed lease also holds a ticket in the group's cap, whose key
        comes from its holder's secret, which the store never learns: once a holder has
        no borrowed lease of the group left, its tickets there are orphans, and go too.
        Otherwise a ticket ends at its holder's next renewal (the lease is lost) or at its
        expiry, a second after the lease's."""
        check_database(database)
        removed = []
        for lease in leases:
            # A group's reserved lease lives in the group's share; the rest in the pool.
            in_share = bool(lease.group) and not lease.borrowed
            quota = reserved_quota(database, lease.group) if in_share else database
            if self._remove_lease(quota, lease):
                removed.append(lease)
        borrowers = {(lease.group, lease.holder) for lease in removed if lease.borrowed}
        if any(holder for _, holder in borrowers):
            self._remove_orphan_tickets(database, borrowers)
        return tuple(removed)

    def _remove_lease(self, quota: str, lease: Lease) -> bool:
        # An entry from before fences has none: removed whatever it is.
        fence = lease.fence or None
        shard = parse_shard_lease_id(lease.id)
        if shard is not None:
            return self._remove_in_shard(quota, shard[0], shard[1], fence)
        with suppress(UnknownDatabase):  # its share went: so did the lease
            return self._remove(quota, lease.id, fence)
        return False

    def _remove_in_shard(self, quota: str, shard: int, key: str, fence: int | None) -> bool:
        """Remove a split quota's entry from its shard; False if it was not there (or the
        shard is gone: the quota was split anew since)."""
        with suppress(UnknownDatabase):
            if self._remove(shard_item(quota, shard), key, fence):
                self._split.freed(quota, shard)
                return True
        return False

    def _remove_orphan_tickets(self, database: str, borrowers: set[tuple[str, str]]) -> None:
        """The tickets of holders (by name; an empty one names nobody) that hold no
        borrowed lease of the group any more."""
        still = {
            (lease.group, lease.holder) for lease in self.status(database).leases if lease.borrowed
        }
        now_ms = self._clock.now_ms()
        for group, holder in borrowers - still:
            cap = self._share_status(cap_quota(database, group)) if holder else None
            for ticket in cap.leases if cap is not None else ():
                if ticket.holder == holder and ticket.is_live(now_ms):
                    self._remove_lease(cap_quota(database, group), ticket)

    def _status_of(self, root: QuotaState) -> QuotaStatus:
        if root.layout is None:
            return root.status(self._clock.now_ms())
        return self._split.status(root)

    def _share_status(self, quota: str) -> QuotaStatus | None:
        try:
            return self._status_of(self._read(quota))
        except UnknownDatabase:
            return None

    def _with_groups(self, groups: Groups, pool: QuotaStatus) -> QuotaStatus:
        """The pool's status with every group's share added, and each lease named by its
        group (a tag on a pool lease: borrowed)."""
        now_ms = self._clock.now_ms()
        leases = [_named(lease, groups) for lease in pool.leases]
        in_use, expired = pool.in_use, pool.expired
        views = []
        for rule in groups.rules:
            share = self._share_status(reserved_quota(pool.database, rule.group))
            reserved_in_use = 0
            if share is not None:
                leases += [replace(lease, group=rule.group) for lease in share.leases]
                in_use += share.in_use
                expired += share.expired
                reserved_in_use = share.in_use
            borrowed = sum(
                1 for lease in pool.leases if lease.tag == rule.tag and lease.is_live(now_ms)
            )
            reservation = rule.reservation
            views.append(
                GroupStatus(
                    rule.group,
                    reservation.reserved,
                    reservation.borrow,
                    reservation.max,
                    reserved_in_use,
                    borrowed,
                    rule.retired,
                )
            )
        limit = groups.limit or pool.limit + groups.reserved
        return replace(
            pool,
            limit=limit,
            in_use=in_use,
            remaining=max(0, limit - in_use),
            expired=expired,
            leases=tuple(sorted(leases, key=lambda lease: lease.expires_at_ms)),
            groups=GroupsView(pool.limit, pool.in_use, tuple(views)),
        )

    def set_quota(
        self, database: str, quota: Quota, groups: Iterable[Reservation] | None = None
    ) -> QuotaStatus:
        """Create or change a database's quota; live leases are kept as they are. A limit
        beyond one item's capacity splits the quota over shards (for good: lowering it again
        keeps the shards, with smaller shares).

        `groups`: the reservations (domain.groups) that replace the quota's own; None keeps
        them. All of it is checked before anything is written. Shares are lowered before
        any is raised, so that at every moment they sum to no more than the larger of the
        old and the new limit; leases held past a lowered share drain as they end."""
        check_database(database)
        if not isinstance(quota, Quota):
            raise TypeError(f"quota must be a Quota, got {type(quota).__name__}")
        check_limit(quota.limit)
        try:
            root: QuotaState | None = self._read(database)
        except UnknownDatabase:
            root = None
        except CorruptQuota:
            if groups is not None:
                raise  # groups are set on a sound item: set the quota alone first
            root = None  # the write below repairs it
        current = root.groups if root is not None else None
        if groups is not None:
            groups = tuple(groups)
        planned: Groups | None
        if current is None and not groups:
            planned = None  # no groups before or after: a plain quota
        elif groups is None:
            assert current is not None
            planned = current.within(quota.limit)
        else:
            planned = (current or Groups()).replaced(groups, quota.limit)
        self._groups_seen.pop(database, None)
        if planned is None:
            self._set_limit(database, quota, root)
        else:
            self._set_groups(database, quota, root, planned)
        return self.status(database)

    def _set_groups(
        self, database: str, quota: Quota, root: QuotaState | None, planned: Groups
    ) -> None:
        ttl_ms = quota.default_ttl_ms
        seen = root.groups.version if root is not None and root.groups is not None else 0
        # New shares (and a new quota's pool) start empty and rise with the others.
        for share in [database] if root is None else []:
            self._set_limit(share, Quota(0, ttl_ms))
        for rule in planned.rules:
            share = reserved_quota(database, rule.group)
            if self._limit_or_none(share) is None:
                self._set_limit(share, Quota(0, ttl_ms))
        written = self._apply_limits(database, planned, ttl_ms, seen)
        if written is None:
            # What this change lowered stays lowered (safe); the other change stands.
            raise StoreUnavailable(
                "set_quota", "another change of this quota's groups came first; try again", True
            )
        for rule in planned.active:
            cap = rule.reservation.borrow_cap
            if cap is not None and cap > 0:
                self._set_limit(cap_quota(database, rule.group), Quota(cap, ttl_ms))
        self._forget_drained(database, written)

    def _apply_limits(
        self, database: str, groups: Groups, ttl_ms: int, seen: int, *, settling: bool = False
    ) -> Groups | None:
        """Give the pool and every group's share the limits plan_limits allows for what
        they hold now: lowered first, then the groups written (pending, if a share is still
        past its own), then raised, so that the limits never sum past the larger of the
        old and the new. The groups written; None if another change of them came first."""
        targets = {database: groups.pool_limit} | {
            reserved_quota(database, rule.group): rule.reservation.reserved for rule in groups.rules
        }
        current = {share: _limit_of(self._read(share)) for share in targets}
        # Every share down to its target first: what it holds can then only shrink or stay
        # within that while the rest is counted and planned.
        for share, target in targets.items():
            if target < current[share]:
                self._set_limit(share, Quota(target, ttl_ms))
                current[share] = target
        held = {}
        at_ms = self._clock.now_ms() - self._reclaim_grace_ms  # live within the skew margin
        for share in targets:
            leases = self._status_of(self._read(share)).leases
            held[share] = sum(1 for lease in leases if lease.is_live(at_ms))
        limits, pending = plan_limits(targets, held)
        for share, limit in limits.items():
            if limit < current[share]:
                self._set_limit(share, Quota(limit, ttl_ms))
        written = replace(groups, pending=pending)
        if not self._write_groups(database, written, seen):
            return None
        for share, limit in limits.items():
            # Equal too when set: the default TTL may have changed.
            if limit > current[share] or (limit == current[share] and not settling):
                self._set_limit(share, Quota(limit, ttl_ms))
        self._groups_seen.pop(database, None)
        return written

    def _settle(self, database: str) -> bool:
        """Raise the shares that a change held down, as far as the shares held past their
        own have drained; at most once a second per store. True if anything was done."""
        now_ms = self._clock.now_ms()
        if now_ms - self._settled_at_ms.get(database, -SETTLE_EVERY_MS) < SETTLE_EVERY_MS:
            return False
        self._settled_at_ms[database] = now_ms
        root = self._read(database)
        groups = root.groups
        if groups is None or not groups.pending:
            self._groups_seen.pop(database, None)
            return False
        # A change meanwhile wins (the version); this one's lowered limits are safe.
        settled = replace(groups, version=groups.version + 1)
        return (
            self._apply_limits(
                database, settled, root.quota.default_ttl_ms, groups.version, settling=True
            )
            is not None
        )

    def _forget_drained(self, database: str, planned: Groups) -> None:
        """Retired groups whose shares hold nothing go, shares and all."""
        gone = []
        for rule in planned.rules:
            if not rule.retired:
                continue
            shares = (reserved_quota(database, rule.group), cap_quota(database, rule.group))
            statuses = [self._share_status(share) for share in shares]
            # Expired entries do not hold a share: nobody acquires in a retired share to
            # reclaim them, and a token of one finds its share gone, as released.
            in_use_at_ms = self._clock.now_ms() - self._reclaim_grace_ms
            if all(
                status is None or not any(lease.is_live(in_use_at_ms) for lease in status.leases)
                for status in statuses
            ):
                for share in shares:
                    self._delete_tree(share)
                gone.append(rule.group)
        if gone:
            # A lost race leaves them listed as retired, and the next change tries again.
            self._write_groups(database, planned.without(gone), planned.version)

    def _limit_or_none(self, quota: str) -> int | None:
        try:
            return _limit_of(self._read(quota))
        except UnknownDatabase:
            return None

    def _set_limit(self, database: str, quota: Quota, root: QuotaState | None = None) -> None:
        """Set one quota's limit (the pool's or a group's share), over shards if it needs
        them; a group's share may be set to 0."""
        per_shard = self._shard_capacity(database)
        if quota.limit <= per_shard:
            # One item holds it: written as one, unless the quota is split already.
            write = self._write_quota(database, quota)
            if write.applied:
                return
            root = write.state
        elif root is None:
            try:
                root = self._read(database)
            except UnknownDatabase:
                root = None
        for _ in range(MAX_WRITE_ATTEMPTS):
            if self._split.reshare(database, quota.limit, quota.default_ttl_ms, root, per_shard):
                return
            root = self._read(database)  # a lease was taken meanwhile: look again
        raise StoreUnavailable("set_quota", "the quota kept changing; try again", True)

    def delete_quota(self, database: str) -> bool:
        """Remove a database's quota and its leases, its groups' shares with theirs; False
        if there was none."""
        check_database(database)
        with suppress(UnknownDatabase):
            groups = self._read(database).groups
            for rule in groups.rules if groups is not None else ():
                self._delete_tree(reserved_quota(database, rule.group))
                self._delete_tree(cap_quota(database, rule.group))
        self._groups_seen.pop(database, None)
        return self._delete_tree(database)

    def _delete_tree(self, quota: str) -> bool:
        with suppress(UnknownDatabase):
            layout = self._read(quota).layout
            for index in range(layout.shards if layout else 0):
                self._delete_quota(shard_item(quota, index))
        self._split.forget(quota)
        return self._delete_quota(quota)

    # Hooks. Each is one atomic step against the store (one request for DynamoDB) and
    # raises UnknownDatabase, CorruptQuota or StoreUnavailable rather than anything of its own.

    @abstractmethod
    def _add(self, database: str, lease: NewLease, now_ms: int) -> Write:
        """Add `lease` if the item holds fewer entries than its limit and not this id, with
        the item's next fence (every grant in an item takes the one after the last)."""

    @abstractmethod
    def _reclaim(self, database: str, plan: Reclaim, lease: NewLease | None, now_ms: int) -> Write:
        """Remove plan.victims and add `lease` (if any), only if plan.applies_to(item)."""

    @abstractmethod
    def _remove(self, database: str, lease_id: str, fence: int | None) -> bool:
        """Remove the entry, only if its fence is `fence` (None: whatever it is); False if
        it was not there."""

    @abstractmethod
    def _extend(
        self, database: str, lease_id: str, fence: int | None, expires_at_ms: int, now_ms: int
    ) -> Write:
        """Set the entry's expiry to `expires_at_ms`, only if it is still live, its fence is
        `fence` (None: whatever it is) and its expiry is earlier (applied or not)."""

    @abstractmethod
    def _note_wanted(self, database: str, now_ms: int) -> None:
        """Set the item's wanted_at to now if it is older; it touches no lease."""

    @abstractmethod
    def _read(self, database: str) -> QuotaState: ...

    @abstractmethod
    def _read_items(self, items: list[str]) -> dict[str, QuotaState]:
        """Read several items at once (consistently); an item that does not exist is left
        out."""

    @abstractmethod
    def _write_layout(self, database: str, ttl_ms: int, layout: ShardLayout, seen: int) -> Write:
        """Make the item a split quota's root: `layout`, a limit of its own of 0 (it takes
        no new leases, and keeps those it holds), and no claim. Refused if it holds more
        than the `seen` entries (a lease taken in it since it was read)."""

    @abstractmethod
    def _claim_rebalance(self, database: str, now_ms: int, until_ms: int) -> bool:
        """Mark the root of a split quota that waits to re-share as being re-shared by this
        caller until `until_ms`; False if it is not waiting, or another caller holds a
        claim that has not run out."""

    @abstractmethod
    def _write_quota(self, item: str, quota: Quota, *, at_most_held: bool = False) -> Write:
        """Create the item or set its quota, keeping its leases; refused (not applied) if
        it is a split quota's root, whose limit is not the quota's, or, `at_most_held`, if
        it holds more entries than the new limit (a shard's share planned before a lease
        was taken in it)."""

    @abstractmethod
    def _delete_quota(self, database: str) -> bool: ...

    @abstractmethod
    def _quota_keys(self) -> Iterable[str]:
        """The key of every item: databases', shards' and groups' alike."""

    @abstractmethod
    def _write_groups(self, database: str, groups: Groups, seen: int) -> bool:
        """Set the root item's groups, only if the version it holds is `seen` (0: none);
        it touches nothing else. False if refused."""


def _limit_of(root: QuotaState) -> int:
    """A quota's limit as its root item says: its own, or its split layout's."""
    return root.layout.limit if root.layout is not None else root.quota.limit


def _named(lease: Lease, groups: Groups) -> Lease:
    """A pool lease as status shows it: a tagged one is a group's, borrowed."""
    rule = groups.by_tag(lease.tag) if lease.tag else None
    return lease if rule is None else replace(lease, group=rule.group, borrowed=True)
