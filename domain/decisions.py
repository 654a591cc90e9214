"""What an acquire, release or renew comes to, and how an acquirer reads a full quota."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .errors import ConnleaseError
from .item import QuotaState
from .model import Lease

# Each removal adds a condition and a REMOVE clause; this keeps one write well inside
# DynamoDB's 4 KB expression limits.
MAX_RECLAIM_PER_WRITE = 50


@dataclass(frozen=True, slots=True)
class Granted:
    """A lease was taken; `remaining` is what was left free right after, `others_waiting`
    whether an acquirer found the quota full lately (None: the store did not say).
    `token` is what release and renew need: the holder's alone, never logged or shown."""

    lease: Lease
    remaining: int
    reclaimed: tuple[Lease, ...] = ()
    others_waiting: bool | None = None
    token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Rejected:
    """No lease free. `retry_after_ms` is when the earliest live lease runs out."""

    database: str
    limit: int
    in_use: int
    retry_after_ms: int

    @property
    def remaining(self) -> int:
        return 0


AcquireResult = Granted | Rejected


class ReleaseOutcome(StrEnum):
    RELEASED = "released"
    ALREADY_RELEASED = "already_released"


@dataclass(frozen=True, slots=True)
class Renewed:
    """The lease lasts longer; `remaining` and `others_waiting` as for Granted (None: the
    store did not say)."""

    lease: Lease
    remaining: int | None = None
    others_waiting: bool | None = None


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The lease expired or is gone; the holder must stop using its connection."""

    lease_id: str


RenewResult = Renewed | LeaseLost


@dataclass(frozen=True, slots=True)
class AddLease:
    """Capacity exists: add the lease with the plain conditional write."""


@dataclass(frozen=True, slots=True)
class Reclaim:
    """Remove these expired leases and, when `grant`, add the new lease in the same write
    (domain.item.Grant, planned on `limit`; without a grant, domain.item.Clear)."""

    limit: int
    victims: tuple[Lease, ...]
    grant: bool


def plan_acquire(state: QuotaState, now_ms: int) -> AddLease | Reclaim | Rejected:
    """Decide the next step of an acquirer that found the quota item in `state`."""
    limit = state.quota.limit
    live = state.live(now_ms)
    if len(live) >= limit:
        earliest = min((lease.expires_at_ms for lease in live), default=now_ms)
        return Rejected(state.database, limit, len(live), max(0, earliest - now_ms))
    if len(state.leases) < limit:
        return AddLease()
    victims = reclaim_victims(state, now_ms)
    return Reclaim(limit, victims, grant=len(state.leases) - len(victims) < limit)


def reclaim_victims(state: QuotaState, now_ms: int) -> tuple[Lease, ...]:
    """The expired entries one write removes: oldest first, as they have been dead longest,
    so no holder can still be renewing them."""
    expired = sorted(state.expired(now_ms), key=lambda lease: lease.expires_at_ms)
    return tuple(expired[:MAX_RECLAIM_PER_WRITE])


class NoCapacity(ConnleaseError):
    """No lease was granted within the wait budget."""

    def __init__(
        self, database: str, waited_ms: int, attempts: int, last: Rejected | None = None
    ) -> None:
        super().__init__(
            f"no connection lease free for database {database!r} "
            f"after {attempts} attempts over {waited_ms} ms"
        )
        self.database = database
        self.waited_ms = waited_ms
        self.attempts = attempts
        self.last = last  # the final refusal: limit, leases in use, when one frees up
