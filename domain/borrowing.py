"""Which part a caller's lease goes to, and the tickets of capped groups (docs/design.md,
"Groups"). A caller with no group (or one the quota does not name) takes the pool's lease;
a named group its reservation first, then, if it may borrow, a pool lease carrying its tag;
a capped group takes a ticket in its cap before the pool lease, sized TICKET_SLACK_MS longer
than the lease and extended if the lease's write came later than that, so that the cap
counts the lease for as long as it lives.

A ticket's key comes from its pool lease's key (domain.tokens.ticket_key): whoever gives
back the lease, with its token or an operator without, gives back exactly its ticket.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace

from .decisions import AcquireResult, Granted, LeaseLost, Rejected, Renewed, RenewResult
from .errors import ConnleaseError, UnknownDatabase
from .groups import GROUP_MARK, TICKET_SLACK_MS, GroupRule, cap_quota, reserved_quota
from .item import NewLease, QuotaConfig
from .model import MIN_TTL_MS, Lease
from .parts import PartLeases, Where
from .plan import Part, all_parts, cap_part, pool_part, reserved_part
from .ports import Clock
from .shards import parse_shard_lease_id
from .tokens import Token, lease_id_of, lease_key, ticket_key


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
    token = Token(secret, result.lease.fence, _shard_of(result.lease), group, reserved, ticket)
    return replace(result, token=str(token))


def _shard_of(lease: Lease) -> int | None:
    shard = parse_shard_lease_id(lease.id)
    return None if shard is None else shard[0]


def _refused(database: str, refusals: list[AcquireResult]) -> Rejected:
    """A group's refusal: as full as its last step found, and worth retrying when the
    first of its steps could have room again."""
    rejected = [refusal for refusal in refusals if isinstance(refusal, Rejected)]
    last = rejected[-1] if rejected else Rejected(database, 0, 0, 0)
    retry = min((refusal.retry_after_ms for refusal in rejected), default=0)
    return Rejected(database, last.limit, last.in_use, retry)


@dataclass(frozen=True, slots=True)
class Ask:
    """One acquire's wish: for which database, by whom, for how long, with which secret
    (`proposed`: the caller's own, which a resent call finds its lease by)."""

    database: str
    holder: str
    ttl_ms: int | None
    secret: str
    proposed: bool


class Borrowing:
    """Routes acquire, release and renew to their parts, over PartLeases."""

    def __init__(
        self, parts: PartLeases, clock: Clock, configs: Callable[[str], QuotaConfig]
    ) -> None:
        """`configs`: a quota's configuration as the store knows it (cached a while),
        read only where a token does not say enough."""
        self._parts = parts
        self._clock = clock
        self._configs = configs

    def acquire_plain(self, ask: Ask) -> AcquireResult:
        """A lease in the database's own item, as a quota in one item."""
        wanted = NewLease(lease_key(ask.database, ask.secret), ask.holder, ask.ttl_ms)
        taken = self._parts.take_in_item(ask.database, wanted, proposed=ask.proposed)
        return with_token(taken, ask.secret)

    def acquire(
        self,
        ask: Ask,
        config: QuotaConfig,
        group: str | None,
        settle: Callable[[QuotaConfig], bool] | None = None,
    ) -> AcquireResult:
        """`settle`: settles a pending change of the quota; True if it did."""
        rule = config.groups.rule(group) if config.groups is not None else None
        if rule is None:
            wanted = NewLease(lease_key(ask.database, ask.secret), ask.holder, ask.ttl_ms)
            return with_token(self._take(pool_part(ask.database, config), wanted, ask), ask.secret)
        refusals: list[AcquireResult] = []
        if reserved_part(ask.database, config, rule.group) is not None:
            taken = self._reserved(ask, config, rule.group)
            if not isinstance(taken, Granted) and settle is not None and settle(config):
                # Its share held down by a change: settled first, or the group would borrow
                # from the pool that others are entitled to while its reservation idles.
                return self.acquire(ask, self._configs(ask.database), group)
            if isinstance(taken, Granted):
                return taken
            refusals.append(taken)
        cap = rule.reservation.borrow_cap
        if cap == 0:
            return _refused(ask.database, refusals)
        if cap is None:
            taken = self._borrowed(ask, config, rule)
            return (
                taken if isinstance(taken, Granted) else _refused(ask.database, [*refusals, taken])
            )
        return self._borrowed_capped(ask, config, rule, refusals)

    def _reserved(self, ask: Ask, config: QuotaConfig, group: str) -> AcquireResult:
        share = reserved_part(ask.database, config, group)
        assert share is not None
        if not share.limit and not config.pending:
            return Rejected(ask.database, 0, 0, 0)
        wanted = NewLease(lease_key(share.key, ask.secret), ask.holder, ask.ttl_ms)
        taken = self._take(share, wanted, ask)
        if not isinstance(taken, Granted):
            return taken
        lease = replace(taken.lease, group=group)
        return with_token(replace(taken, lease=lease), ask.secret, group=group, reserved=True)

    def _borrowed(
        self, ask: Ask, config: QuotaConfig, rule: GroupRule, ticket: Token | None = None
    ) -> AcquireResult:
        """A pool lease carrying the group's tag (and the ticket its token names, if any)."""
        wanted = NewLease(
            lease_key(ask.database, ask.secret), ask.holder, ask.ttl_ms, rule.tag, config.version
        )
        taken = self._take(pool_part(ask.database, config), wanted, ask)
        if not isinstance(taken, Granted):
            return taken
        lease = replace(taken.lease, group=rule.group, borrowed=True)
        return with_token(replace(taken, lease=lease), ask.secret, group=rule.group, ticket=ticket)

    def _borrowed_capped(
        self, ask: Ask, config: QuotaConfig, rule: GroupRule, refusals: list[AcquireResult]
    ) -> AcquireResult:
        """A ticket in the group's cap first, then the pool lease; neither is kept without
        the other (or each ends at its TTL)."""
        # The lease gets the TTL its ticket is sized from, not the pool item's default at
        # the time of the write, which an operator may have raised since.
        ask = replace(ask, ttl_ms=ask.ttl_ms if ask.ttl_ms is not None else config.default_ttl_ms)
        assert ask.ttl_ms is not None
        held = self._take_ticket(ask, rule, ask.ttl_ms)
        if not isinstance(held, Granted):
            return _refused(ask.database, [*refusals, held])
        ticket = Token(ask.secret, held.lease.fence, _shard_of(held.lease))
        grant = replace(ticket, group=rule.group)
        try:
            taken = self._borrowed(ask, config, rule, ticket)
        except ConnleaseError:
            self._abandon(ask, grant, None)
            raise
        try:
            covered = self._covered(ask.database, grant, held.lease.expires_at_ms, taken)
        except ConnleaseError:
            self._abandon(ask, grant, taken)
            raise
        if covered:
            return taken
        with suppress(ConnleaseError):
            self._give_back(ask, grant, taken)
        refusal = taken if isinstance(taken, Rejected) else Rejected(ask.database, 0, 0, 0)
        return _refused(ask.database, [*refusals, refusal])

    def _abandon(self, ask: Ask, grant: Token, taken: AcquireResult | None) -> None:
        """What a capped borrow that raised took, given back; a proposed secret's stays to
        its TTL: another copy of its call (a retry after a lost answer) may hold it and
        have answered with it."""
        if not ask.proposed:
            with suppress(ConnleaseError):
                self._give_back(ask, grant, taken)

    def _give_back(self, ask: Ask, grant: Token, taken: AcquireResult | None) -> None:
        if isinstance(taken, Granted):
            self.release_in(
                ask.database, Token(ask.secret, taken.lease.fence, _shard_of(taken.lease))
            )
        self.release_ticket(ask.database, grant)

    def _take(self, part: Part, wanted: NewLease, ask: Ask) -> AcquireResult:
        return self._parts.take(part, wanted, proposed=ask.proposed)

    def _take_ticket(self, ask: Ask, rule: GroupRule, ttl_ms: int) -> AcquireResult:
        """A ticket in the group's cap, sized to outlive a lease of `ttl_ms` by the slack;
        never found again by a proposed secret's retry: a lost one ends at its TTL."""
        cap = cap_part(ask.database, rule)
        key = ticket_key(cap.key, lease_key(ask.database, ask.secret))
        wanted = NewLease(key, ask.holder, ttl_ms + TICKET_SLACK_MS)
        return self._parts.take(cap, wanted, proposed=False)

    def _covered(
        self, database: str, grant: Token, ticket_until_ms: int, taken: RenewResult | AcquireResult
    ) -> bool:
        """Whether the ticket lasts as long as the lease, extended if it must be. The ticket
        was sized the slack longer than the lease a round trip before the lease's write,
        so only a write that came later than the slack (a retry, a throttle, a split
        pool's search) costs a third write."""
        if not isinstance(taken, Granted | Renewed):
            return False
        needed_ms = taken.lease.expires_at_ms
        if ticket_until_ms >= needed_ms:
            return True
        ttl_ms = max(MIN_TTL_MS, needed_ms + TICKET_SLACK_MS - self._clock.now_ms())
        renewed = self._renew_ticket(database, grant, ttl_ms)
        return isinstance(renewed, Renewed) and renewed.lease.expires_at_ms >= needed_ms

    def _ticket_where(self, database: str, grant: Token) -> tuple[Where, str, int | None]:
        assert grant.group is not None
        ticket = grant.ticket or grant
        cap = cap_quota(database, grant.group)
        return (
            Where(cap, ticket.shard),
            ticket_key(cap, lease_key(database, grant.secret)),
            ticket.fence,
        )

    def _renew_ticket(self, database: str, grant: Token, ttl_ms: int) -> RenewResult:
        where, key, fence = self._ticket_where(database, grant)
        try:
            return self._parts.renew(where, key, fence, ttl_ms)
        except UnknownDatabase:  # the group's cap is gone, and its tickets with it
            return LeaseLost(key)

    def release_ticket(self, database: str, grant: Token) -> None:
        where, key, fence = self._ticket_where(database, grant)
        with suppress(UnknownDatabase):  # the group's cap is gone, and its tickets
            self._parts.release(where, key, fence)

    def release_in(self, part: str, grant: Token) -> bool:
        """Give back the grant where its token says it is: its shard, else the part's key
        item; a secret alone (no fence: its proposer lost the answer) is looked for in
        every shard too."""
        key = lease_key(part, grant.secret)
        try:
            if grant.shard is not None:
                return self._parts.release(Where(part, grant.shard), key, grant.fence)
            if self._parts.release(Where(part, None), key, grant.fence):
                return True
            if grant.fence is not None:
                return False
            shards = self._shards_of(part)
            return shards > 0 and self._parts.release_anywhere(part, shards, key, None)
        except UnknownDatabase as gone:
            if gone.database == part and GROUP_MARK not in part:
                raise  # the database's own quota: there is none
            return False  # a share or a shard gone: its leases with it

    def _shards_of(self, part: str) -> int:
        database = part.split(GROUP_MARK, maxsplit=1)[0]
        config = self._configs(database)
        found = next((p for p in all_parts(database, config) if p.key == part), None)
        return found.shards if found is not None else 0

    def release_in_groups(self, database: str, grant: Token) -> bool:
        """A secret alone: in any group's reservation, and any ticket it left in a cap."""
        released = False
        config = self._configs(database)
        for rule in config.groups.rules if config.groups is not None else ():
            if self.release_in(reserved_quota(database, rule.group), grant):
                released = True
            if rule.capped:
                self._release_ticket_of(database, rule, lease_key(database, grant.secret))
        return released

    def _release_ticket_of(self, database: str, rule: GroupRule, key: str) -> None:
        """The ticket a capped group's lease `key` holds in its cap, found by the lease's
        key alone (a token that lost its ticket's fence and shard, a bare secret, an
        operator's force-release): every shard of the cap is looked in."""
        cap = cap_part(database, rule)
        with suppress(UnknownDatabase):  # the group's cap is gone, and its tickets
            self._parts.release_anywhere(cap.key, cap.shards, ticket_key(cap.key, key), None)

    def renew(self, database: str, grant: Token, ttl_ms: int | None) -> RenewResult:
        if grant.group is None or (grant.ticket is None and not grant.reserved):
            return self._renew_untracked(database, grant, ttl_ms)
        if grant.reserved:
            return self._renew_reserved(database, grant.group, grant, ttl_ms)
        # The ticket first, and longer: the cap counts the lease while it lives.
        ttl_ms = ttl_ms or self._configs(database).default_ttl_ms
        ticket = self._renew_ticket(database, grant, ttl_ms + TICKET_SLACK_MS)
        if not isinstance(ticket, Renewed):
            # The lease without its ticket would not be counted: it ends now.
            with suppress(ConnleaseError):
                self.release_in(database, grant)
            return LeaseLost(lease_id_of(database, grant))
        renewed = self._renew_in(database, grant, ttl_ms)
        # An extension that raises is raised: unanswered, the holder keeps to the expiry it
        # knew, which the renewed ticket covers, and tries again.
        if not self._covered(database, grant, ticket.lease.expires_at_ms, renewed):
            with suppress(ConnleaseError):
                if isinstance(renewed, Renewed):  # it would outlive its ticket: it ends now
                    self.release_in(database, grant)
                self.release_ticket(database, grant)
            return LeaseLost(lease_id_of(database, grant))
        assert isinstance(renewed, Renewed)
        return replace(renewed, lease=replace(renewed.lease, group=grant.group, borrowed=True))

    def _renew_reserved(
        self, database: str, group: str, grant: Token, ttl_ms: int | None
    ) -> RenewResult:
        try:
            renewed = self._renew_in(reserved_quota(database, group), grant, ttl_ms)
        except UnknownDatabase:
            self._configs(database)  # the database's quota exists: the group was forgotten
            return LeaseLost(lease_id_of(database, grant))
        if isinstance(renewed, Renewed):
            return replace(renewed, lease=replace(renewed.lease, group=group))
        return renewed

    def _renew_untracked(self, database: str, grant: Token, ttl_ms: int | None) -> RenewResult:
        """A pool lease whose token names no group: a plain one, or a group's borrowed lease
        taken without a ticket. One of a group that is capped now (or may not borrow) is not
        renewed but given back, so that leases taken before its cap drain."""
        renewed = self._renew_in(database, grant, ttl_ms)
        if not isinstance(renewed, Renewed) or not renewed.lease.tag:
            return renewed
        config = self._configs(database)
        rule = config.groups.by_tag(renewed.lease.tag) if config.groups is not None else None
        if rule is None:
            return renewed
        if not rule.retired and rule.reservation.borrow_cap is not None:
            with suppress(ConnleaseError):
                self.release_in(database, grant)
                # A borrowed lease's token stripped of its ticket: the ticket goes with it,
                # or it would hold the group's cap until its TTL (issue 23).
                self._release_ticket_of(database, rule, lease_key(database, grant.secret))
            return LeaseLost(renewed.lease.id)
        return replace(renewed, lease=replace(renewed.lease, group=rule.group, borrowed=True))

    def _renew_in(self, part: str, grant: Token, ttl_ms: int | None) -> RenewResult:
        key = lease_key(part, grant.secret)
        return self._parts.renew(Where(part, grant.shard), key, grant.fence, ttl_ms)

    def force_release(self, database: str, config: QuotaConfig, part: Part, lease: Lease) -> bool:
        """Remove `lease` at its fence (an entry from before fences: whatever it is), and
        a capped group's borrowed lease's ticket with it."""
        shard = parse_shard_lease_id(lease.id)
        where = Where(part.key, None if shard is None else shard[0])
        key = lease.id if shard is None else shard[1]
        try:
            removed = self._parts.release(where, key, lease.fence or None)
        except UnknownDatabase:
            return False  # its item went: so did the lease
        rule = config.groups.by_tag(lease.tag) if config.groups is not None and lease.tag else None
        if removed and part.key == database and rule is not None and rule.capped:
            self._release_ticket_of(database, rule, key)
        return removed
