"""The client with groups: a function's group (named, or its own name), per invocation and
warm, keeps to its reservation and its cap."""

from __future__ import annotations

import random

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import NoCapacity, Quota
from domain.groups import Reservation
from domain.warm import KeepWarm
from service.client import ConnectionLeases
from tests.fakes import FakeClock, FakeContext
from tests.unit.test_client_warm import DbApiConnection

DB = "orders-mysql"
WARM = KeepWarm(hold_ms=500, idle_close_s=5)


Connection = DbApiConnection


@pytest.fixture
def grouped(store: InMemoryLeaseStore) -> InMemoryLeaseStore:
    store.set_quota(
        DB,
        Quota(limit=3, default_ttl_ms=30_000),
        [Reservation("api", 1, borrow=False), Reservation("batch", max=1)],
    )
    return store


def client(
    store: InMemoryLeaseStore, clock: FakeClock, group: str, warm: KeepWarm | None = None
) -> ConnectionLeases:
    return ConnectionLeases(
        store, DB, clock=clock, rng=random.Random(1), group=group, keep_warm=warm
    )


def test_an_invocation_takes_its_groups_reserved_lease_and_gives_it_back(
    grouped: InMemoryLeaseStore, clock: FakeClock
) -> None:
    api = client(grouped, clock, "api")

    with api.connect(Connection, context=FakeContext(clock, timeout_ms=3_000)):
        (lease,) = grouped.status(DB).leases
        assert (lease.group, lease.borrowed) == ("api", False)

    assert grouped.status(DB).in_use == 0


def test_a_group_at_its_max_gets_no_capacity_while_the_pool_has_room(
    grouped: InMemoryLeaseStore, clock: FakeClock
) -> None:
    batch = client(grouped, clock, "batch")
    context = FakeContext(clock, timeout_ms=3_000)

    with (
        batch.connect(Connection, context=context),
        pytest.raises(NoCapacity),
        batch.connect(Connection, context=context, wait_budget_ms=0),
    ):
        pass

    assert grouped.status(DB).remaining == 3  # all given back, the ticket too


def test_the_function_name_is_the_group_when_none_is_named(
    grouped: InMemoryLeaseStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "api")
    monkeypatch.delenv("CONNLEASE_GROUP", raising=False)

    leases = ConnectionLeases(grouped, DB, clock=clock)

    assert leases.group == "api"
    monkeypatch.setenv("CONNLEASE_GROUP", "batch")
    assert ConnectionLeases(grouped, DB, clock=clock).group == "batch"


def test_a_warm_lease_of_a_borrowing_group_is_renewed_ticket_and_all(
    grouped: InMemoryLeaseStore, clock: FakeClock
) -> None:
    batch = client(grouped, clock, "batch", WARM)
    context = FakeContext(clock, timeout_ms=3_000)
    with batch.connect(Connection, context=context):
        clock.advance(WARM.hold_ms)  # its hold is over: the next invocation renews
    (first,) = grouped.status(DB).leases

    with batch.connect(Connection, context=context):
        pass

    (kept,) = grouped.status(DB).leases
    assert (kept.id, kept.group, kept.borrowed) == (first.id, "batch", True)
    assert grouped.requests["extend"] == 2  # the ticket, then the lease
    share = grouped.items.read(f"{DB}~batch~max")  # status shows no tickets
    assert share is not None
    (ticket,) = share.leases
    assert ticket.expires_at_ms >= kept.expires_at_ms  # the cap counts it while it lives
    batch.close()
    assert grouped.status(DB).in_use == 0
    # The ticket went back with the lease: the cap lets the next lease in.
    with client(grouped, clock, "batch").connect(Connection, context=context):
        pass
