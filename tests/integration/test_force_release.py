"""An operator's force-release (`LeaseStore.force_release`), the listing of databases and
the grant time a lease carries, on both stores: on one item and on a quota split over
shards, for plain leases and a group's reserved and borrowed ones."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from adapters.dynamodb_item import entries_per_shard
from domain import (
    Granted,
    InvalidInput,
    Lease,
    LeaseLost,
    LeaseStore,
    Quota,
    QuotaStatus,
    Rejected,
    Renewed,
)
from domain.groups import GROUP_MARK, Reservation
from domain.shards import SHARD_MARK, parse_shard_lease_id
from domain.tokens import label, new_secret
from tests.conftest import StoreUnderTest

pytestmark = pytest.mark.integration

DB = "orders-mysql"
TTL = 30_000
STUCK = "orders-api/8f14e45f"
OTHER = "orders-batch/c9f0f895"


def force(store: LeaseStore, database: str, **named: str) -> tuple[Lease, ...]:
    """An operator's force-release as the command line makes it: the leases status names,
    then exactly those."""
    return store.force_release(database, store.status(database).named(**named))


@pytest.fixture(params=["one-item", "split"])
def limit(request: pytest.FixtureRequest) -> int:
    """A limit that fits one item, or one beyond an item's capacity: a split quota."""
    return 6 if request.param == "one-item" else 2 * entries_per_shard(DB) + 3


def take(under_test: StoreUnderTest, holder: str, count: int = 1) -> list[Granted]:
    granted = []
    for _ in range(count):
        result = under_test.store.acquire(DB, holder)
        assert isinstance(result, Granted), result
        granted.append(result)
    return granted


def ids(leases: Iterable[Lease]) -> list[str]:
    return sorted(lease.id for lease in leases)


def live_ids(status: QuotaStatus, now_ms: int) -> list[str]:
    return sorted(lease.id for lease in status.leases if lease.is_live(now_ms))


def test_force_release_by_holder_removes_exactly_that_holders_leases(
    under_test: StoreUnderTest, limit: int
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=TTL))
    stuck = take(under_test, STUCK, 3)
    others = take(under_test, OTHER, 2)
    if limit > entries_per_shard(DB):
        assert all(parse_shard_lease_id(g.lease.id) is not None for g in stuck + others)

    removed = force(store, DB, holder=STUCK)

    assert ids(removed) == ids(g.lease for g in stuck)
    assert all(lease.holder == STUCK for lease in removed)
    status = store.status(DB)
    assert live_ids(status, under_test.clock.now_ms()) == ids(g.lease for g in others)
    assert status.in_use == 2
    assert status.remaining == limit - 2
    for grant in stuck:
        assert isinstance(store.renew(DB, grant.token), LeaseLost)
    for grant in others:
        assert isinstance(store.renew(DB, grant.token), Renewed)
    # What was freed is grantable again: exactly the limit is held once more, no more.
    take(under_test, OTHER, limit - 2)
    assert isinstance(store.acquire(DB, OTHER), Rejected)
    # Nothing left of that holder: a second force-release removes nothing.
    assert force(store, DB, holder=STUCK) == ()


def test_force_release_by_label_or_id_removes_that_one_lease(
    under_test: StoreUnderTest, limit: int
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=TTL))
    first, target, last = take(under_test, STUCK, 3)

    removed = force(store, DB, lease=label(target.lease))

    assert ids(removed) == [target.lease.id]
    now_ms = under_test.clock.now_ms()
    assert live_ids(store.status(DB), now_ms) == ids([first.lease, last.lease])
    assert isinstance(store.renew(DB, target.token), LeaseLost)

    # Its full id names it too.
    assert ids(force(store, DB, lease=first.lease.id)) == [first.lease.id]
    assert live_ids(store.status(DB), now_ms) == [last.lease.id]
    assert isinstance(store.renew(DB, last.token), Renewed)
    # A label no lease has removes nothing.
    assert force(store, DB, lease=label(target.lease)) == ()


def test_a_label_that_names_two_leases_is_invalid_and_removes_nothing(
    under_test: StoreUnderTest,
) -> None:
    """Each shard of a split quota numbers its own grants: the helper's label, which leaves
    the shard out, of a shard's first grant names every shard's first grant."""
    store = under_test.store
    store.set_quota(DB, Quota(limit=2 * entries_per_shard(DB) + 3, default_ttl_ms=TTL))
    granted = take(under_test, STUCK, 12)
    firsts = [grant for grant in granted if grant.lease.fence == 1]
    assert len(firsts) > 1  # 12 leases in one of 3 shards: one chance in 3^11
    shared = label(firsts[0].lease, shard=False)
    before, requests = under_test.dump(), under_test.requests()

    with pytest.raises(InvalidInput, match=f"names {len(firsts)} leases"):
        force(store, DB, lease=shared)

    assert under_test.dump() == before
    assert under_test.requests() == requests
    for grant in granted:
        assert isinstance(store.renew(DB, grant.token), Renewed)
    # With its shard, as the command line shows it, the label names one.
    assert ids(force(store, DB, lease=label(firsts[0].lease))) == [firsts[0].lease.id]


