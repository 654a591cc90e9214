"""How a change plans the limits of a quota's items (domain.changes), without a store; and
the races a planning mistake once let through, as named tests on the in-memory store."""

from __future__ import annotations

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import Granted, Quota, Rejected
from domain.groups import Groups, Reservation
from domain.item import QuotaConfig
from domain.model import SKEW_MARGIN_MS
from domain.plan import Part, item_targets, plan_items, plan_limits
from domain.tokens import lease_key
from tests.fakes import FakeClock

DB = "db"
TTL = 60_000


def test_an_item_past_its_target_holds_the_others_down_by_its_excess() -> None:
    limits, pending = plan_limits({"pool": 3, "api": 1}, {"pool": 1, "api": 2})

    assert limits == {"pool": 2, "api": 1}  # 2 + 2 live at most: the limit of 4
    assert pending


def test_holding_more_than_the_limit_in_all_grants_nothing_until_it_drains() -> None:
    """Race 7's plan gave an item under its target its holdings back as its limit: a
    release there and a grant again kept 5 live on a limit of 4."""
    limits, pending = plan_limits(
        {"pool": 3, "api": 1, "batch": 0}, {"pool": 3, "api": 1, "batch": 1}
    )

    assert limits == {"pool": 0, "api": 0, "batch": 0}
    assert pending


def test_reservations_that_sum_to_the_limit_leave_the_pool_nothing() -> None:
    groups = Groups().replaced([Reservation("api", 3), Reservation("web", 1)], 4)
    config = QuotaConfig(4, TTL, groups=groups)

    limits, pending = plan_items(DB, config, {}, lambda _key: 10)

    assert limits == {DB: 0, f"{DB}~api": 3, f"{DB}~web": 1}
    assert not pending


def test_a_split_part_is_shared_over_its_shards_each_at_least_what_it_holds() -> None:
    part = Part(DB, 5, shards=2)

    assert item_targets(part, {f"{DB}#0": 4, f"{DB}#1": 0}, 3) == {
        DB: 0,
        f"{DB}#0": 4,
        f"{DB}#1": 1,
    }


def test_shards_split_by_another_version_are_planned_whatever_this_capacity() -> None:
    """A store whose shard capacity is smaller than the one the quota was split with plans
    over the shards there are (a settle once failed on an assertion, the quota at 0)."""
    targets = item_targets(Part(DB, 20, shards=2), {}, 5)

    assert sum(targets.values()) == 20
    assert len(targets) == 3


def test_race7_a_change_of_groups_that_lowers_the_pool_holds_every_grant_back() -> None:
    """Limit 5, batch=1 and api=1 (neither borrows), all 5 held; change to limit 4 with
    api=1, batch=0; api gives its lease back and asks again: it must wait (4 live on 4)."""
    store = InMemoryLeaseStore(FakeClock(), reclaim_grace_ms=0)
    store.set_quota(
        DB,
        Quota(5, TTL),
        [Reservation("batch", 1, borrow=False), Reservation("api", 1, borrow=False)],
    )
    assert isinstance(store.acquire(DB, "b", group="batch"), Granted)
    api = store.acquire(DB, "a", group="api")
    assert isinstance(api, Granted)
    for _ in range(3):
        assert isinstance(store.acquire(DB, "p"), Granted)

    store.set_quota(
        DB,
        Quota(4, TTL),
        [Reservation("api", 1, borrow=False), Reservation("batch", 0, borrow=False)],
    )
    store.release(DB, api.token)

    assert isinstance(store.acquire(DB, "a", group="api"), Rejected)
    assert store.status(DB).in_use == 4


@pytest.mark.parametrize("expired_ms", [1, SKEW_MARGIN_MS - 1])
def test_a_change_counts_a_lease_within_its_skew_margin_as_held(expired_ms: int) -> None:
    """A lease just expired on the writer's clock may still be in use on its holder's: a
    change that counted it as gone (re-sharing without the margin) once let its room be
    taken twice."""
    clock = FakeClock()
    store = InMemoryLeaseStore(clock, shard_capacity=lambda _key: 2)
    store.set_quota(DB, Quota(2, 1_000))
    for _ in range(2):
        assert isinstance(store.acquire(DB, "h"), Granted)
    clock.advance(1_000 + expired_ms)

    store.set_quota(DB, Quota(4, 1_000))  # the first split: the two stay in the root
    grants = [store.acquire(DB, "new") for _ in range(4)]

    assert [isinstance(grant, Granted) for grant in grants] == [True, True, False, False]


def test_one_secret_gives_different_lease_ids_in_different_quotas() -> None:
    """A lease id is public: one a caller shows in one quota must say nothing of its lease
    in another."""
    secret = "one-secret-for-two-quotas"

    assert lease_key("orders", secret) != lease_key("billing", secret)
    assert lease_key("orders", secret) == lease_key("orders", secret)
