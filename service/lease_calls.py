"""The store calls a connection's lease is made of, shared by the client's per-invocation
and warm paths: take a lease within a deadline, renew it, give it back within a budget."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from domain import (
    Backoff,
    Clock,
    ConnleaseError,
    Deadline,
    Granted,
    Lease,
    Leases,
    MetricsSink,
    RenewResult,
    acquire_within,
)
from domain.services import release_within

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseCalls:
    leases: Leases
    database: str
    backoff: Backoff
    clock: Clock
    rng: random.Random
    release_budget_ms: int
    metrics: MetricsSink | None = None
    group: str | None = None  # the caller's group (domain.groups); None: the pool

    def acquire(
        self,
        deadline: Deadline,
        holder: str,
        ttl_ms: int | None,
        lease_until_ms: int | None = None,
        backoff: Backoff | None = None,
    ) -> Granted:
        """A lease, waiting with backoff until the deadline; NoCapacity when none came."""
        return acquire_within(
            self.leases,
            self.database,
            deadline=deadline,
            clock=self.clock,
            backoff=backoff or self.backoff,
            rng=self.rng,
            holder=holder,
            ttl_ms=ttl_ms,
            metrics=self.metrics,
            lease_until_ms=lease_until_ms,
            group=self.group,
        )

    def renew(self, token: str, ttl_ms: int) -> RenewResult:
        return self.leases.renew(self.database, token, ttl_ms)

    def give_back(self, lease: Lease, token: str, *, closed_at_ms: int) -> None:
        """Release, retried while the lease lives (within the budget): a release that fails
        for good leaves its slot unusable until the TTL. Never raises: the body's own
        outcome is what the caller must see, and the lease expires with its TTL anyway."""
        now_ms = self.clock.now_ms()
        deadline = Deadline(min(lease.expires_at_ms, now_ms + self.release_budget_ms))
        try:
            outcome = release_within(
                self.leases,
                self.database,
                token,
                deadline=deadline,
                clock=self.clock,
                backoff=self.backoff,
                rng=self.rng,
            )
        except ConnleaseError:
            log.warning(
                "could not give lease %s back; it expires at %d",
                lease.id,
                lease.expires_at_ms,
                exc_info=True,
            )
            return
        if closed_at_ms >= lease.expires_at_ms:
            # The lease expired while the connection was open, and its slot may have been
            # granted again (if it was, this give-back found it ALREADY_RELEASED): the
            # database may have seen one connection more than the quota.
            log.warning(
                "lease %s expired before its connection closed (%s); raise its TTL",
                lease.id,
                outcome,
            )


def close_quietly(connection: object) -> None:
    """Close a connection; a failure to close is logged, never raised over the body's own
    outcome (the lease is given back either way)."""
    close = getattr(connection, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.warning("closing the connection failed", exc_info=True)
