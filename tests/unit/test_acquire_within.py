"""Waiting for a lease within a deadline, on the in-memory store and a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory import InMemoryLeaseStore
from domain import (
    Backoff,
    Deadline,
    DecorrelatedJitter,
    FullJitter,
    Granted,
    Lease,
    Metric,
    NoCapacity,
    Quota,
    ReleaseOutcome,
    StoreUnavailable,
)
from domain.model import SKEW_MARGIN_MS
from domain.services import (
    EXPIRY_SPREAD_MS,
    acquire_within,
    release_within,
)
from domain.tokens import new_secret
from tests.fakes import FakeClock, HookedItems, RecordingMetrics

DB = "orders-mysql"
TTL = 30_000
LIMIT = 3


class ReleasingClock(FakeClock):
    """A fake clock whose sleep lets a holder give its lease back once enough time passed."""

    def __init__(self, release_after_ms: int) -> None:
        super().__init__()
        self.release_at_ms = self.now_ms() + release_after_ms
        self.store: InMemoryLeaseStore | None = None
        self.to_release: list[Granted] = []

    def sleep_ms(self, ms: int) -> None:
        super().sleep_ms(ms)
        if self.store is not None and self.now_ms() >= self.release_at_ms:
            while self.to_release:
                self.store.release(DB, self.to_release.pop().token)


def quota_store(clock: FakeClock, reclaim_grace_ms: int = 0) -> InMemoryLeaseStore:
    # These tests are about the wait, not the skew margin: one clock, no skew to allow for,
    # so an expired lease may be reclaimed the moment it expires (unless a test says).
    store = InMemoryLeaseStore(clock, reclaim_grace_ms=reclaim_grace_ms)
    store.set_quota(DB, Quota(limit=LIMIT, default_ttl_ms=TTL))
    return store


def fill_grants(store: InMemoryLeaseStore, *ttls_ms: int) -> list[Granted]:
    grants = []
    for ttl_ms in ttls_ms:
        result = store.acquire(DB, "holder/busy", ttl_ms)
        assert isinstance(result, Granted)
        grants.append(result)
    return grants


def fill(store: InMemoryLeaseStore, *ttls_ms: int) -> list[Lease]:
    return [grant.lease for grant in fill_grants(store, *ttls_ms)]


def recorded(metrics: RecordingMetrics) -> dict[Metric, list[float]]:
    return {metric: values for (metric, db), values in metrics.values.items() if db == DB}


def wait_for_lease(
    store: InMemoryLeaseStore,
    clock: FakeClock,
    *,
    budget_ms: int,
    backoff: Backoff | None = None,
    seed: int = 7,
    metrics: RecordingMetrics | None = None,
) -> Granted:
    return acquire_within(
        store,
        DB,
        deadline=Deadline(clock.now_ms() + budget_ms),
        clock=clock,
        backoff=backoff or DecorrelatedJitter(20, 200),
        rng=random.Random(seed),
        holder="fn/req-1",
        metrics=metrics,
    )


def test_grants_at_once_when_a_lease_is_free_and_records_it() -> None:
    clock = FakeClock()
    store = quota_store(clock)
    metrics = RecordingMetrics()
    started = clock.now_ms()

    grant = acquire_within(
        store,
        DB,
        deadline=Deadline(started + 5_000),
        clock=clock,
        backoff=FullJitter(),
        rng=random.Random(0),
        holder="fn/req-1",
        ttl_ms=2_000,
        metrics=metrics,
    )

    assert clock.slept_ms == []
    assert (grant.lease.holder, grant.lease.expires_at_ms) == ("fn/req-1", started + 2_000)
    assert grant.remaining == LIMIT - 1
    assert store.status(DB).leases == (grant.lease,)
    assert recorded(metrics) == {
        Metric.REMAINING_CONNECTIONS: [2],
        Metric.LEASES_ACQUIRED: [1],
        Metric.ACQUIRE_WAIT_MS: [0],
    }


def test_waits_for_the_earliest_lease_to_expire_then_reclaims_it_without_oversleeping() -> None:
    clock = FakeClock()
    store = quota_store(clock)
    first, *others = fill(store, 700, 900, 5_000)
    metrics = RecordingMetrics()

    # Every backoff wait is far longer than the 700 ms until the first lease runs out.
    grant = wait_for_lease(
        store, clock, budget_ms=100_000, backoff=DecorrelatedJitter(10_000, 60_000), metrics=metrics
    )

    (slept,) = clock.slept_ms
    assert 700 <= slept <= 700 + EXPIRY_SPREAD_MS
    assert grant.reclaimed == (first,)
    assert {lease.id for lease in store.status(DB).leases} == {
        grant.lease.id,
        *(lease.id for lease in others),
    }
    assert recorded(metrics) == {
        Metric.REMAINING_CONNECTIONS: [0],
        Metric.LEASES_ACQUIRED: [1],
        Metric.ACQUIRE_WAIT_MS: [slept],
        Metric.LEASES_RECLAIMED: [1],
    }


def test_with_the_skew_margin_it_waits_for_the_margin_past_the_expiry_and_no_longer() -> None:
    clock = FakeClock()
    store = quota_store(clock, reclaim_grace_ms=SKEW_MARGIN_MS)
    first, *_ = fill(store, 700, 20_000, 20_000)
    started = clock.now_ms()

    grant = wait_for_lease(
        store, clock, budget_ms=100_000, backoff=DecorrelatedJitter(10_000, 60_000)
    )

    # Not reclaimed the moment it expired (its holder's clock may run behind ours), nor
    # waited for any longer than the margin past its expiry.
    (slept,) = clock.slept_ms
    assert (
        700 + SKEW_MARGIN_MS <= clock.now_ms() - started <= 700 + SKEW_MARGIN_MS + EXPIRY_SPREAD_MS
    )
    assert slept == clock.now_ms() - started
    assert grant.reclaimed == (first,)


@given(
    seed=st.integers(min_value=0, max_value=2**32),
    base=st.integers(min_value=1, max_value=300),
    first_expiry_ms=st.integers(min_value=100, max_value=3_000),
)
def test_never_sleeps_past_the_moment_the_earliest_lease_expires(
    seed: int, base: int, first_expiry_ms: int
) -> None:
    clock = FakeClock()
    store = quota_store(clock)
    first, *_ = fill(store, first_expiry_ms, 20_000, 20_000)
    started = clock.now_ms()

    grant = wait_for_lease(
        store, clock, budget_ms=10_000, backoff=DecorrelatedJitter(base, 4 * base), seed=seed
    )

    assert 0 <= clock.now_ms() - started - first_expiry_ms <= EXPIRY_SPREAD_MS
    assert all(ms > 0 for ms in clock.slept_ms)
    assert grant.reclaimed == (first,)


def test_gets_the_lease_a_holder_gives_back_during_the_wait() -> None:
    clock = ReleasingClock(release_after_ms=300)
    store = quota_store(clock)
    clock.store = store
    held = fill_grants(store, TTL, TTL, TTL)
    clock.to_release.append(held[1])
    metrics = RecordingMetrics()
    started = clock.now_ms()

    grant = wait_for_lease(store, clock, budget_ms=5_000, metrics=metrics)

    waited = clock.now_ms() - started
    assert waited >= 300
    assert sum(clock.slept_ms[:-1]) < 300  # granted on the first attempt after the release
    assert grant.reclaimed == ()
    assert {lease.id for lease in store.status(DB).leases} == {
        held[0].lease.id,
        held[2].lease.id,
        grant.lease.id,
    }
    assert recorded(metrics)[Metric.ACQUIRE_WAIT_MS] == [waited]
    assert Metric.LEASES_RECLAIMED not in recorded(metrics)


def test_gives_up_with_no_capacity_at_the_deadline_without_sleeping_past_it() -> None:
    clock = FakeClock()
    store = quota_store(clock)
    fill(store, TTL, TTL, TTL)
    before = store.status(DB)
    metrics = RecordingMetrics()
    started = clock.now_ms()

    with pytest.raises(NoCapacity, match=r"'orders-mysql' after \d+ attempts over 1000 ms") as e:
        wait_for_lease(store, clock, budget_ms=1_000, metrics=metrics)

    assert e.value.database == DB
    assert e.value.waited_ms == 1_000
    assert e.value.attempts == len(clock.slept_ms) + 1
    assert e.value.attempts > 2
    assert sum(clock.slept_ms) == 1_000
    assert clock.now_ms() == started + 1_000
    assert store.status(DB) == before
    assert recorded(metrics) == {
        Metric.REMAINING_CONNECTIONS: [0],
        Metric.NO_CONNECTIONS_LEFT: [1],
    }


@pytest.mark.parametrize("kind", [FullJitter, DecorrelatedJitter])
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    base=st.integers(min_value=1, max_value=500),
    budget_ms=st.integers(min_value=0, max_value=5_000),
)
def test_never_sleeps_past_the_deadline(
    kind: type[Backoff], seed: int, base: int, budget_ms: int
) -> None:
    clock = FakeClock()
    store = quota_store(clock)
    fill(store, TTL, TTL, TTL)
    deadline = clock.now_ms() + budget_ms

    with pytest.raises(NoCapacity) as e:
        wait_for_lease(store, clock, budget_ms=budget_ms, backoff=kind(base, 3 * base), seed=seed)

    assert clock.now_ms() <= deadline
    assert sum(clock.slept_ms) == e.value.waited_ms <= budget_ms
    assert e.value.attempts == len(clock.slept_ms) + 1


@pytest.mark.parametrize("kind", [FullJitter, DecorrelatedJitter])
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    base=st.integers(min_value=1, max_value=500),
    budget_ms=st.integers(min_value=0, max_value=5_000),
)
def test_uses_the_whole_wait_budget_before_giving_up(
    kind: type[Backoff], seed: int, base: int, budget_ms: int
) -> None:
    clock = FakeClock()
    store = quota_store(clock)
    fill(store, TTL, TTL, TTL)

    with pytest.raises(NoCapacity) as e:
        wait_for_lease(store, clock, budget_ms=budget_ms, backoff=kind(base, 3 * base), seed=seed)

    assert e.value.waited_ms == budget_ms


def test_a_zero_full_jitter_draw_retries_at_once_instead_of_giving_up_early() -> None:
    seed = 31
    assert next(FullJitter(20, 1_000).delays(random.Random(seed))) == 0  # the draw at issue
    clock = FakeClock()
    store = quota_store(clock)
    first, *_ = fill(store, 500, TTL, TTL)
    started = clock.now_ms()

    grant = wait_for_lease(store, clock, budget_ms=10_000, backoff=FullJitter(20, 1_000), seed=seed)

    assert clock.slept_ms[0] == 0
    assert grant.reclaimed == (first,)
    assert 0 <= clock.now_ms() - started - 500 <= EXPIRY_SPREAD_MS


@pytest.mark.parametrize("seed", range(20))
def test_full_jitter_waits_no_longer_than_until_the_earliest_lease_expires(seed: int) -> None:
    clock = FakeClock()
    store = quota_store(clock)
    first, *_ = fill(store, 500, TTL, TTL)
    started = clock.now_ms()

    grant = wait_for_lease(store, clock, budget_ms=10_000, backoff=FullJitter(20, 1_000), seed=seed)

    assert grant.reclaimed == (first,)
    assert 0 <= clock.now_ms() - started - 500 <= EXPIRY_SPREAD_MS


def test_still_tries_once_when_the_deadline_has_already_passed_and_a_lease_is_free() -> None:
    clock = FakeClock()
    store = quota_store(clock)

    grant = wait_for_lease(store, clock, budget_ms=-1_000)

    assert grant.remaining == LIMIT - 1
    assert clock.slept_ms == []


def test_gives_up_after_one_attempt_when_the_deadline_has_already_passed_and_none_is_free() -> None:
    clock = FakeClock()
    store = quota_store(clock)
    fill(store, TTL, TTL, TTL)
    adds_before = store.requests["add"]
    metrics = RecordingMetrics()

    with pytest.raises(NoCapacity) as e:
        wait_for_lease(store, clock, budget_ms=-1_000, metrics=metrics)

    assert (e.value.attempts, e.value.waited_ms) == (1, 0)
    assert store.requests["add"] - adds_before == 1
    assert clock.slept_ms == []
    assert recorded(metrics)[Metric.NO_CONNECTIONS_LEFT] == [1]


class FlakyStore(InMemoryLeaseStore):
    """Fails the first `failures` writes that take or give back a lease with
    StoreUnavailable; with `applied`, the write takes effect first (its answer is what gets
    lost)."""

    def __init__(
        self, clock: FakeClock, failures: int, *, applied: bool = False, retryable: bool = True
    ) -> None:
        # One clock: no skew to allow for.
        super().__init__(clock, items=HookedItems(self._hook), reclaim_grace_ms=0)
        self.failures = failures
        self.applied = applied
        self.retryable = retryable
        self.calls = 0

    def _hook(self, operation: str, applied: bool) -> None:
        kind = {"add": "acquire", "remove": "release"}.get(operation)
        if kind is None or applied != self.applied:
            return
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable(kind, "ReadTimeoutError", self.retryable)


def flaky_store(
    clock: FakeClock, failures: int, *, applied: bool = False, retryable: bool = True
) -> FlakyStore:
    store = FlakyStore(clock, failures, applied=applied, retryable=retryable)
    store.set_quota(DB, Quota(limit=LIMIT, default_ttl_ms=TTL))
    return store


def test_an_acquire_whose_answer_was_lost_gives_its_lease_back_before_raising() -> None:
    clock = FakeClock()
    store = flaky_store(clock, failures=1, applied=True)

    with pytest.raises(StoreUnavailable):
        store.acquire(DB, "fn/req-1")

    assert store.status(DB).leases == ()  # not held, unknown to anyone, until its TTL


def test_an_outage_shorter_than_the_budget_costs_a_wait_not_the_invocation() -> None:
    clock = FakeClock()
    store = flaky_store(clock, failures=3, applied=True)

    grant = wait_for_lease(store, clock, budget_ms=5_000)

    # The first grant's give-back applies but its answer is lost too; the second's lands.
    assert len(clock.slept_ms) == 2
    assert store.status(DB).leases == (grant.lease,)


def test_an_outage_past_the_budget_raises_store_unavailable_at_the_deadline() -> None:
    clock = FakeClock()
    store = flaky_store(clock, failures=10**6)
    started = clock.now_ms()

    with pytest.raises(StoreUnavailable, match="ReadTimeoutError"):
        wait_for_lease(store, clock, budget_ms=2_000)

    assert clock.now_ms() - started == 2_000
    assert store.status(DB).leases == ()


def give_back(store: FlakyStore, clock: FakeClock, token: str, budget_ms: int) -> ReleaseOutcome:
    return release_within(
        store,
        DB,
        token,
        deadline=Deadline(clock.now_ms() + budget_ms),
        clock=clock,
        backoff=DecorrelatedJitter(20, 200),
        rng=random.Random(3),
    )


@pytest.mark.parametrize("applied", [False, True], ids=["lost request", "lost answer"])
def test_a_release_is_retried_until_it_lands_and_frees_only_its_own_lease(applied: bool) -> None:
    clock = FakeClock()
    store = flaky_store(clock, failures=0, applied=applied)
    mine, other = fill_grants(store, TTL, TTL)
    store.failures = 2

    outcome = give_back(store, clock, mine.token, budget_ms=5_000)

    assert store.failures == 0
    assert len(clock.slept_ms) == 2
    expected = ReleaseOutcome.ALREADY_RELEASED if applied else ReleaseOutcome.RELEASED
    assert outcome is expected
    assert store.status(DB).leases == (other.lease,)


def test_a_release_that_cannot_land_by_its_deadline_raises_and_the_lease_stays() -> None:
    clock = FakeClock()
    store = flaky_store(clock, failures=0)
    (mine,) = fill_grants(store, TTL)
    store.failures = 10**6

    with pytest.raises(StoreUnavailable):
        give_back(store, clock, mine.token, budget_ms=1_000)

    assert store.status(DB).leases == (mine.lease,)


def test_a_failure_that_will_not_pass_is_raised_at_once_without_waiting() -> None:
    clock = FakeClock()
    store = flaky_store(clock, failures=10**6, retryable=False)  # say, AccessDenied

    with pytest.raises(StoreUnavailable) as refused:
        wait_for_lease(store, clock, budget_ms=10_000)
    with pytest.raises(StoreUnavailable):
        give_back(store, clock, new_secret(), budget_ms=10_000)

    assert not refused.value.retryable
    assert clock.slept_ms == []


def test_a_proposed_secret_is_left_for_its_proposer_to_give_back() -> None:
    # Another copy of the same call (a resent invoke) may have been granted this lease.
    clock = FakeClock()
    store = flaky_store(clock, failures=0)
    secret = new_secret()
    copy = store.acquire(DB, "fn/req-1", secret=secret)
    assert isinstance(copy, Granted)
    store.applied, store.failures = True, 1

    with pytest.raises(StoreUnavailable):
        store.acquire(DB, "fn/req-1", secret=secret)

    assert store.status(DB).leases == (copy.lease,)
    # Its proposer gives it back with the secret alone (it never heard of the grant).
    store.failures = 0
    assert store.release(DB, secret) is ReleaseOutcome.RELEASED
    assert store.status(DB).leases == ()