def test_force_release_with_neither_or_both_holder_and_lease_is_invalid(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=3, default_ttl_ms=TTL))
    (grant,) = take(under_test, STUCK)
    before = under_test.dump()

    with pytest.raises(InvalidInput):
        force(store, DB)
    with pytest.raises(InvalidInput):
        force(store, DB, holder=STUCK, lease=label(grant.lease))

    assert under_test.dump() == before


def test_a_groups_reserved_and_borrowed_leases_are_removable(
    under_test: StoreUnderTest, limit: int
) -> None:
    store = under_test.store
    store.set_quota(
        DB,
        Quota(limit=limit, default_ttl_ms=TTL),
        [Reservation("api", 2), Reservation("batch", 0)],
    )
    reserved = store.acquire(DB, "api-1", group="api")
    borrowed = store.acquire(DB, "batch-1", group="batch")
    (plain,) = take(under_test, OTHER)
    assert isinstance(reserved, Granted)
    assert isinstance(borrowed, Granted)
    assert (reserved.lease.group, reserved.lease.borrowed) == ("api", False)
    assert (borrowed.lease.group, borrowed.lease.borrowed) == ("batch", True)

    removed = force(store, DB, holder="api-1")

    assert [(lease.id, lease.group) for lease in removed] == [(reserved.lease.id, "api")]
    status = store.status(DB)
    assert status.groups is not None
    api = next(view for view in status.groups.groups if view.group == "api")
    assert api.reserved_in_use == 0
    assert isinstance(store.renew(DB, reserved.token), LeaseLost)

    removed = force(store, DB, lease=label(borrowed.lease))

    assert [(lease.id, lease.group, lease.borrowed) for lease in removed] == [
        (borrowed.lease.id, "batch", True)
    ]
    status = store.status(DB)
    assert status.groups is not None
    batch = next(view for view in status.groups.groups if view.group == "batch")
    assert batch.borrowed == 0
    assert live_ids(status, under_test.clock.now_ms()) == [plain.lease.id]
    assert isinstance(store.renew(DB, borrowed.token), LeaseLost)
    assert isinstance(store.renew(DB, plain.token), Renewed)
    # The group's reservation is whole again.
    again = [store.acquire(DB, "api-2", group="api") for _ in range(2)]
    assert all(isinstance(grant, Granted) and not grant.lease.borrowed for grant in again)


def test_a_capped_groups_force_released_borrowed_lease_frees_its_place_under_the_max(
    under_test: StoreUnderTest,
) -> None:
    """The point of force-releasing a stuck lease is the place it frees: for a group at its
    max, that place is the borrowed lease's ticket as much as the pool lease."""
    store = under_test.store
    store.set_quota(DB, Quota(limit=5, default_ttl_ms=TTL), [Reservation("batch", 0, max=1)])
    stuck = store.acquire(DB, "batch-1", group="batch")
    assert isinstance(stuck, Granted)
    assert isinstance(store.acquire(DB, "batch-2", group="batch"), Rejected)  # at its max

    assert ids(force(store, DB, holder="batch-1")) == [stuck.lease.id]

    status = store.status(DB)
    assert status.groups is not None
    assert [view.borrowed for view in status.groups.groups] == [0]
    again = store.acquire(DB, "batch-2", group="batch")
    assert isinstance(again, Granted), (
        "the group is held at its max by the force-released lease's ticket"
    )


def test_force_releasing_an_untracked_borrowed_lease_leaves_a_ticketed_one_of_its_holder(
    under_test: StoreUnderTest,
) -> None:
    """A lease borrowed before its group was capped has no ticket: releasing it must not
    take the ticket of the holder's other, ticketed lease, which would then be lost."""
    store = under_test.store
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL), [Reservation("batch", 0)])
    untracked = store.acquire(DB, "batch-1", group="batch")
    assert isinstance(untracked, Granted)
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL), [Reservation("batch", 0, max=3)])
    ticketed = store.acquire(DB, "batch-1", group="batch")
    assert isinstance(ticketed, Granted)

    assert ids(force(store, DB, lease=label(untracked.lease))) == [untracked.lease.id]

    assert isinstance(store.renew(DB, ticketed.token), Renewed)


