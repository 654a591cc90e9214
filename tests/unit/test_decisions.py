"""How an acquirer reads a quota item: add, reclaim expired leases, or wait."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.decisions import (
    MAX_RECLAIM_PER_WRITE,
    AddLease,
    Reclaim,
    Rejected,
    plan_acquire,
)
from domain.item import Clear, Grant, NewLease, QuotaState
from domain.model import Lease, Quota, QuotaStatus

DB = "orders-mysql"
NOW = 1_800_000_000_000
TTL = 30_000


def lease(name: str, expires_in_ms: int) -> Lease:
    """A lease that expires `expires_in_ms` after NOW (zero or less: already expired)."""
    return Lease(name, f"fn/{name}", NOW + expires_in_ms)


def state(limit: int, *leases: Lease) -> QuotaState:
    return QuotaState(DB, Quota(limit=limit, default_ttl_ms=TTL), leases)


def reclaim(plan: AddLease | Reclaim | Rejected) -> Reclaim:
    assert isinstance(plan, Reclaim), f"expected a reclaim, got {plan!r}"
    return plan


# plan_acquire


def test_adds_a_lease_while_the_item_holds_fewer_entries_than_the_limit() -> None:
    assert plan_acquire(state(3), NOW) == AddLease()
    assert plan_acquire(state(3, lease("a", 10), lease("b", -10)), NOW) == AddLease()


def test_adds_rather_than_reclaims_when_there_is_room_beside_an_expired_lease() -> None:
    plan = plan_acquire(state(2, lease("dead", -5_000)), NOW)

    assert plan == AddLease()


def test_rejects_when_live_leases_fill_the_quota_and_says_when_the_earliest_runs_out() -> None:
    full = state(3, lease("late", 9_000), lease("early", 1_500), lease("mid", 4_000))

    plan = plan_acquire(full, NOW)

    assert plan == Rejected(DB, limit=3, in_use=3, retry_after_ms=1_500)
    assert plan.remaining == 0


def test_rejects_after_a_lowered_limit_with_more_live_leases_than_it_allows() -> None:
    over = state(1, lease("a", 700), lease("b", 200), lease("dead", -1))

    plan = plan_acquire(over, NOW)

    assert plan == Rejected(DB, limit=1, in_use=2, retry_after_ms=200)


def test_a_lease_expiring_exactly_now_counts_as_expired_and_is_reclaimed() -> None:
    plan = reclaim(plan_acquire(state(2, lease("a", 0), lease("b", 1)), NOW))

    assert plan.victims == (lease("a", 0),)
    assert plan.grant is True


def test_reclaims_expired_leases_oldest_first_and_grants_in_the_same_write() -> None:
    full = state(
        4,
        lease("live", 5_000),
        lease("newer-dead", -10),
        lease("oldest-dead", -9_000),
        lease("older-dead", -300),
    )

    plan = reclaim(plan_acquire(full, NOW))

    assert [victim.id for victim in plan.victims] == ["oldest-dead", "older-dead", "newer-dead"]
    assert plan.grant is True
    assert plan.limit == 4


def test_never_reclaims_a_live_lease() -> None:
    full = state(3, lease("live-1", 1), lease("dead", -1), lease("live-2", 2))

    plan = reclaim(plan_acquire(full, NOW))

    assert plan.victims == (lease("dead", -1),)
    assert all(not victim.is_live(NOW) for victim in plan.victims)


def test_caps_the_victims_of_one_write_and_keeps_the_oldest() -> None:
    dead = [lease(f"dead-{i}", -1 - i) for i in range(MAX_RECLAIM_PER_WRITE + 10)]

    plan = reclaim(plan_acquire(state(MAX_RECLAIM_PER_WRITE + 10, *dead), NOW))

    assert len(plan.victims) == MAX_RECLAIM_PER_WRITE
    assert plan.victims == tuple(sorted(dead, key=lambda d: d.expires_at_ms))[:50]
    assert plan.grant is True  # 60 entries - 50 removed = 10, below the limit of 60


def test_reclaims_without_granting_when_even_a_full_batch_leaves_the_quota_full() -> None:
    # A limit lowered to 10 under 70 entries: 50 removals still leave 20 >= 10.
    live = [lease(f"live-{i}", 1_000 + i) for i in range(5)]
    dead = [lease(f"dead-{i}", -1 - i) for i in range(65)]

    plan = reclaim(plan_acquire(state(10, *live, *dead), NOW))

    assert len(plan.victims) == MAX_RECLAIM_PER_WRITE
    assert plan.grant is False
    assert max_size_before(plan) is None


@given(
    limit=st.integers(min_value=1, max_value=80),
    expiries=st.lists(st.integers(min_value=-10_000, max_value=10_000), max_size=120),
)
def test_every_plan_fits_its_state_and_a_grant_never_exceeds_the_limit(
    limit: int, expiries: list[int]
) -> None:
    current = state(limit, *(lease(f"l{i}", e) for i, e in enumerate(expiries)))

    plan = plan_acquire(current, NOW)

    live = len(current.live(NOW))
    if live >= limit:
        assert isinstance(plan, Rejected)
        assert plan.retry_after_ms == min(e for e in expiries if e > 0)
    elif len(expiries) < limit:
        assert plan == AddLease()
    else:
        plan = reclaim(plan)
        assert applies(plan, current)
        entries_after = len(expiries) - len(plan.victims) + (1 if plan.grant else 0)
        assert not plan.grant or entries_after <= limit
        assert plan.grant or len(plan.victims) == MAX_RECLAIM_PER_WRITE


# A reclaim's write (domain.item.Grant with victims, or Clear) and its condition


def write_of(plan: Reclaim) -> Grant | Clear:
    if plan.grant:
        return Grant(NewLease("new-lease", "", None), NOW, plan.victims, plan.limit)
    return Clear(plan.victims)


def applies(plan: Reclaim, current: QuotaState) -> bool:
    return write_of(plan).allows(current)


def max_size_before(plan: Reclaim) -> int | None:
    """The most entries the item may hold for the grant to stay within the limit."""
    return plan.limit + len(plan.victims) - 1 if plan.grant else None


def full_with_two_dead() -> tuple[QuotaState, Reclaim]:
    current = state(3, lease("live", 5_000), lease("dead-1", -100), lease("dead-2", -50))
    return current, reclaim(plan_acquire(current, NOW))


def test_a_reclaim_applies_to_the_state_it_was_planned_from() -> None:
    current, plan = full_with_two_dead()

    assert max_size_before(plan) == 3 + 2 - 1
    assert applies(plan, current)


def test_refuses_to_reclaim_a_victim_that_was_renewed_meanwhile() -> None:
    current, plan = full_with_two_dead()
    renewed = tuple(
        replace(entry, expires_at_ms=NOW + TTL) if entry.id == "dead-1" else entry
        for entry in current.leases
    )

    assert not applies(plan, replace(current, leases=renewed))


def test_refuses_to_reclaim_a_victim_that_was_removed_meanwhile() -> None:
    current, plan = full_with_two_dead()
    without = tuple(entry for entry in current.leases if entry.id != "dead-2")

    assert not applies(plan, replace(current, leases=without))


def test_refuses_a_grant_once_the_limit_was_lowered() -> None:
    current, plan = full_with_two_dead()

    lowered = replace(current, quota=Quota(limit=2, default_ttl_ms=TTL))

    assert not applies(plan, lowered)


def test_accepts_a_grant_after_the_limit_was_raised() -> None:
    current, plan = full_with_two_dead()

    raised = replace(current, quota=Quota(limit=10, default_ttl_ms=TTL))

    assert applies(plan, raised)


def test_refuses_a_grant_when_entries_grew_past_the_size_it_was_planned_for() -> None:
    current, plan = full_with_two_dead()
    assert max_size_before(plan) == 4
    at_bound = replace(
        current,
        quota=Quota(limit=4, default_ttl_ms=TTL),
        leases=(*current.leases, lease("added", TTL)),
    )
    past_bound = replace(at_bound, leases=(*at_bound.leases, lease("added-too", TTL)))

    assert applies(plan, at_bound)
    assert not applies(plan, past_bound)


def test_a_reclaim_without_grant_ignores_the_limit_and_size_but_not_the_victims() -> None:
    plan = Reclaim(limit=3, victims=(lease("dead", -1),), grant=False)
    crowded = state(1, lease("dead", -1), *(lease(f"x{i}", 10) for i in range(5)))

    assert applies(plan, crowded)
    assert not applies(plan, state(1, lease("dead", 99)))


# QuotaState.status


def test_status_counts_live_expired_and_remaining_and_lists_leases_by_expiry() -> None:
    current = state(5, lease("late", 9_000), lease("dead", -1), lease("soon", 10), lease("x", 0))

    status = current.status(NOW)

    assert status == QuotaStatus(
        database=DB,
        limit=5,
        default_ttl_ms=TTL,
        in_use=2,
        remaining=3,
        expired=2,
        leases=(lease("dead", -1), lease("x", 0), lease("soon", 10), lease("late", 9_000)),
    )


def test_status_never_reports_negative_remaining_after_a_lowered_limit() -> None:
    status = state(1, lease("a", 10), lease("b", 20), lease("c", 30)).status(NOW)

    assert (status.in_use, status.remaining, status.expired) == (3, 0, 0)


@pytest.mark.parametrize("later_ms", [0, 9, 10, 11, 20_000])
def test_status_moves_leases_from_in_use_to_expired_as_time_passes(later_ms: int) -> None:
    current = state(3, lease("a", 10), lease("b", 20_000))

    status = current.status(NOW + later_ms)

    live = sum(1 for entry in current.leases if entry.expires_at_ms > NOW + later_ms)
    assert (status.in_use, status.expired, status.remaining) == (live, 2 - live, 3 - live)
