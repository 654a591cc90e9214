"""Warm mode of the client: one lease and connection kept across an environment's
invocations, on the in-memory store."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import (
    AcquireResult,
    Granted,
    InvalidInput,
    LeaseLost,
    Quota,
    Rejected,
    RenewResult,
    StoreUnavailable,
)
from domain.model import SKEW_MARGIN_MS
from domain.tokens import lease_key, parse_token
from domain.warm import KeepWarm
from service.client import ConnectionLeases
from tests.fakes import Boom, FakeClock, FakeContext

DB = "orders-mysql"
WARM = KeepWarm(hold_ms=500, idle_close_s=5)


class Cursor:
    def __init__(self, statements: list[str]) -> None:
        self._statements = statements

    def execute(self, statement: str) -> None:
        self._statements.append(statement)

    def close(self) -> None:
        pass


IDLE_CLOSE = "SET SESSION wait_timeout = 5"
RESET = "reset_session()"  # noted among the statements, where the client called it
# One invocation on a new connection: its idle close, then the reset after the invocation
# and the idle close again (the reset puts session variables back to the server's).
ONE_INVOCATION = [IDLE_CLOSE, RESET, IDLE_CLOSE]


class UnresettableConnection:
    """A DB-API connection that records what it ran; it has no reset hook."""

    opened = 0

    def __init__(self) -> None:
        UnresettableConnection.opened += 1
        self.statements: list[str] = []
        self.closed = False
        self.open = True
        self.server_thread_id = (UnresettableConnection.opened,)

    def cursor(self) -> Cursor:
        return Cursor(self.statements)

    def close(self) -> None:
        self.closed = True


class DbApiConnection(UnresettableConnection):
    """One with mysql-connector's `reset_session`, the hook through which a kept connection
    of a driver other than pymysql is made clean and reused."""

    def reset_session(self) -> None:
        self.statements.append(RESET)


@pytest.fixture
def leases(store: InMemoryLeaseStore, clock: FakeClock) -> ConnectionLeases:
    return ConnectionLeases(store, DB, clock=clock, rng=random.Random(3), keep_warm=WARM)


def invoke(leases: ConnectionLeases, clock: FakeClock, *, runs_ms: int = 20) -> DbApiConnection:
    with leases.connect(DbApiConnection, context=FakeContext(clock, timeout_ms=3_000)) as c:
        clock.advance(runs_ms)
        return c


def test_invocations_in_one_environment_share_one_lease_and_one_connection(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    first = invoke(leases, clock)
    (lease,) = store.status(DB).leases
    second = invoke(leases, clock)

    assert second is first
    assert not first.closed
    assert store.status(DB).leases == (lease,)  # still held between invocations
    assert store.requests["add"] == 1
    assert store.requests["remove"] == 0
    assert leases.last_wait_ms == 0


def test_the_server_is_told_to_close_the_connection_after_its_idle_time(
    leases: ConnectionLeases, clock: FakeClock
) -> None:
    connection = invoke(leases, clock)

    # Again after the reset, which puts session variables back to the server's defaults.
    assert connection.statements == ONE_INVOCATION


def test_the_lease_outlasts_the_hold_the_invocation_and_the_idle_close(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    granted_at = clock.now_ms()
    invoke(leases, clock)

    (lease,) = store.status(DB).leases
    assert lease.expires_at_ms == granted_at + WARM.ttl_ms(3_000)


def waiter_noted(store: InMemoryLeaseStore) -> None:
    """Fill the quota with another holder, have a third caller refused (the store notes
    that someone waits), and free the slot again: the next grant hears of the waiter."""
    held = store.acquire(DB, "someone/else")
    assert isinstance(held, Granted)
    assert isinstance(store.acquire(DB, "a/waiter"), Rejected)
    store.release(DB, held.token)


def test_after_its_hold_with_a_waiter_it_gives_back_and_stays_away_a_turn(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    waiter_noted(store)
    adds = store.requests["add"]

    first = invoke(leases, clock, runs_ms=WARM.hold_ms)

    assert first.closed
    assert store.status(DB).in_use == 0
    gave_back_at = clock.now_ms()
    second = invoke(leases, clock)
    assert second is not first
    # It stays away about as long as a waiter sleeps, so the waiter's next poll gets the slot.
    assert 20 <= clock.slept_ms[-1] <= 1_000
    assert clock.now_ms() - gave_back_at >= clock.slept_ms[-1]
    assert store.requests["add"] == adds + 2


def test_a_turn_is_not_waited_out_again_by_an_invocation_that_comes_later(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    waiter_noted(store)
    invoke(leases, clock, runs_ms=WARM.hold_ms)
    clock.advance(60_000)  # the environment was frozen for a minute
    slept = len(clock.slept_ms)

    invoke(leases, clock)

    assert len(clock.slept_ms) == slept
    assert leases.last_wait_ms == 0


def test_with_nobody_waiting_the_environment_renews_for_another_hold_even_on_a_full_quota(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    first = invoke(leases, clock, runs_ms=WARM.hold_ms)  # a limit of 1: the quota is full

    second = invoke(leases, clock)

    assert second is first
    assert not first.closed
    assert (store.requests["add"], store.requests["extend"], store.requests["remove"]) == (1, 1, 0)
    (lease,) = store.status(DB).leases
    assert lease.expires_at_ms >= clock.now_ms() + WARM.ttl_ms(3_000) - 20
    assert clock.slept_ms == []


def test_a_renewal_that_hears_of_a_waiter_gives_the_lease_back_after_that_invocation(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    first = invoke(leases, clock, runs_ms=WARM.hold_ms)
    store.acquire(DB, "someone/else")  # refused: now someone waits

    invoke(leases, clock, runs_ms=10)  # its hold is over: renewing, it hears of the waiter

    assert first.closed
    assert store.requests["extend"] == 1
    assert store.status(DB).in_use == 0


def test_an_environment_that_finds_its_hold_over_on_entry_and_a_waiter_stays_away_a_turn(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    waiter_noted(store)
    first = invoke(leases, clock, runs_ms=10)  # granted hearing of the waiter; hold not over
    clock.advance(WARM.hold_ms)  # idle past its hold

    second = invoke(leases, clock)

    assert first.closed
    assert second is not first
    assert 20 <= clock.slept_ms[-1] <= 1_000  # it let the waiter have a turn first


def test_a_body_that_raises_closes_the_connection_and_gives_the_lease_back(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    first = invoke(leases, clock)

    with pytest.raises(Boom), leases.connect(DbApiConnection, context=FakeContext(clock)):
        raise Boom

    assert first.closed
    assert store.status(DB).in_use == 0
    assert invoke(leases, clock) is not first


def test_a_failed_connect_gives_the_lease_back_and_keeps_nothing(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    def refuse() -> DbApiConnection:
        raise Boom

    with pytest.raises(Boom), leases.connect(refuse, context=FakeContext(clock)):
        pytest.fail("no connection, no body")

    assert store.status(DB).in_use == 0
    invoke(leases, clock)
    assert store.status(DB).in_use == 1


def test_an_invocation_longer_than_the_kept_lease_renews_it_and_keeps_the_connection(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    first = invoke(leases, clock)

    with leases.connect(DbApiConnection, context=FakeContext(clock, timeout_ms=20_000)) as c:
        (lease,) = store.status(DB).leases

    assert c is first
    assert store.requests["extend"] == 1
    assert lease.expires_at_ms >= clock.now_ms() + 20_000 + WARM.after_last_use_ms - 1


class LosesRenewals(InMemoryLeaseStore):
    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        self.release(database, token)
        return LeaseLost(lease_key(database, parse_token(token).secret))


def test_a_lost_lease_is_not_used_again_its_connection_is_closed(clock: FakeClock) -> None:
    store = LosesRenewals(clock)
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))
    leases = ConnectionLeases(store, DB, clock=clock, keep_warm=WARM)
    first = invoke(leases, clock)

    with leases.connect(DbApiConnection, context=FakeContext(clock, timeout_ms=20_000)) as c:
        assert c is not first
        assert first.closed
        assert store.status(DB).in_use == 1


def test_a_connection_idle_past_the_servers_timeout_is_opened_again_under_the_same_lease(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    warm = ConnectionLeases(
        store, DB, clock=clock, keep_warm=KeepWarm(hold_ms=60_000, idle_close_s=1)
    )
    first = invoke(warm, clock)
    (lease,) = store.status(DB).leases
    clock.advance(1_000)

    second = invoke(warm, clock)

    assert second is not first
    assert first.closed
    assert store.status(DB).leases == (lease,)


def test_a_frozen_environment_that_outlived_its_lease_starts_afresh_without_alarm(
    leases: ConnectionLeases,
    store: InMemoryLeaseStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = invoke(leases, clock)
    (lease,) = store.status(DB).leases
    # Frozen past its lease's end and the skew margin after it, when it may be reclaimed.
    clock.advance(lease.expires_at_ms - clock.now_ms() + SKEW_MARGIN_MS + 1)
    other = store.acquire(DB, "someone/else")  # reclaims the expired lease
    assert isinstance(other, Granted)
    assert other.reclaimed == (lease,)
    store.release(DB, other.token)

    with caplog.at_level(logging.WARNING):
        second = invoke(leases, clock)

    # The server closed the idle connection well before the lease ended: nothing to report.
    assert "expired before its connection closed" not in caplog.text
    assert second is not first
    assert store.status(DB).in_use == 1


def test_close_gives_the_kept_lease_back(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    connection = invoke(leases, clock)

    leases.close()
    leases.close()

    assert connection.closed
    assert store.status(DB).in_use == 0


def test_warm_mode_without_a_context_needs_a_ttl_and_takes_nothing_without_one(
    leases: ConnectionLeases, store: InMemoryLeaseStore
) -> None:
    with pytest.raises(InvalidInput) as refused, leases.connect(DbApiConnection):
        pytest.fail("no lease")

    assert refused.value.field == "ttl_ms"
    assert store.requests["add"] == 0
    with leases.connect(DbApiConnection, ttl_ms=2_000):
        assert store.status(DB).in_use == 1


def test_keep_warm_must_be_a_keep_warm(store: InMemoryLeaseStore) -> None:
    with pytest.raises(InvalidInput) as refused:
        ConnectionLeases(store, DB, keep_warm=500)  # type: ignore[arg-type]
    assert refused.value.field == "keep_warm"


def test_a_ttl_bounds_the_warm_lease_rather_than_the_functions_whole_timeout(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    granted_at = clock.now_ms()
    context = FakeContext(clock, timeout_ms=900_000)

    with leases.connect(DbApiConnection, context=context, ttl_ms=2_000):
        (lease,) = store.status(DB).leases

    # What a frozen environment keeps from the quota: the hold, one invocation's hold of
    # the connection, the server's idle close; not 15 minutes.
    assert lease.expires_at_ms == granted_at + WARM.hold_ms + 2_000 + WARM.after_last_use_ms


def test_a_body_that_runs_past_what_the_lease_covers_closes_its_connection_at_once(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    # The lease covers the hold, 1 s of use and the idle close: a 2 s body leaves too
    # little of it for the server to close an idle connection in time.
    with leases.connect(DbApiConnection, ttl_ms=1_000) as connection:
        clock.advance(2_000)

    assert connection.closed
    assert store.status(DB).in_use == 0


def test_a_body_that_outlived_its_lease_is_reported(
    leases: ConnectionLeases,
    store: InMemoryLeaseStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING), leases.connect(DbApiConnection, ttl_ms=1_000) as c:
        (lease,) = store.status(DB).leases
        clock.advance(lease.expires_at_ms - clock.now_ms())

    assert c.closed
    assert "expired before its connection closed" in caplog.text


def test_nested_use_of_one_warm_instance_is_refused_and_the_outer_one_is_unharmed(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    with leases.connect(DbApiConnection, ttl_ms=1_000) as outer:
        with pytest.raises(InvalidInput) as refused, leases.connect(DbApiConnection, ttl_ms=1_000):
            pytest.fail("no second connection")
        assert refused.value.field == "keep_warm"
        assert not outer.closed

    assert store.status(DB).in_use == 1
    assert invoke(leases, clock) is outer


class NoCursor:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_connection_without_a_cursor_is_refused_clearly_and_nothing_is_kept(
    leases: ConnectionLeases, store: InMemoryLeaseStore
) -> None:
    opened: list[NoCursor] = []

    def connect() -> NoCursor:
        opened.append(NoCursor())
        return opened[-1]

    with pytest.raises(InvalidInput) as refused, leases.connect(connect, ttl_ms=1_000):
        pytest.fail("no body without a usable connection")

    assert refused.value.field == "connect"
    assert "DB-API" in str(refused.value)
    assert opened[0].closed
    assert store.status(DB).in_use == 0


def test_a_connection_closed_or_reconnected_by_the_body_is_opened_afresh(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    first = invoke(leases, clock)
    first.server_thread_id = (99,)  # pymysql's ping(reconnect=True): a new session
    second = invoke(leases, clock)
    second.open = False  # closed by the body
    third = invoke(leases, clock)

    assert second is not first
    assert third is not second
    assert third.statements == ONE_INVOCATION
    assert store.requests["add"] == 1


class FailingRenewals(InMemoryLeaseStore):
    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        raise StoreUnavailable("renew", "throttled", retryable=True)


def test_a_failed_renewal_gives_the_lease_back_and_takes_a_new_one(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FailingRenewals(clock)
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))
    leases = ConnectionLeases(store, DB, clock=clock, keep_warm=WARM)
    first = invoke(leases, clock, runs_ms=WARM.hold_ms)

    with caplog.at_level(logging.WARNING):
        second = invoke(leases, clock)

    assert "could not renew" in caplog.text
    assert first.closed
    assert second is not first
    assert store.status(DB).in_use == 1
    assert store.requests["remove"] == 1


def test_a_bad_ttl_is_refused_in_warm_mode_too(
    leases: ConnectionLeases, store: InMemoryLeaseStore
) -> None:
    with pytest.raises(InvalidInput) as refused, leases.connect(DbApiConnection, ttl_ms=0):
        pytest.fail("no lease")

    assert refused.value.field == "ttl_ms"
    assert store.requests["add"] == 0


class SaysNothingOfWaiters(InMemoryLeaseStore):
    """A store (an older helper) that does not say whether anyone waits."""

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        result = super().acquire(database, holder, ttl_ms, secret, group=group)
        return replace(result, others_waiting=None) if isinstance(result, Granted) else result


@pytest.mark.parametrize(("limit", "given_back"), [(1, True), (2, False)])
def test_without_word_of_waiters_a_full_quota_counts_as_contended(
    clock: FakeClock, limit: int, given_back: bool
) -> None:
    store = SaysNothingOfWaiters(clock)
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=30_000))
    leases = ConnectionLeases(store, DB, clock=clock, keep_warm=WARM)

    connection = invoke(leases, clock, runs_ms=WARM.hold_ms)

    assert connection.closed is given_back


class SessionlessConnection(DbApiConnection):
    """A driver that does not say which server session it is on."""

    def __init__(self) -> None:
        super().__init__()
        del self.server_thread_id


def test_with_a_driver_that_hides_its_session_the_idle_close_is_set_again_on_reuse(
    leases: ConnectionLeases, clock: FakeClock
) -> None:
    with leases.connect(SessionlessConnection, ttl_ms=1_000) as first:
        pass
    with leases.connect(SessionlessConnection, ttl_ms=1_000) as second:
        pass

    assert second is first
    assert first.statements == [*ONE_INVOCATION, IDLE_CLOSE, RESET, IDLE_CLOSE]


def test_a_kept_connection_of_another_driver_is_reset_after_each_invocation_and_reused(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    first = invoke(leases, clock)
    assert first.statements == ONE_INVOCATION  # reset at the end of the invocation

    second = invoke(leases, clock)
    third = invoke(leases, clock)

    assert second is first
    assert third is first
    assert not first.closed
    assert first.statements.count(RESET) == 3
    assert (store.requests["add"], store.requests["remove"]) == (1, 0)


def test_a_kept_connection_that_cannot_be_reset_is_closed_and_the_lease_kept(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    """No reset hook: whatever an invocation left in the session (a transaction, variables,
    locks) must not reach the next one, so each gets a new connection, under one lease."""
    seen: list[UnresettableConnection] = []
    for _ in range(3):
        with leases.connect(UnresettableConnection, ttl_ms=1_000) as connection:
            clock.advance(20)
        assert connection.closed  # closed after its invocation, not at the next one's start
        seen.append(connection)
    (lease,) = store.status(DB).leases

    assert len({id(connection) for connection in seen}) == 3
    assert all(connection.statements == [IDLE_CLOSE] for connection in seen)
    assert store.status(DB).leases == (lease,)
    # The lease is kept: no store calls beyond the first grant.
    assert (store.requests["add"], store.requests["extend"], store.requests["remove"]) == (1, 0, 0)


class FailingReset(DbApiConnection):
    def reset_session(self) -> None:
        super().reset_session()
        raise Boom


def test_a_kept_connection_whose_reset_fails_is_closed_and_the_lease_kept(
    leases: ConnectionLeases,
    store: InMemoryLeaseStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        with leases.connect(FailingReset, ttl_ms=1_000) as first:
            pass
        with leases.connect(FailingReset, ttl_ms=1_000) as second:
            pass

    assert first.closed
    assert second is not first
    assert first.statements == [IDLE_CLOSE, RESET]  # no idle close set after a failed reset
    assert "could not be reset" in caplog.text
    assert (store.requests["add"], store.requests["remove"]) == (1, 0)
