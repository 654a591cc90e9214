"""The ports: what the domain needs from a lease store, a clock and a metrics sink.

As in cosmicpython, a port's public methods do the shared work (input checks, the acquire
loop) and call private hooks that each adapter implements, so every store behaves alike.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
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
from .errors import ConnleaseError, InvalidInput, StoreUnavailable, UnknownDatabase
from .model import (
    MAX_LIMIT,
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
)
from .shards import parse_shard_lease_id, shard_item, shard_lease_id
from .split_quota import SplitQuotas, in_shard
from .tokens import Token, check_secret, lease_key, new_secret, parse_token

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


class MetricsSink(ABC):
    @abstractmethod
    def record(self, metric: Metric, value: float, database: str) -> None: ...


@dataclass(frozen=True, slots=True)
class NewLease:
    """A lease an acquirer wants; `ttl_ms` None means the quota's default."""

    id: str
    holder: str
    ttl_ms: int | None


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
    ) -> AcquireResult: ...

    def release(self, database: str, token: str) -> ReleaseOutcome: ...

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult: ...


def with_token(result: AcquireResult, secret: str) -> AcquireResult:
    """A grant with the token only its holder learns: the secret, the fence, the shard."""
    if not isinstance(result, Granted):
        return result
    shard = parse_shard_lease_id(result.lease.id)
    token = Token(secret, result.lease.fence, None if shard is None else shard[0])
    return replace(result, token=str(token))


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

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
    ) -> AcquireResult:
        """Take a lease if one is free, reclaiming expired ones when the quota looks full.
        The grant's token (`Granted.token`) is what release and renew need.

        A caller may propose the grant's secret (`domain.tokens.new_secret`): the same call
        sent again (a retried request whose answer was lost) then finds its lease instead
        of taking a second one. Such a caller owns the secret: after a StoreUnavailable it
        gives the lease back itself (`release(database, secret)`), since the store cannot
        tell whether another copy of the call holds that lease.
        """
        check_database(database)
        check_holder(holder)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        proposed = secret is not None
        secret = self._secrets() if secret is None else check_secret(secret)
        wanted = NewLease(lease_key(database, secret), holder, ttl_ms)
        layout = self._split.known_layout(database)
        if layout is None:
            taken = self._take_on(database, wanted, proposed=proposed)
            if not isinstance(taken, ShardLayout):
                return with_token(taken, secret)
            layout = self._split.remember(database, taken)
        return with_token(self._split.take(database, layout, wanted, proposed), secret)

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
        key = lease_key(database, grant.secret)
        if grant.shard is not None:
            with suppress(UnknownDatabase):  # no such shard: the quota was split since
                if self._remove(shard_item(database, grant.shard), key, grant.fence):
                    self._split.freed(database, grant.shard)
                    return ReleaseOutcome.RELEASED
        if self._remove(database, key, grant.fence):
            return ReleaseOutcome.RELEASED
        if grant.shard is None and self._split.release_by_key(database, key, grant.fence):
            return ReleaseOutcome.RELEASED
        return ReleaseOutcome.ALREADY_RELEASED

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        """Push a live lease's expiry to now + ttl; a renewal never shortens a lease. An
        expired or unknown lease, or a token not the current grant's, is lost."""
        check_database(database)
        grant = parse_token(token)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        key = lease_key(database, grant.secret)
        if grant.shard is not None:
            with suppress(UnknownDatabase):
                renewed = self._renew_in(shard_item(database, grant.shard), key, grant, ttl_ms)
                if isinstance(renewed, Renewed):
                    return replace(renewed, lease=in_shard(grant.shard, renewed.lease))
            return LeaseLost(shard_lease_id(grant.shard, key))
        renewed = self._renew_in(database, key, grant, ttl_ms)
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

    def status(self, database: str) -> QuotaStatus:
        check_database(database)
        root = self._read(database)
        now_ms = self._clock.now_ms()
        if root.layout is None:
            return root.status(now_ms)
        return self._split.status(root)

    def set_quota(self, database: str, quota: Quota) -> QuotaStatus:
        """Create or change a database's quota; live leases are kept as they are. A limit
        beyond one item's capacity splits the quota over shards (for good: lowering it again
        keeps the shards, with smaller shares)."""
        check_database(database)
        if not isinstance(quota, Quota):
            raise TypeError(f"quota must be a Quota, got {type(quota).__name__}")
        check_limit(quota.limit)
        per_shard = self._shard_capacity(database)
        root: QuotaState | None
        if quota.limit <= per_shard:
            # One item holds it: written as one, unless the quota is split already.
            write = self._write_quota(database, quota)
            if write.applied:
                return write.state.status(self._clock.now_ms())
            root = write.state
        else:
            try:
                root = self._read(database)
            except UnknownDatabase:
                root = None
        for _ in range(MAX_WRITE_ATTEMPTS):
            if self._split.reshare(database, quota.limit, quota.default_ttl_ms, root, per_shard):
                return self.status(database)
            root = self._read(database)  # a lease was taken meanwhile: look again
        raise StoreUnavailable("set_quota", "the quota kept changing; try again", True)

    def delete_quota(self, database: str) -> bool:
        """Remove a database's quota and its leases; False if there was none."""
        check_database(database)
        with suppress(UnknownDatabase):
            layout = self._read(database).layout
            for index in range(layout.shards if layout else 0):
                self._delete_quota(shard_item(database, index))
        self._split.forget(database)
        return self._delete_quota(database)

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
