"""Use cases built on the ports: waiting for a lease within a deadline."""

from __future__ import annotations

import random
from collections.abc import Iterator

from .backoff import Backoff, Deadline
from .decisions import AcquireResult, Granted, NoCapacity, ReleaseOutcome
from .errors import RequestInProgress, StoreUnavailable
from .model import MAX_TTL_MS, MIN_TTL_MS
from .ports import Clock, Leases, Metric, MetricsSink

# How far past the earliest expiry a waiter may wake: a few store round trips apart.
EXPIRY_SPREAD_MS = 20


def acquire_within(
    store: Leases,
    database: str,
    *,
    deadline: Deadline,
    clock: Clock,
    backoff: Backoff,
    rng: random.Random,
    holder: str = "",
    ttl_ms: int | None = None,
    metrics: MetricsSink | None = None,
    secret: str | None = None,
    lease_until_ms: int | None = None,
    group: str | None = None,
) -> Granted:
    """Take a lease, waiting with jittered backoff until `deadline`; else raise NoCapacity.

    A rejected attempt never waits past the moment the earliest live lease expires: by then
    the next attempt can reclaim it. With `lease_until_ms` (the holder's own end, such as
    its invocation's deadline) each attempt asks for a lease that ends then, however long
    the wait was, rather than a fixed TTL counted from the grant. A store failure that may
    pass (StoreUnavailable.retryable) is retried the same way, and raised once the deadline
    has passed; one that will not pass is raised at once.
    """
    started_ms = clock.now_ms()
    delays = backoff.delays(rng)
    attempts = 0
    while True:
        attempts += 1
        if lease_until_ms is not None:
            ttl_ms = min(max(lease_until_ms - clock.now_ms(), MIN_TTL_MS), MAX_TTL_MS)
        try:
            result = store.acquire(database, holder, ttl_ms, secret, group=group)
        except (StoreUnavailable, RequestInProgress) as error:
            wait_or_raise(error, deadline, clock, delays)
            continue
        now_ms = clock.now_ms()
        if isinstance(result, Granted):
            record_acquire(metrics, database, result, now_ms - started_ms, group)
            return result
        if deadline.remaining_ms(now_ms) == 0:
            record_acquire(metrics, database, result, now_ms - started_ms, group)
            raise NoCapacity(database, now_ms - started_ms, attempts, result)
        wait_ms = next(delays)
        if 0 < result.retry_after_ms < wait_ms:
            # Waiters refused together would otherwise all wake at that same instant.
            wait_ms = result.retry_after_ms + round(rng.uniform(0, EXPIRY_SPREAD_MS))
        clock.sleep_ms(deadline.clip(wait_ms, now_ms))


def release_within(
    store: Leases,
    database: str,
    token: str,
    *,
    deadline: Deadline,
    clock: Clock,
    backoff: Backoff,
    rng: random.Random,
) -> ReleaseOutcome:
    """Give a lease back, retrying a store failure that may pass until `deadline` (at least
    once).

    Safe to repeat: a release removes only its own grant, so a retry after an attempt
    that applied unseen answers ALREADY_RELEASED and frees nothing else. A failure that
    will not pass is raised at once; one that may (StoreUnavailable.retryable, or the
    helper's RequestInProgress, which lasts as long as the first attempt's invocation)
    once the deadline has passed. The lease then ends at its TTL.
    """
    delays = backoff.delays(rng)
    while True:
        try:
            return store.release(database, token)
        except (StoreUnavailable, RequestInProgress) as error:
            wait_or_raise(error, deadline, clock, delays)


def wait_or_raise(
    error: StoreUnavailable | RequestInProgress,
    deadline: Deadline,
    clock: Clock,
    delays: Iterator[int],
) -> None:
    """Back off before the next attempt if the failure may pass and time is left; else
    raise it. The SDK's own retries are spent by now, but the caller's budget may not be:
    an outage shorter than the budget costs a wait, not a failed invocation."""
    now_ms = clock.now_ms()
    passing = isinstance(error, RequestInProgress) or error.retryable
    if not passing or deadline.remaining_ms(now_ms) == 0:
        raise error
    clock.sleep_ms(deadline.clip(next(delays), now_ms))


def record_acquire(
    metrics: MetricsSink | None,
    database: str,
    result: AcquireResult,
    waited_ms: int,
    group: str | None = None,
) -> None:
    """Metrics of one caller's acquire, granted or finally refused; with `group`, the
    group's own too (its wait, refusals, what is left of its reservation, borrowing)."""
    if metrics is None:
        return
    reserved = isinstance(result, Granted) and result.lease.group and not result.lease.borrowed
    if not reserved:  # a reserved grant's remaining is its group's, not the database's
        metrics.record(Metric.REMAINING_CONNECTIONS, result.remaining, database)
    if isinstance(result, Granted):
        metrics.record(Metric.LEASES_ACQUIRED, 1, database)
        metrics.record(Metric.ACQUIRE_WAIT_MS, waited_ms, database)
        if result.reclaimed:
            metrics.record(Metric.LEASES_RECLAIMED, len(result.reclaimed), database)
    else:
        metrics.record(Metric.NO_CONNECTIONS_LEFT, 1, database)
    if group is None:
        return
    if isinstance(result, Granted):
        metrics.record(Metric.ACQUIRE_WAIT_MS, waited_ms, database, group)
        if result.lease.borrowed:
            metrics.record(Metric.LEASES_BORROWED, 1, database, group)
        elif result.lease.group:
            metrics.record(Metric.REMAINING_RESERVED, result.remaining, database, group)
    else:
        metrics.record(Metric.NO_CONNECTIONS_LEFT, 1, database, group)
