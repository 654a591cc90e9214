"""The client library's lease-around-a-connection, on the in-memory store."""

from __future__ import annotations

import random
from typing import Any

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import (
    Granted,
    InvalidInput,
    NoCapacity,
    Quota,
    ReleaseOutcome,
    StoreUnavailable,
)
from domain.model import SKEW_MARGIN_MS
from service.client import ConnectionLeases, holder_of
from tests.fakes import Boom, FakeClock, FakeContext

DB = "orders-mysql"


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def leases(store: InMemoryLeaseStore, clock: FakeClock) -> ConnectionLeases:
    return ConnectionLeases(store, DB, clock=clock, rng=random.Random(3))


def test_the_lease_is_held_while_the_connection_is_open_then_given_back(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    connection = FakeConnection()

    with leases.connect(lambda: connection, context=FakeContext(clock)) as opened:
        assert opened is connection
        assert store.status(DB).in_use == 1

    assert connection.closed
    assert store.status(DB).in_use == 0


def test_the_lease_is_given_back_when_the_body_raises(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    connection = FakeConnection()

    with pytest.raises(Boom), leases.connect(lambda: connection, context=FakeContext(clock)):
        raise Boom

    assert connection.closed
    assert store.status(DB).in_use == 0


def test_the_lease_is_given_back_when_connecting_fails(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    def refuse() -> FakeConnection:
        raise Boom("Can't connect to MySQL server")

    with pytest.raises(Boom), leases.connect(refuse, context=FakeContext(clock)):
        pytest.fail("the body must not run without a connection")

    assert store.status(DB).in_use == 0


def test_the_lease_lasts_as_long_as_the_invocation_can(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    context = FakeContext(clock, timeout_ms=12_000)

    with leases.connect(FakeConnection, context=context):
        (lease,) = store.status(DB).leases

    # It ends a skew margin before the invocation's deadline: the connection is closed by
    # the time Lambda ends the invocation, however far the store's clock is from ours.
    assert lease.expires_at_ms == clock.now_ms() + 12_000 - SKEW_MARGIN_MS
    assert lease.holder == holder_of(context)
    assert lease.holder.startswith("orders-fn/8f14e45f")


def test_it_waits_for_a_lease_while_one_would_leave_the_margin_to_use_then_says_no_capacity(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    store.acquire(DB, "someone/else", ttl_ms=60_000)
    context = FakeContext(clock, timeout_ms=5_000)

    with pytest.raises(NoCapacity) as refused, leases.connect(FakeConnection, context=context):
        pytest.fail("no lease, no connection")

    # Its lease would end the skew margin before the deadline: waiting longer than until
    # it would leave the safety margin to use gains nothing.
    assert refused.value.waited_ms == 5_000 - SKEW_MARGIN_MS - leases.safety_margin_ms
    assert refused.value.attempts > 1
    assert context.get_remaining_time_in_millis() == SKEW_MARGIN_MS + leases.safety_margin_ms


class GivesBackLater(FakeClock):
    """Another holder gives its lease back 700 ms into our wait."""

    def __init__(self) -> None:
        super().__init__()
        self.store = InMemoryLeaseStore(self)
        self.store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))
        held = self.store.acquire(DB, "someone/else", ttl_ms=60_000)
        assert isinstance(held, Granted)
        self.held, self.give_back_at = held.token, self.now_ms() + 700

    def sleep_ms(self, ms: int) -> None:
        super().sleep_ms(ms)
        if self.now_ms() >= self.give_back_at:
            self.store.release(DB, self.held)


def test_it_gets_the_lease_when_the_holder_gives_it_back_during_the_wait() -> None:
    clock = GivesBackLater()
    leases = ConnectionLeases(clock.store, DB, clock=clock, rng=random.Random(5))

    with leases.connect(FakeConnection, wait_budget_ms=10_000):
        assert clock.store.status(DB).in_use == 1

    assert 700 <= leases.last_wait_ms < 10_000


def test_without_a_context_it_tries_once(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    store.acquire(DB, "someone/else")

    with pytest.raises(NoCapacity) as refused, leases.connect(FakeConnection):
        pass

    assert refused.value.attempts == 1


class ForgetfulStore(InMemoryLeaseStore):
    def release(self, database: str, token: str) -> ReleaseOutcome:
        raise StoreUnavailable("release", "connection reset", retryable=True)


def test_a_failed_give_back_does_not_hide_the_result(clock: FakeClock) -> None:
    store = ForgetfulStore(clock)
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))
    leases = ConnectionLeases(store, DB, clock=clock)

    with leases.connect(FakeConnection, context=FakeContext(clock)) as connection:
        result = connection

    assert isinstance(result, FakeConnection)
    assert result.closed


def test_the_handler_decorator_passes_the_connection_and_gives_the_lease_back(
    leases: ConnectionLeases, store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    @leases.handler(FakeConnection)
    def handler(event: dict[str, Any], context: Any, connection: FakeConnection) -> str:
        assert store.status(DB).in_use == 1
        return f"{event['name']} via {type(connection).__name__}"

    assert handler({"name": "q"}, FakeContext(clock)) == "q via FakeConnection"
    assert store.status(DB).in_use == 0


def test_a_lease_taken_after_a_wait_still_ends_with_the_invocation() -> None:
    clock = GivesBackLater()
    leases = ConnectionLeases(clock.store, DB, clock=clock, rng=random.Random(5))
    context = FakeContext(clock, timeout_ms=10_000)
    invocation_ends = clock.now_ms() + 10_000

    with leases.connect(FakeConnection, context=context):
        (lease,) = clock.store.status(DB).leases

    assert leases.last_wait_ms >= 700
    assert lease.expires_at_ms == invocation_ends - SKEW_MARGIN_MS


def test_a_lease_that_expired_while_its_connection_was_open_is_reported(
    leases: ConnectionLeases,
    store: InMemoryLeaseStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with leases.connect(FakeConnection, ttl_ms=1_000):
        clock.advance(5_000)  # the body outlives its lease
        store.acquire(DB, "someone/else")  # which lets another holder in

    assert "expired before its connection closed" in caplog.text


class SlowToReleaseStore(InMemoryLeaseStore):
    """Loses the answers of its first two releases after applying the first one."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.lost_answers = 2

    def release(self, database: str, token: str) -> ReleaseOutcome:
        outcome = super().release(database, token)
        if self.lost_answers:
            self.lost_answers -= 1
            raise StoreUnavailable("release", "ConnectionClosedError", retryable=True)
        return outcome


def test_a_give_back_is_retried_until_it_lands_without_a_false_expiry_warning(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SlowToReleaseStore(clock)
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))
    leases = ConnectionLeases(store, DB, clock=clock)

    with leases.connect(FakeConnection, context=FakeContext(clock)):
        pass

    assert store.lost_answers == 0
    assert store.status(DB).leases == ()
    assert "expired" not in caplog.text


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"database": ""}, "database"),
        ({"database": 42}, "database"),
        ({"safety_margin_ms": "1000"}, "safety_margin_ms"),
        ({"safety_margin_ms": -1}, "safety_margin_ms"),
        ({"release_budget_ms": 1.5}, "release_budget_ms"),
    ],
)
def test_bad_options_are_refused_when_the_leases_are_made(
    store: InMemoryLeaseStore, clock: FakeClock, options: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {"database": DB, "clock": clock} | options
    database = arguments.pop("database")

    with pytest.raises(InvalidInput) as refused:
        ConnectionLeases(store, database, **arguments)

    assert refused.value.field == field


@pytest.mark.parametrize("budget", ["10", 2.5, -5, [1], True], ids=repr)
def test_a_bad_wait_budget_is_refused_before_any_lease_is_taken(
    leases: ConnectionLeases, store: InMemoryLeaseStore, budget: Any
) -> None:
    requests_before = store.request_count()
    with (
        pytest.raises(InvalidInput, match="wait_budget_ms"),
        leases.connect(FakeConnection, wait_budget_ms=budget),
    ):
        pass

    assert store.request_count() == requests_before


class RetriedBySdkStore(InMemoryLeaseStore):
    """The SDK resent a release whose answer was lost: the resend finds the lease gone."""

    def release(self, database: str, token: str) -> ReleaseOutcome:
        super().release(database, token)
        return super().release(database, token)


def test_a_release_the_sdk_resent_is_not_reported_as_an_expired_lease(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = RetriedBySdkStore(clock)
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))

    with ConnectionLeases(store, DB, clock=clock).connect(FakeConnection, ttl_ms=1_000):
        clock.advance(500)  # within the lease

    assert store.status(DB).leases == ()
    assert "expired" not in caplog.text
