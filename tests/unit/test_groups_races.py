"""Groups where timing or history bites (found by review): a change racing with acquires, a
slow pool write after its ticket, a cap put on a group that already borrows, a share
forgotten under another store's cached groups, tags running out."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapters.memory import InMemoryItems, InMemoryLeaseStore, operation_of
from domain import (
    Granted,
    InvalidInput,
    LeaseLost,
    Quota,
    Rejected,
    Renewed,
    StoreUnavailable,
)
from domain.changes import SETTLE_EVERY_MS
from domain.groups import TICKET_SLACK_MS, Groups, Reservation, cap_quota, parse_reservations
from domain.item import ItemWrite, QuotaState
from domain.ports import ItemStore, Written
from domain.tokens import new_secret
from tests.fakes import START_MS, FakeClock, HookedItems
from tests.stores import memory_store

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


# A step of CapRoundTrips.script: the write is refused as a throttle, nothing written.
THROTTLED = None


class CapRoundTrips(ItemStore):
    """Items as a store reaches them, where a test scripts the round trips to one group's
    cap item: each of its next writes takes the next step of `script`, either how many ms
    late its answer comes back (the write itself landed on time: a slow answer, or a
    retry that found it done) or THROTTLED. Every other request answers at once."""

    def __init__(self, inner: ItemStore, clock: FakeClock, cap: str) -> None:
        self.inner = inner
        self.clock = clock
        self.cap = cap
        self.script: list[int | None] = []
        self.writes = 0  # to the cap item, refused or not

    def read(self, key: str) -> QuotaState | None:
        return self.inner.read(key)

    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        return self.inner.read_many(keys)

    def write(self, key: str, write: ItemWrite) -> Written:
        self.writes += key == self.cap
        if key != self.cap or not self.script:
            return self.inner.write(key, write)
        late_ms = self.script.pop(0)
        if late_ms is THROTTLED:
            raise StoreUnavailable(operation_of(write), "ThrottlingException", retryable=True)
        written = self.inner.write(key, write)
        self.clock.advance(late_ms)
        return written

    def delete(self, key: str, epoch: int | None = None) -> bool:
        return self.inner.delete(key, epoch)

    def all_keys(self) -> list[str]:
        return self.inner.all_keys()


def keeps_its_group_at_its_max_until_it_ends(
    store: InMemoryLeaseStore, clock: FakeClock, lease_id: str
) -> Granted:
    """Steps through what is left of the lease's life: while it lives, its group (at its
    max) refuses another borrower; a slack after it ends (its ticket with it), one gets in.
    That one's grant."""
    while any(
        lease.id == lease_id and lease.is_live(clock.now_ms()) for lease in store.status(DB).leases
    ):
        other = store.acquire(DB, "batch/other", 10_000, group="batch")
        assert isinstance(other, Rejected), (
            f"another borrower got in while lease {lease_id} lived: its group holds 2 leases,"
            f" over its max of 1 ({other!r})"
        )
        clock.advance(100)
    clock.advance(TICKET_SLACK_MS)
    after = store.acquire(DB, "batch/next", 10_000, group="batch")
    assert isinstance(after, Granted), f"the cap still counts a lease that ended: {after!r}"
    return after


