"""Lending idle reservations, on both stores: a caller the pool refused may be lent a
group's idle reserved lease for at most the group's `lend_ms`, never renewed, so that the
group gets it back within that bound (and the skew margin, if the borrower vanishes)."""

from __future__ import annotations

import pytest

from domain import Granted, LeaseLost, Quota, Rejected, ReleaseOutcome
from domain.groups import parse_reservations
from domain.model import SKEW_MARGIN_MS
from tests.conftest import StoreUnderTest

DB = "orders-mysql"
LEND_MS = 1_000


@pytest.fixture
def lending(under_test: StoreUnderTest) -> StoreUnderTest:
    # The pool has 1 lease; api keeps 2 for itself and lends them while idle; etl is capped.
    under_test.store.set_quota(
        DB,
        Quota(limit=3, default_ttl_ms=30_000),
        parse_reservations(f"api=2:lend={LEND_MS}:noborrow,batch=0,etl=0:max=3"),
    )
    return under_test


def test_a_caller_the_pool_refused_is_lent_an_idle_reserved_lease_for_a_short_ttl(
    lending: StoreUnderTest,
) -> None:
    store = lending.store
    pool = store.acquire(DB, "batch/1", 500, group="batch")
    assert isinstance(pool, Granted)
    assert pool.lease.group == "batch"

    lent = store.acquire(DB, "batch/2", LEND_MS, group="batch")

    assert isinstance(lent, Granted)
    assert (lent.lease.group, lent.lease.borrowed) == ("api", True)
    api = store.status(DB).groups.group("api")  # type: ignore[union-attr]
    assert api is not None
    assert (api.reserved_in_use, api.lent) == (1, 1)
    assert store.status(DB).in_use == 2  # within the limit of 3: one reserved lease still free


def test_nothing_is_lent_for_longer_than_the_group_lends_nor_to_a_capped_group(
    lending: StoreUnderTest,
) -> None:
    store = lending.store
    assert isinstance(store.acquire(DB, "batch/1", group="batch"), Granted)  # the pool's

    longer = store.acquire(DB, "batch/2", LEND_MS + 1, group="batch")
    capped = store.acquire(DB, "etl/1", 500, group="etl")
    no_group = store.acquire(DB, "other/1", 500)

    assert isinstance(longer, Rejected)
    assert isinstance(capped, Rejected)
    assert isinstance(no_group, Rejected)
    assert store.status(DB).in_use == 1


def test_a_lent_lease_is_never_renewed(lending: StoreUnderTest) -> None:
    store = lending.store
    store.acquire(DB, "batch/1", group="batch")
    lent = store.acquire(DB, "batch/2", LEND_MS, group="batch")
    assert isinstance(lent, Granted)
    lending.clock.advance(100)

    renewed = store.renew(DB, lent.token, LEND_MS)

    assert isinstance(renewed, LeaseLost)
    (entry,) = [lease for lease in store.status(DB).leases if lease.id == lent.lease.id]
    assert entry.expires_at_ms == lent.lease.expires_at_ms


def test_the_owner_gets_its_lease_back_within_the_lend_bound(lending: StoreUnderTest) -> None:
    store = lending.store
    store.acquire(DB, "batch/1", group="batch")
    lent = [store.acquire(DB, f"batch/{n}", LEND_MS, group="batch") for n in range(2)]
    assert all(isinstance(grant, Granted) for grant in lent)  # both of api's leases lent

    refused = store.acquire(DB, "api/1", group="api")

    assert isinstance(refused, Rejected)
    # The borrower vanished: the lease is reclaimed a skew margin after its short TTL.
    assert refused.retry_after_ms <= LEND_MS + SKEW_MARGIN_MS
    lending.clock.advance(refused.retry_after_ms + 1)
    back = store.acquire(DB, "api/1", group="api")
    assert isinstance(back, Granted)
    assert (back.lease.group, back.lease.borrowed) == ("api", False)


def test_a_lent_lease_is_given_back_like_any_other(lending: StoreUnderTest) -> None:
    store = lending.store
    store.acquire(DB, "batch/1", group="batch")
    lent = store.acquire(DB, "batch/2", LEND_MS, group="batch")
    assert isinstance(lent, Granted)

    assert store.release(DB, lent.token) is ReleaseOutcome.RELEASED
    assert store.release(DB, lent.token) is ReleaseOutcome.ALREADY_RELEASED
    owner = store.acquire(DB, "api/1", group="api")
    assert isinstance(owner, Granted)
    assert not owner.lease.borrowed


def test_a_refused_lend_does_not_tell_the_owners_holders_that_someone_waits(
    lending: StoreUnderTest,
) -> None:
    store = lending.store
    held = [store.acquire(DB, f"api/{n}", group="api") for n in range(2)]
    store.acquire(DB, "batch/1", group="batch")

    store.acquire(DB, "batch/2", LEND_MS, group="batch")  # the pool full, api's share too

    renewed = store.renew(DB, held[0].token, 30_000)  # type: ignore[union-attr]
    assert not isinstance(renewed, LeaseLost)
    assert renewed.others_waiting is False  # api's warm holders keep their leases