def test_an_operator_releases_only_the_leases_it_saw(under_test: StoreUnderTest) -> None:
    """Leases the holder took after the operator looked are not among those confirmed."""
    store = under_test.store
    store.set_quota(DB, Quota(limit=4, default_ttl_ms=TTL))
    (seen,) = take(under_test, STUCK)
    confirmed = store.status(DB).named(holder=STUCK)
    later = take(under_test, STUCK, 2)

    assert ids(store.force_release(DB, confirmed)) == [seen.lease.id]

    for grant in later:
        assert isinstance(store.renew(DB, grant.token), Renewed)


@pytest.mark.parametrize("by", ["holder", "label"])
def test_a_lease_granted_anew_meanwhile_is_not_removed(
    under_test: StoreUnderTest, limit: int, by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator saw one grant; its holder gave it back and took the same id again (a
    proposed secret) before the removal: the new grant (a new fence) stays."""
    store = under_test.store
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=TTL))
    secret = new_secret()
    first = store.acquire(DB, STUCK, secret=secret)
    assert isinstance(first, Granted)
    seen = store.status(DB)  # what the operator's force-release reads first
    store.release(DB, first.token)
    again = store.acquire(DB, STUCK, secret=secret)
    assert isinstance(again, Granted)
    assert (again.lease.id, again.lease.fence) != (first.lease.id, first.lease.fence)
    before = under_test.dump()

    monkeypatch.setattr(store, "status", lambda database, group=None: seen)
    if by == "holder":
        removed = force(store, DB, holder=STUCK)
    else:
        removed = force(store, DB, lease=label(first.lease))
    monkeypatch.undo()

    assert removed == ()
    assert under_test.dump() == before
    assert live_ids(store.status(DB), under_test.clock.now_ms()) == [again.lease.id]
    assert isinstance(store.renew(DB, again.token), Renewed)


def test_databases_lists_quotas_roots_only(under_test: StoreUnderTest) -> None:
    store = under_test.store
    assert store.databases() == ()
    store.set_quota(DB, Quota(limit=2 * entries_per_shard(DB) + 3, default_ttl_ms=TTL))
    take(under_test, STUCK, 3)
    store.set_quota(
        "billing",
        Quota(limit=6, default_ttl_ms=TTL),
        [Reservation("api", 2), Reservation("batch", 0, max=3)],
    )
    assert isinstance(store.acquire("billing", "api-1", group="api"), Granted)
    assert isinstance(store.acquire("billing", "batch-1", group="batch"), Granted)
    store.set_quota("analytics.db:3306/reports@eu", Quota(limit=1, default_ttl_ms=TTL))

    dumped = str(under_test.dump())
    assert SHARD_MARK in dumped  # shard items exist: the quota is split
    assert f"billing{GROUP_MARK}api" in dumped  # and a group's share has its own
    assert f"billing{GROUP_MARK}batch{GROUP_MARK}max" in dumped
    assert store.databases() == ("analytics.db:3306/reports@eu", "billing", DB)


@pytest.mark.parametrize("kind", ["plain", "reserved", "borrowed"])
def test_granted_at_is_set_on_a_grant_and_kept_across_a_renewal(
    under_test: StoreUnderTest, limit: int, kind: str
) -> None:
    store, clock = under_test.store, under_test.clock
    store.set_quota(
        DB, Quota(limit=limit, default_ttl_ms=TTL), [Reservation("api", 1), Reservation("batch")]
    )
    group = {"plain": None, "reserved": "api", "borrowed": "batch"}[kind]
    clock.advance(1_234)  # not on a whole second: DynamoDB keeps the second
    granted_at = clock.now_ms()

    grant = store.acquire(DB, STUCK, group=group)

    assert isinstance(grant, Granted)
    assert granted_at - 1_000 < grant.lease.granted_at_ms <= granted_at
    (listed,) = store.status(DB).leases
    assert listed.granted_at_ms == grant.lease.granted_at_ms

    clock.advance(20_000)
    renewed = store.renew(DB, grant.token)

    assert isinstance(renewed, Renewed)
    assert renewed.lease.expires_at_ms == clock.now_ms() + TTL
    assert renewed.lease.granted_at_ms == grant.lease.granted_at_ms
    (listed,) = store.status(DB).leases
    assert listed.granted_at_ms == grant.lease.granted_at_ms
    assert listed.expires_at_ms == renewed.lease.expires_at_ms