def test_a_borrowed_lease_written_late_keeps_its_group_within_its_max_until_it_ends() -> None:
    """A capped group's borrowed lease is counted by the ticket written before it; whenever
    the lease's own write lands later than its ticket's, the cap still counts it while it
    lives. First an acquire whose pool lease is written 1.5 s after its ticket, past the
    ticket's slack (the ticket must be extended); then a renewal whose lease write lands
    0.5 s after its ticket's, within the slack (the slack the ticket's renewal added must
    cover it); then one 1.5 s late whose ticket's extension is throttled (the lease would
    outlive its ticket: it ends). No reclaim grace: it stands for the worst skew the margin
    allows, a reclaimer whose clock runs ahead by all of it."""
    clock = FakeClock()
    items = InMemoryItems()
    cap = CapRoundTrips(items, clock, cap_quota(DB, "batch"))
    store = memory_store(clock, items=items, reclaim_grace_ms=0, reached_through=lambda _: cap)
    store.set_quota(DB, Quota(10, 10_000), [Reservation("batch", 0, max=1)])

    cap.script = [1_500]  # the ticket's answer: 1.5 s late
    first = store.acquire(DB, "batch/1", 10_000, group="batch")
    assert isinstance(first, Granted), f"a late pool write costs the grant: {first!r}"
    assert first.lease.expires_at_ms == START_MS + 1_500 + 10_000  # written late, as meant
    second = keeps_its_group_at_its_max_until_it_ends(store, clock, first.lease.id)

    clock.advance(5_000)
    renewed_at_ms = clock.now_ms()
    cap.script = [500]  # the ticket's answer 0.5 s late
    renewed = store.renew(DB, second.token, 10_000)
    assert isinstance(renewed, Renewed)
    assert renewed.lease.expires_at_ms == renewed_at_ms + 500 + 10_000  # extended, late
    third = keeps_its_group_at_its_max_until_it_ends(store, clock, second.lease.id)

    clock.advance(5_000)
    cap.script = [1_500, THROTTLED]  # 1.5 s late; the ticket's extension throttled
    with pytest.raises(StoreUnavailable):  # the holder keeps to the expiry it knew
        store.renew(DB, third.token, 10_000)
    assert isinstance(store.renew(DB, third.token, 10_000), Renewed)  # and tries again
    keeps_its_group_at_its_max_until_it_ends(store, clock, third.lease.id)


@pytest.mark.parametrize("proposed", [False, True])
def test_a_capped_borrow_whose_ticket_extension_fails_raises_and_keeps_a_proposed_grant(
    proposed: bool,
) -> None:
    """The lease's write came past the slack and the ticket's extension is throttled: the
    caller is told the store failed (not that there is no room). A store-made secret's
    lease and ticket are given back; a proposed one's stay, as another copy of the call
    may hold them, and that copy's answer, or a retry's, is the grant as it stands."""
    clock = FakeClock()
    items = InMemoryItems()
    cap = CapRoundTrips(items, clock, cap_quota(DB, "batch"))
    store = memory_store(clock, items=items, reclaim_grace_ms=0, reached_through=lambda _: cap)
    store.set_quota(DB, Quota(10, 10_000), [Reservation("batch", 0, max=1)])
    secret = new_secret() if proposed else None

    cap.script = [1_500, THROTTLED]
    with pytest.raises(StoreUnavailable):
        store.acquire(DB, "batch/1", 10_000, secret, group="batch")

    held = [lease for lease in store.status(DB).leases if lease.holder == "batch/1"]
    if not proposed:
        assert held == []
        assert isinstance(store.acquire(DB, "batch/2", 10_000, group="batch"), Granted)
        return
    assert len(held) == 1
    retried = store.acquire(DB, "batch/1", 10_000, secret, group="batch")
    assert isinstance(retried, Granted)
    assert retried.lease.id == held[0].id
    keeps_its_group_at_its_max_until_it_ends(store, clock, retried.lease.id)


@pytest.mark.parametrize("late_ms", [0, 1, TICKET_SLACK_MS])
def test_a_capped_borrow_writes_its_ticket_once_when_the_lease_follows_within_the_slack(
    late_ms: int,
) -> None:
    """A borrowed lease of a capped group costs one ticket write to take and one to renew
    (beside the lease's own): the ticket is sized the slack longer than its lease, so the
    lease's write, a round trip later, needs no second ticket write."""
    clock = FakeClock()
    items = InMemoryItems()
    cap = CapRoundTrips(items, clock, cap_quota(DB, "batch"))
    store = memory_store(clock, items=items, reclaim_grace_ms=0, reached_through=lambda _: cap)
    store.set_quota(DB, Quota(10, 10_000), [Reservation("batch", 0, max=1)])
    cap.writes = 0

    cap.script = [late_ms]
    grant = store.acquire(DB, "batch/1", 10_000, group="batch")
    assert isinstance(grant, Granted)
    assert cap.writes == 1
    cap.script = [late_ms]
    assert isinstance(store.renew(DB, grant.token, 10_000), Renewed)
    assert cap.writes == 2


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
