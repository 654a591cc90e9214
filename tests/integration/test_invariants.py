"""DESIGN.md's invariants over random interleavings of acquire, release, renew, quota
changes, expiry and clock jumps, checked against a model on both stores.

I1 live leases never exceed the limit; I2 a lease is released at most once;
I3 a lease whose holder vanished stops counting at its expiry (and is reclaimed a skew
margin after it, never before); I4 a refused call changes nothing (but the advisory note
that someone waits), and neither does a token that is not its grant's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from domain import Granted, LeaseLost, Quota, ReleaseOutcome, Renewed
from domain.model import SKEW_MARGIN_MS
from domain.tokens import Token, parse_token
from tests.conftest import StoreUnderTest, make_dynamodb_store, make_memory_store
from tests.fakes import FakeClock

TTL = 10_000
TTLS = st.sampled_from([None, 500, 5_000, 20_000])
# A grant as the machine holds it: its lease id (public) and its token (the holder's).
NEVER_GRANTED = ("never-granted", "never-granted-secret-0001.1")


class LeaseMachine(RuleBasedStateMachine):
    leases = Bundle("leases")

    # A split quota (shards of 2 leases: limits up to 7 over up to 4 shards) may re-share
    # the room that held leases left only when one acquirer claims it, at most once a
    # second; until then it may say "no capacity" with room to spare (never the reverse),
    # and a refused acquire may write shares (never a lease).
    split = False

    def __init__(self, make: Callable[[FakeClock], StoreUnderTest]) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.under_test = make(self.clock)
        self.store = self.under_test.store
        self.db = f"db-{uuid.uuid4().hex[:10]}"
        self.limit = 3
        self.store.set_quota(self.db, Quota(self.limit, TTL))
        self.model: dict[str, int] = {}  # every entry the store should hold: id -> expiry
        self.over_limit_by_admin = False  # set while a lowered limit sits below live leases
        self.shares_may_lag = False  # split: a change left held leases to drain

    def live(self) -> set[str]:
        now = self.clock.now_ms()
        return {lease_id for lease_id, expiry in self.model.items() if expiry > now}

    def held(self) -> set[str]:
        """Live, or expired less than the skew margin ago: not yet to be reclaimed."""
        since = self.clock.now_ms() - SKEW_MARGIN_MS
        return {lease_id for lease_id, expiry in self.model.items() if expiry > since}

    def expected_expiry(self, ttl: int | None) -> int:
        return self.clock.now_ms() + (TTL if ttl is None else ttl)

    @rule(target=leases, ttl=TTLS)
    def acquire(self, ttl: int | None) -> object:
        before = self.under_test.dump_but_note()
        result = self.store.acquire(self.db, "machine", ttl)
        if not isinstance(result, Granted):
            if not self.shares_may_lag:
                assert len(self.held()) >= self.limit, "rejected although a lease was free"
            if self.split:
                self.expired_may_go("I4: a rejected acquire wrote")
            else:
                # Only the waiters' note may change.
                assert self.under_test.dump_but_note() == before, "I4: a rejected acquire wrote"
            return multiple()
        assert len(self.held()) < self.limit, "I1: granted beyond the limit"
        for victim in result.reclaimed:
            assert victim.id not in self.held(), "reclaimed a lease within its skew margin"
            assert self.model.pop(victim.id) == victim.expires_at_ms
        assert result.lease.expires_at_ms == self.expected_expiry(ttl)
        assert result.lease.id not in self.model, "a grant reused a held lease's id"
        self.model[result.lease.id] = result.lease.expires_at_ms
        if self.split:  # a re-share on the way may have removed expired entries
            self.expired_may_go("an acquire removed a live lease")
        return (result.lease.id, result.token)

    @rule(grant=st.one_of(leases, st.just(NEVER_GRANTED)))
    def release(self, grant: tuple[str, str]) -> None:
        lease_id, token = grant
        before = self.under_test.dump()
        outcome = self.store.release(self.db, token)
        if lease_id in self.model:
            assert outcome is ReleaseOutcome.RELEASED
            del self.model[lease_id]
        else:
            assert outcome is ReleaseOutcome.ALREADY_RELEASED, "I2: released twice"
            assert self.under_test.dump() == before, "I2: a second release wrote"

    @rule(grant=leases, ttl=TTLS)
    def renew(self, grant: tuple[str, str], ttl: int | None) -> None:
        lease_id, token = grant
        before = self.under_test.dump()
        result = self.store.renew(self.db, token, ttl)
        if lease_id in self.live():
            assert isinstance(result, Renewed)
            # A renewal never shortens a lease.
            expected = max(self.model[lease_id], self.expected_expiry(ttl))
            assert result.lease.expires_at_ms == expected
            self.model[lease_id] = result.lease.expires_at_ms
        else:
            assert result == LeaseLost(lease_id)
            assert self.under_test.dump() == before, "I4: a lost renew wrote"

    @rule(grant=leases, ttl=TTLS)
    def act_on_another_fence(self, grant: tuple[str, str], ttl: int | None) -> None:
        """A token with the grant's secret but not its fence (a stale or forged one)."""
        lease_id, token = grant
        real = parse_token(token)
        assert real.fence is not None
        forged = str(Token(real.secret, real.fence + 1, real.shard))
        before = self.under_test.dump()

        assert self.store.renew(self.db, forged, ttl) == LeaseLost(lease_id)
        assert self.store.release(self.db, forged) is ReleaseOutcome.ALREADY_RELEASED
        assert self.under_test.dump() == before, "I4: a token not its grant's wrote"

    @rule(ms=st.integers(min_value=0, max_value=25_000))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)

    def expired_may_go(self, broken: str) -> None:
        """A split quota's re-share removes expired entries first: anything else held is
        as it was."""
        stored = {lease.id: lease.expires_at_ms for lease in self.store.status(self.db).leases}
        held = {lease_id: self.model[lease_id] for lease_id in self.held()}
        assert stored.items() <= self.model.items(), broken
        assert held.items() <= stored.items(), broken
        self.model = stored

    @rule(limit=st.integers(min_value=1, max_value=7))
    def operator_sets_limit(self, limit: int) -> None:
        self.store.set_quota(self.db, Quota(limit, TTL))
        if self.split:
            self.expired_may_go("set_quota removed a live lease")
        self.limit = limit
        self.over_limit_by_admin = len(self.live()) > limit
        self.shares_may_lag = self.split and (self.shares_may_lag or self.over_limit_by_admin)

    @rule()
    def every_holder_vanishes(self) -> None:
        """I3: once every lease has expired, and the skew margin after, the whole quota can
        be taken again."""
        self.clock.advance(max(self.model.values(), default=0) - self.clock.now_ms() + 1)
        self.clock.advance(SKEW_MARGIN_MS)
        self.clock.advance(1_000)  # a split quota's claim to re-share has run out
        self.shares_may_lag = False
        for _ in range(self.limit):
            result = self.store.acquire(self.db)
            assert isinstance(result, Granted), "I3: an expired lease still blocks the quota"
            for victim in result.reclaimed:
                del self.model[victim.id]
            self.model[result.lease.id] = result.lease.expires_at_ms
            if self.split:
                self.expired_may_go("an acquire removed a live lease")

    @invariant()
    def store_matches_model(self) -> None:
        status = self.store.status(self.db)
        assert {lease.id: lease.expires_at_ms for lease in status.leases} == self.model
        assert status.in_use == len(self.live())
        if len(self.live()) <= self.limit:
            self.over_limit_by_admin = False
        if not self.over_limit_by_admin:
            assert status.in_use <= status.limit, "I1: live leases above the limit"


