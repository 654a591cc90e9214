"""One contract, two stores: the in-memory store and the DynamoDB store behave alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from domain import (
    Granted,
    InvalidInput,
    LeaseLost,
    Quota,
    Rejected,
    ReleaseOutcome,
    Renewed,
    UnknownDatabase,
)
from domain.decisions import Reclaim, plan_acquire
from domain.ports import NewLease
from tests.conftest import StoreUnderTest

DB = "orders-mysql"
TTL = 30_000


def granted(result: object) -> Granted:
    assert isinstance(result, Granted), f"expected a grant, got {result!r}"
    return result


@pytest.fixture
def quota3(under_test: StoreUnderTest) -> StoreUnderTest:
    under_test.store.set_quota(DB, Quota(limit=3, default_ttl_ms=TTL))
    return under_test


def test_grants_up_to_the_limit_then_rejects_with_remaining_zero(quota3: StoreUnderTest) -> None:
    store = quota3.store
    grants = [granted(store.acquire(DB, "fn/req-1")) for _ in range(3)]
    assert [g.remaining for g in grants] == [2, 1, 0]
    assert len({g.lease.id for g in grants}) == 3

    rejected = store.acquire(DB, "fn/req-4")

    assert isinstance(rejected, Rejected)
    assert rejected.remaining == 0
    assert rejected.in_use == 3
    assert rejected.limit == 3
    assert rejected.retry_after_ms == TTL  # the earliest lease runs out in a full TTL
    assert store.status(DB).in_use == 3


def test_a_released_lease_is_free_for_the_next_acquirer(quota3: StoreUnderTest) -> None:
    store = quota3.store
    first, *_ = [granted(store.acquire(DB)) for _ in range(3)]

    assert store.release(DB, first.lease.id) is ReleaseOutcome.RELEASED

    assert granted(store.acquire(DB)).remaining == 0


def test_a_second_release_changes_nothing_and_says_already_released(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    kept = granted(store.acquire(DB))
    gone = granted(store.acquire(DB))
    store.release(DB, gone.lease.id)
    before = quota3.dump()

    assert store.release(DB, gone.lease.id) is ReleaseOutcome.ALREADY_RELEASED
    assert store.release(DB, "never-granted") is ReleaseOutcome.ALREADY_RELEASED

    assert quota3.dump() == before
    assert [lease.id for lease in store.status(DB).leases] == [kept.lease.id]


def test_expired_leases_linger_until_an_acquirer_needs_their_room(quota3: StoreUnderTest) -> None:
    store = quota3.store
    for _ in range(3):
        store.acquire(DB, "crashed/holder")
    quota3.clock.advance(TTL)

    status = store.status(DB)
    assert (status.in_use, status.remaining, status.expired) == (0, 3, 3)


def test_an_acquirer_reclaims_expired_leases_in_the_same_write_as_its_grant(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    dead = [granted(store.acquire(DB, "crashed/holder")).lease for _ in range(2)]
    quota3.clock.advance(TTL // 2)
    alive = granted(store.acquire(DB, "live/holder")).lease
    quota3.clock.advance(TTL // 2)  # the first two have now expired
    writes_before = quota3.requests()

    grant = granted(store.acquire(DB, "new/holder"))

    assert {lease.id for lease in grant.reclaimed} == {lease.id for lease in dead}
    assert quota3.requests() - writes_before == 2  # the refused add, then reclaim + grant
    status = store.status(DB)
    assert {lease.id for lease in status.leases} == {alive.id, grant.lease.id}
    assert (status.in_use, status.remaining, status.expired) == (2, 1, 0)


def test_a_lease_without_ttl_gets_the_quota_default_and_an_explicit_ttl_is_kept(
    quota3: StoreUnderTest,
) -> None:
    now = quota3.clock.now_ms()
    default = granted(quota3.store.acquire(DB)).lease
    explicit = granted(quota3.store.acquire(DB, ttl_ms=2_500)).lease

    assert default.expires_at_ms == now + TTL
    assert explicit.expires_at_ms == now + 2_500


def test_status_lists_each_lease_with_its_holder(quota3: StoreUnderTest) -> None:
    lease = granted(quota3.store.acquire(DB, "LambdaRDS_Test/8f14e45f")).lease

    status = quota3.store.status(DB)

    assert status.leases == (lease,)
    assert lease.holder == "LambdaRDS_Test/8f14e45f"
    assert (status.limit, status.default_ttl_ms) == (3, TTL)


def test_renew_pushes_a_live_lease_out(quota3: StoreUnderTest) -> None:
    lease = granted(quota3.store.acquire(DB, "fn/req")).lease
    quota3.clock.advance(TTL - 1)

    renewed = quota3.store.renew(DB, lease.id, ttl_ms=10_000)

    assert isinstance(renewed, Renewed)
    assert renewed.lease.expires_at_ms == quota3.clock.now_ms() + 10_000
    assert renewed.lease.holder == "fn/req"
    quota3.clock.advance(5_000)
    assert quota3.store.status(DB).in_use == 1


def test_a_renewal_says_how_many_leases_are_free_so_a_warm_holder_knows_if_others_wait(
    quota3: StoreUnderTest,
) -> None:
    lease = granted(quota3.store.acquire(DB, "fn/req")).lease
    other = granted(quota3.store.acquire(DB, "fn/other")).lease
    quota3.clock.advance(TTL - 1)  # the other lease has a millisecond left

    with_one_other = quota3.store.renew(DB, lease.id, ttl_ms=10_000)
    quota3.store.acquire(DB, "fn/third")
    quota3.clock.advance(1)
    expired_other = quota3.store.renew(DB, lease.id, ttl_ms=10_000)
    quota3.store.acquire(DB, "fn/fourth")  # reclaims the other's expired lease
    full = quota3.store.renew(DB, lease.id, ttl_ms=10_000)

    renewals = (with_one_other, expired_other, full)
    assert [r.remaining if isinstance(r, Renewed) else r for r in renewals] == [1, 1, 0]
    assert quota3.store.status(DB).in_use == 3
    assert other.id not in {entry.id for entry in quota3.store.status(DB).leases}


@pytest.mark.parametrize("how", ["expired", "released", "unknown"])
def test_renew_of_a_lease_that_is_not_live_reports_it_lost_and_changes_nothing(
    quota3: StoreUnderTest, how: str
) -> None:
    lease_id = granted(quota3.store.acquire(DB)).lease.id
    if how == "expired":
        quota3.clock.advance(TTL)
    elif how == "released":
        quota3.store.release(DB, lease_id)
    else:
        lease_id = "no-such-lease"
    before = quota3.dump()

    assert quota3.store.renew(DB, lease_id) == LeaseLost(lease_id)
    assert quota3.dump() == before


def test_lowering_the_limit_keeps_live_leases_and_holds_new_ones_back(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    held = [granted(store.acquire(DB)).lease for _ in range(3)]

    status = store.set_quota(DB, Quota(limit=1, default_ttl_ms=TTL))

    assert (status.in_use, status.limit, status.remaining) == (3, 1, 0)
    assert isinstance(store.acquire(DB), Rejected)
    for lease in held[:2]:
        store.release(DB, lease.id)
    assert isinstance(store.acquire(DB), Rejected)  # one still held: the new limit is full
    store.release(DB, held[2].id)
    granted(store.acquire(DB))


def test_raising_the_limit_and_ttl_applies_to_the_next_acquire(quota3: StoreUnderTest) -> None:
    store = quota3.store
    for _ in range(3):
        store.acquire(DB)

    store.set_quota(DB, Quota(limit=4, default_ttl_ms=60_000))

    grant = granted(store.acquire(DB))
    assert grant.lease.expires_at_ms == quota3.clock.now_ms() + 60_000
    assert store.status(DB).in_use == 4


def test_a_lowered_limit_is_respected_even_when_expired_leases_are_reclaimed(
    quota3: StoreUnderTest,
) -> None:
    store = quota3.store
    live = [granted(store.acquire(DB, ttl_ms=10 * TTL)).lease for _ in range(2)]
    store.acquire(DB, ttl_ms=1_000)  # will expire
    store.set_quota(DB, Quota(limit=2, default_ttl_ms=TTL))
    quota3.clock.advance(1_000)

    assert isinstance(store.acquire(DB), Rejected)
    store.release(DB, live[0].id)
    grant = granted(store.acquire(DB))
    assert store.status(DB).in_use == 2
    assert len(grant.reclaimed) <= 1


def _ops() -> dict[str, Callable[[Any], object]]:
    return {
        "acquire": lambda store: store.acquire("ghost-db"),
        "release": lambda store: store.release("ghost-db", "abc"),
        "renew": lambda store: store.renew("ghost-db", "abc"),
        "status": lambda store: store.status("ghost-db"),
    }


@pytest.mark.parametrize("operation", list(_ops()))
def test_an_unknown_database_is_a_typed_error_and_writes_nothing(
    quota3: StoreUnderTest, operation: str
) -> None:
    before = quota3.dump()

    with pytest.raises(UnknownDatabase, match=r"ghost-db.*set_quota"):
        _ops()[operation](quota3.store)

    assert quota3.dump() == before


BAD_CALLS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "empty database": ("database", lambda s: s.acquire("")),
    "oversized database": ("database", lambda s: s.acquire("d" * 129)),
    "database with a space": ("database", lambda s: s.status("orders mysql")),
    "database not a string": ("database", lambda s: s.acquire(42)),
    "database starting with a dash": ("database", lambda s: s.acquire("-db")),
    "empty lease id": ("lease_id", lambda s: s.release(DB, "")),
    "oversized lease id": ("lease_id", lambda s: s.release(DB, "x" * 65)),
    "lease id with a dot": ("lease_id", lambda s: s.renew(DB, "a.b")),
    "lease id not a string": ("lease_id", lambda s: s.release(DB, None)),
    "oversized holder": ("holder", lambda s: s.acquire(DB, "h" * 65)),
    "holder with a newline": ("holder", lambda s: s.acquire(DB, "a\nb")),
    "zero ttl": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=0)),
    "negative ttl": ("ttl_ms", lambda s: s.renew(DB, "abc", ttl_ms=-5)),
    "ttl over a day": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=86_400_001)),
    "ttl as a float": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=1.5)),
    "ttl as a bool": ("ttl_ms", lambda s: s.acquire(DB, ttl_ms=True)),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_is_a_typed_error_naming_the_field_and_writes_nothing(
    quota3: StoreUnderTest, case: str
) -> None:
    field, call = BAD_CALLS[case]
    before, writes = quota3.dump(), quota3.requests()

    with pytest.raises(InvalidInput) as raised:
        call(quota3.store)

    assert raised.value.field == field
    assert quota3.dump() == before
    assert quota3.requests() == writes


@pytest.mark.parametrize(
    ("limit", "ttl", "field"),
    [(-1, TTL, "limit"), (2001, TTL, "limit"), (3, 0, "default_ttl_ms")],
)
def test_a_quota_out_of_range_cannot_be_built(limit: int, ttl: int, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        Quota(limit=limit, default_ttl_ms=ttl)
    assert raised.value.field == field


def test_a_quota_of_no_leases_is_refused_and_writes_nothing(quota3: StoreUnderTest) -> None:
    # An item's share may be 0 (a split quota's), a quota a caller sets may not.
    before, writes = quota3.dump(), quota3.requests()

    with pytest.raises(InvalidInput) as raised:
        quota3.store.set_quota(DB, Quota(limit=0, default_ttl_ms=TTL))

    assert raised.value.field == "limit"
    assert quota3.dump() == before
    assert quota3.requests() == writes


def test_a_reclaim_planned_on_a_stale_view_spares_a_lease_its_holder_renewed(
    quota3: StoreUnderTest,
) -> None:
    """A reclaimer whose clock runs ahead must not remove a lease that its holder, on a
    clock just behind, renewed in between: the write is guarded on the expiry it saw."""
    store, clock = quota3.store, quota3.clock
    held = [granted(store.acquire(DB, "fn/slow-clock")).lease for _ in range(3)]
    clock.advance(TTL)
    plan = plan_acquire(store._read(DB), clock.now_ms())
    assert isinstance(plan, Reclaim)
    clock.advance(-1)  # the holder's clock: its lease is still live
    assert isinstance(store.renew(DB, held[0].id), Renewed)
    clock.advance(1)

    write = store._reclaim(DB, plan, NewLease("late", "", None), clock.now_ms())

    assert not write.applied
    assert held[0].id in {lease.id for lease in store.status(DB).leases}


def test_a_reclaim_planned_before_the_limit_was_raised_and_lowered_again_keeps_the_limit(
    quota3: StoreUnderTest,
) -> None:
    """An acquirer plans a reclaim on a full quota of expired leases; before its write
    lands, the limit is raised, others take the new room, and the limit goes back down.
    The limit the write sees is the one it planned for, but the item now holds more
    entries than the plan allowed: granting would leave more live leases than the limit."""
    store, clock = quota3.store, quota3.clock
    for _ in range(3):
        granted(store.acquire(DB, "crashed/holder"))
    clock.advance(TTL)
    plan = plan_acquire(store._read(DB), clock.now_ms())
    assert isinstance(plan, Reclaim)
    assert (plan.grant, len(plan.victims), plan.max_size_before()) == (True, 3, 5)
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL))
    for _ in range(3):
        granted(store.acquire(DB, "fn/while-raised"))
    store.set_quota(DB, Quota(limit=3, default_ttl_ms=TTL))

    write = store._reclaim(DB, plan, NewLease("late", "", None), clock.now_ms())

    assert not write.applied
    status = store.status(DB)
    assert status.in_use <= status.limit == 3
    assert "late" not in {lease.id for lease in status.leases}


def test_deleting_a_quota_removes_it_and_a_second_delete_says_there_was_none(
    quota3: StoreUnderTest,
) -> None:
    quota3.store.acquire(DB)

    assert quota3.store.delete_quota(DB) is True
    assert quota3.store.delete_quota(DB) is False
    with pytest.raises(UnknownDatabase):
        quota3.store.status(DB)


def test_an_acquire_sent_again_with_its_proposed_id_returns_the_same_lease(
    quota3: StoreUnderTest,
) -> None:
    first = granted(quota3.store.acquire(DB, "fn/retry", lease_id="proposed-id-1"))

    again = granted(quota3.store.acquire(DB, "fn/retry", lease_id="proposed-id-1"))

    assert again.lease == first.lease
    assert quota3.store.status(DB).in_use == 1


def test_proposing_the_id_of_another_holders_lease_is_refused_and_changes_nothing(
    quota3: StoreUnderTest,
) -> None:
    granted(quota3.store.acquire(DB, "fn/first", lease_id="taken-id"))
    before = quota3.dump()

    with pytest.raises(InvalidInput) as refused:
        quota3.store.acquire(DB, "fn/second", lease_id="taken-id")

    assert refused.value.field == "lease_id"
    assert quota3.dump() == before
