"""Groups where timing or history bites (found by review): a change racing with acquires, a
slow pool write after its ticket, a cap put on a group that already borrows, a share
forgotten under another store's cached groups, tags running out."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import Granted, InvalidInput, LeaseLost, Quota, Rejected
from domain.groups import Groups, Reservation, parse_reservations
from domain.ports import NewLease, Write
from tests.fakes import FakeClock

DB = "db"


class RacingStore(InMemoryLeaseStore):
    """Another store's acquires land while a change of groups reads what the shares hold."""

    race = False

    def _read(self, database: str) -> Any:
        state = super()._read(database)
        if self.race and database == f"{DB}~api":
            self.race = False
            for n in range(5):
                self.acquire(DB, f"late/{n}", 60_000)
        return state


def test_pool_grants_during_a_change_never_take_the_quota_past_its_limit() -> None:
    store = RacingStore(FakeClock(), reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 60_000))
    for n in range(5):
        store.acquire(DB, f"early/{n}", 60_000)
    store.race = True

    store.set_quota(DB, Quota(10, 60_000), [Reservation("api", 8)])
    for n in range(8):
        store.acquire(DB, f"api/{n}", 60_000, group="api")

    assert store.status(DB).in_use <= 10


class SlowPoolStore(InMemoryLeaseStore):
    """A pool write that lands 1.5 s after its ticket's (a retry, a throttle)."""

    slow = False

    def _add(self, database: str, lease: NewLease, now_ms: int) -> Write:
        if self.slow and database == DB:
            self._clock.advance(1_500)  # type: ignore[attr-defined]
            now_ms = self._clock.now_ms()
        return super()._add(database, lease, now_ms)


def test_a_late_pool_write_extends_its_ticket_so_the_cap_still_counts_it() -> None:
    clock = FakeClock()
    store = SlowPoolStore(clock, reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 10_000), [Reservation("batch", 0, max=1)])
    store.slow = True
    first = store.acquire(DB, "batch/1", 10_000, group="batch")
    store.slow = False
    assert isinstance(first, Granted)

    clock.advance(9_600)  # the ticket as first written has ended; the lease has not
    second = store.acquire(DB, "batch/2", 10_000, group="batch")

    assert isinstance(second, Rejected)


def test_capping_a_group_that_borrows_lets_its_older_leases_drain() -> None:
    store = InMemoryLeaseStore(FakeClock(), reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 60_000), [Reservation("batch", 0)])
    before = [store.acquire(DB, f"batch/{n}", group="batch") for n in range(6)]
    store.set_quota(DB, Quota(10, 60_000), [Reservation("batch", 0, max=3)])

    renewed = [store.renew(DB, grant.token, 60_000) for grant in before]  # type: ignore[union-attr]

    assert all(isinstance(result, LeaseLost) for result in renewed)
    assert store.status(DB).in_use == 0  # given back, not left to run
    after = [store.acquire(DB, f"batch/{n}", group="batch") for n in range(4)]
    assert [isinstance(result, Granted) for result in after] == [True, True, True, False]


def test_a_group_forgotten_under_another_stores_cache_takes_the_pool() -> None:
    store = InMemoryLeaseStore(FakeClock(), reclaim_grace_ms=0)
    store.set_quota(DB, Quota(10, 10_000), [Reservation("api", 2)])
    granted = store.acquire(DB, "warm", 10_000, group="api")
    assert isinstance(granted, Granted)
    stale = store._groups_seen[DB]
    store.release(DB, granted.token)
    store.set_quota(DB, Quota(10, 10_000), [])  # api is idle: forgotten, its share deleted
    store._groups_seen[DB] = stale  # another store's view, read a moment before

    result = store.acquire(DB, "api/1", 10_000, group="api")

    assert isinstance(result, Granted)
    assert result.lease.group == ""


def test_tags_are_never_given_twice_and_have_at_most_4_digits() -> None:
    groups = Groups(last_tag=9_998)
    groups = groups.replaced([Reservation("a")], 10)
    assert groups.rules[0].tag == 9_999

    with pytest.raises(InvalidInput, match="named every group it can"):
        groups.replaced([Reservation("a"), Reservation("b")], 10)


@pytest.mark.parametrize("text", ["api=--5", "api=\u00b2", "api=1:max=\u0663"])
def test_a_figure_that_is_no_ascii_whole_number_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a whole number"):
        parse_reservations(text)