def machine_for(
    make: Callable[[FakeClock], StoreUnderTest], *, split: bool = False
) -> type[LeaseMachine]:
    class Machine(LeaseMachine):
        def __init__(self) -> None:
            self.split = split
            super().__init__(make)

    return Machine


def test_invariants_hold_on_the_in_memory_store() -> None:
    run_state_machine_as_test(
        machine_for(make_memory_store),
        settings=settings(max_examples=150, stateful_step_count=40, deadline=None),
    )


@pytest.mark.integration
def test_invariants_hold_on_the_dynamodb_store(request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue("dynamodb_client")
    table = request.getfixturevalue("leases_table")
    run_state_machine_as_test(
        machine_for(lambda clock: make_dynamodb_store(clock, client, table)),
        settings=settings(
            # The DynamoDB store's conditions are held to the rules one by one on every item
            # shape (test_item_rules_on_dynamodb.py); here, a few runs end to end.
            max_examples=10,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_invariants_hold_on_a_split_quota_on_the_in_memory_store() -> None:
    run_state_machine_as_test(
        machine_for(lambda clock: make_memory_store(clock, shard_capacity=2), split=True),
        settings=settings(max_examples=150, stateful_step_count=40, deadline=None),
    )


@pytest.mark.integration
def test_invariants_hold_on_a_split_quota_on_the_dynamodb_store(
    request: pytest.FixtureRequest,
) -> None:
    client = request.getfixturevalue("dynamodb_client")
    table = request.getfixturevalue("leases_table")
    run_state_machine_as_test(
        machine_for(
            lambda clock: make_dynamodb_store(clock, client, table, shard_capacity=2), split=True
        ),
        settings=settings(
            # The DynamoDB store's conditions are held to the rules one by one on every item
            # shape (test_item_rules_on_dynamodb.py); here, a few runs end to end.
            max_examples=10,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
