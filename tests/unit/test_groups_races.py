"""Groups where timing or history bites (found by review): a change racing with acquires, a
slow pool write after its ticket, a cap put on a group that already borrows, a share
forgotten under another store's cached groups, tags running out."""

from __future__ import annotations

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import Granted, InvalidInput, LeaseLost, Quota, Rejected
from domain.changes import SETTLE_EVERY_MS
from domain.groups import Groups, Reservation, parse_reservations
from tests.fakes import FakeClock, HookedItems

DB = "db"


def test_pool_grants_during_a_change_never_take_the_quota_past_its_limit() -> None:
    """Another store's acquires land while a change of groups reads what the items hold."""
    clock = FakeClock()
    race = [False]

    def late_acquires(operation: str, applied: bool) -> None:
        if race[0] and operation == "read_items" and not applied:
            race[0] = False
            for n in range(5):
                other.acquire(DB, f"late/{n}", 60_000)

    items = HookedItems(late_acquires)
    store = InMemoryLeaseStore(clock, items=items, reclaim_grace_ms=0)
    other = InMemoryLeaseStore(clock, items=items, reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 60_000))
    for n in range(5):
        store.acquire(DB, f"early/{n}", 60_000)
    race[0] = True

    store.set_quota(DB, Quota(10, 60_000), [Reservation("api", 8)])
    for n in range(8):
        store.acquire(DB, f"api/{n}", 60_000, group="api")

    assert store.status(DB).in_use <= 10


def test_a_late_pool_write_extends_its_ticket_so_the_cap_still_counts_it() -> None:
    """A pool write that lands 1.5 s after its ticket's (a retry, a throttle)."""
    clock = FakeClock()
    slow = [False]
    writes: list[str] = []

    def late_pool_write(operation: str, applied: bool) -> None:
        writes.append(operation)
        # The second grant of a borrow is the pool's: it lands late.
        if slow[0] and operation == "add" and not applied and writes.count("add") == 2:
            clock.advance(1_500)

    store = InMemoryLeaseStore(clock, items=HookedItems(late_pool_write), reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 10_000), [Reservation("batch", 0, max=1)])
    writes.clear()
    slow[0] = True
    first = store.acquire(DB, "batch/1", 10_000, group="batch")
    slow[0] = False
    assert isinstance(first, Granted)

    clock.advance(9_600)  # the ticket as first written has ended; the lease has not
    second = store.acquire(DB, "batch/2", 10_000, group="batch")

    assert isinstance(second, Rejected)


def test_capping_a_group_that_borrows_lets_its_older_leases_drain() -> None:
    """Leases borrowed before the cap count against it (no ticket counts them), until they
    are given back at their next renewal; then the cap's room is the group's again."""
    clock = FakeClock()
    store = InMemoryLeaseStore(clock, reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 60_000), [Reservation("batch", 0)])
    before = [store.acquire(DB, f"batch/{n}", group="batch") for n in range(6)]
    store.set_quota(DB, Quota(10, 60_000), [Reservation("batch", 0, max=3)])
    assert isinstance(store.acquire(DB, "batch/new", group="batch"), Rejected)  # 6 past 3

    renewed = [store.renew(DB, grant.token, 60_000) for grant in before]  # type: ignore[union-attr]

    assert all(isinstance(result, LeaseLost) for result in renewed)
    assert store.status(DB).in_use == 0  # given back, not left to run
    clock.advance(SETTLE_EVERY_MS)  # the change, pending while they lived, settles
    after = [store.acquire(DB, f"batch/{n}", group="batch") for n in range(4)]
    assert [isinstance(result, Granted) for result in after] == [True, True, True, False]


def test_a_group_forgotten_under_another_stores_cache_takes_the_pool() -> None:
    store = InMemoryLeaseStore(FakeClock(), reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 10_000), [Reservation("api", 2)])
    granted = store.acquire(DB, "warm", 10_000, group="api")
    assert isinstance(granted, Granted)
    cached = InMemoryLeaseStore(store.clock, items=store.memory, reclaim_grace_ms=0)
    assert isinstance(cached.acquire(DB, "api/0", 10_000, group="api"), Granted)  # reads groups
    store.release(DB, granted.token)
    cached_first = cached.status(DB, "api").leases[0]
    assert cached.force_release(DB, [cached_first]) == (cached_first,)
    store.set_quota(DB, Quota(10, 10_000), [])  # api is idle: forgotten, its share deleted

    result = cached.acquire(DB, "api/1", 10_000, group="api")  # on its cached groups

    assert isinstance(result, Granted)
    assert result.lease.group == ""


def test_tags_are_never_given_twice() -> None:
    groups = Groups(last_tag=9_997)
    groups = groups.replaced([Reservation("a")], 10)
    assert groups.rules[0].tag == 9_998

    with pytest.raises(InvalidInput, match="named every group it can"):
        groups.replaced([Reservation("a"), Reservation("b")], 10)


@pytest.mark.parametrize("text", ["api=--5", "api=\u00b2", "api=1:max=\u0663"])
def test_a_figure_that_is_no_ascii_whole_number_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a whole number"):
        parse_reservations(text)
