"""A quota beyond one item's capacity is split over shard items (`domain.shards`): the
contract holds as for one item, on both stores, and every write costs 1 WCU."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest

from adapters.dynamodb import DynamoDBLeaseStore
from adapters.dynamodb_item import entries_per_shard
from adapters.memory import InMemoryLeaseStore
from domain import (
    CorruptQuota,
    Granted,
    InvalidInput,
    LeaseLost,
    Quota,
    Rejected,
    ReleaseOutcome,
    Renewed,
    UnknownDatabase,
)
from domain.model import SKEW_MARGIN_MS
from domain.shards import parse_shard_lease_id, shard_item
from domain.tokens import new_secret, parse_token
from local.capacity_model import CapacityModel
from local.simulated import SimulatedLeaseStore
from tests.conftest import StoreUnderTest
from tests.fakes import FakeClock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

DB = "orders-mysql"
TTL = 30_000
HOLDER = "orders-service-prod-api/8f14e45f"  # the longest a client writes


def take(store: StoreUnderTest, count: int) -> list[Granted]:
    granted = []
    for _ in range(count):
        result = store.store.acquire(DB, HOLDER)
        assert isinstance(result, Granted), result
        granted.append(result)
    return granted


def test_a_quota_beyond_one_item_grants_exactly_its_limit_spread_over_shards(
    under_test: StoreUnderTest,
) -> None:
    per_shard = entries_per_shard(DB)
    limit = 3 * per_shard + 5
    status = under_test.store.set_quota(DB, Quota(limit=limit, default_ttl_ms=TTL))
    assert (status.limit, status.in_use) == (limit, 0)

    granted = take(under_test, limit)
    refused = under_test.store.acquire(DB, HOLDER)

    assert isinstance(refused, Rejected)
    assert (refused.limit, refused.remaining) == (limit, 0)
    shards = {parse_shard_lease_id(g.lease.id) is not None for g in granted}
    assert shards == {True}  # every lease id names its shard
    used = {parse_shard_lease_id(g.lease.id)[0] for g in granted}  # type: ignore[index]
    assert len(used) == 4
    status = under_test.store.status(DB)
    assert (status.limit, status.in_use, status.remaining) == (limit, limit, 0)
    assert {lease.id for lease in status.leases} == {g.lease.id for g in granted}


def test_a_split_quotas_lease_is_released_and_renewed_by_its_token_once(
    under_test: StoreUnderTest,
) -> None:
    under_test.store.set_quota(DB, Quota(limit=40, default_ttl_ms=TTL))
    first, second = take(under_test, 2)
    shard = parse_shard_lease_id(first.lease.id)
    assert shard is not None
    assert parse_token(first.token).shard == shard[0]  # the token names the shard too

    renewed = under_test.store.renew(DB, first.token, ttl_ms=60_000)
    released = under_test.store.release(DB, second.token)
    again = under_test.store.release(DB, second.token)
    lost = under_test.store.renew(DB, second.token)

    assert isinstance(renewed, Renewed)
    assert renewed.lease.id == first.lease.id
    assert renewed.lease.fence == first.lease.fence
    assert renewed.lease.expires_at_ms == under_test.clock.now_ms() + 60_000
    assert (released, again) == (ReleaseOutcome.RELEASED, ReleaseOutcome.ALREADY_RELEASED)
    assert lost == LeaseLost(second.lease.id)
    assert under_test.store.status(DB).in_use == 1


def test_a_split_quotas_lease_id_is_not_a_token_and_acting_on_it_writes_nothing(
    under_test: StoreUnderTest,
) -> None:
    under_test.store.set_quota(DB, Quota(limit=40, default_ttl_ms=TTL))
    (grant,) = take(under_test, 1)
    before, writes = under_test.dump(), under_test.requests()

    for act in (
        lambda: under_test.store.release(DB, grant.lease.id),
        lambda: under_test.store.renew(DB, grant.lease.id, ttl_ms=60_000),
    ):
        with pytest.raises(InvalidInput) as refused:
            act()
        assert refused.value.field == "token"

    assert (under_test.dump(), under_test.requests()) == (before, writes)


def test_a_token_of_a_split_quotas_earlier_grant_changes_nothing(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=40, default_ttl_ms=TTL))
    secret = new_secret()
    earlier = store.acquire(DB, HOLDER, secret=secret)
    assert isinstance(earlier, Granted)
    store.release(DB, earlier.token)
    later = store.acquire(DB, HOLDER, secret=secret)  # the secret used again
    assert isinstance(later, Granted)
    assert later.token != earlier.token
    before = under_test.dump()

    assert store.release(DB, earlier.token) is ReleaseOutcome.ALREADY_RELEASED
    assert isinstance(store.renew(DB, earlier.token, ttl_ms=60_000), LeaseLost)

    assert under_test.dump() == before
    assert store.status(DB).leases == (later.lease,)


def test_a_token_from_before_the_split_does_not_release_its_secrets_grant_in_a_shard(
    under_test: StoreUnderTest,
) -> None:
    """A token that names no shard but a fence (a grant in one item) is its grant's
    alone: once the quota is split, a later grant of the same secret lives in a shard,
    and the stale token neither finds nor frees it there."""
    store = under_test.store
    store.set_quota(DB, Quota(limit=10, default_ttl_ms=TTL))
    secret = new_secret()
    earlier = store.acquire(DB, HOLDER, secret=secret)
    assert isinstance(earlier, Granted)
    assert parse_token(earlier.token).shard is None
    assert store.release(DB, earlier.token) is ReleaseOutcome.RELEASED
    store.set_quota(DB, Quota(limit=60, default_ttl_ms=TTL))  # split over shards
    later = store.acquire(DB, HOLDER, secret=secret)  # the secret used again
    assert isinstance(later, Granted)
    assert parse_token(later.token).shard is not None
    before = under_test.dump()

    assert store.release(DB, earlier.token) is ReleaseOutcome.ALREADY_RELEASED

    assert under_test.dump() == before
    assert store.status(DB).leases == (later.lease,)
    assert store.release(DB, later.token) is ReleaseOutcome.RELEASED


def test_an_expired_lease_in_a_full_split_quota_is_reclaimed(under_test: StoreUnderTest) -> None:
    under_test.store.set_quota(DB, Quota(limit=40, default_ttl_ms=TTL))
    take(under_test, 40)
    under_test.clock.advance(TTL)  # every lease has just expired: not yet reclaimed
    refused = under_test.store.acquire(DB, HOLDER)
    assert isinstance(refused, Rejected)
    assert refused.retry_after_ms == SKEW_MARGIN_MS
    assert under_test.store.status(DB).expired == 40
    under_test.clock.advance(SKEW_MARGIN_MS)  # the skew margin past their expiry

    result = under_test.store.acquire(DB, HOLDER)

    assert isinstance(result, Granted)
    assert len(result.reclaimed) >= 1
    assert under_test.store.status(DB).in_use == 1


def test_raising_and_lowering_a_split_quota_keeps_its_leases_and_drains_below_the_limit(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=40, default_ttl_ms=TTL))
    held = take(under_test, 40)

    store.set_quota(DB, Quota(limit=100, default_ttl_ms=TTL))
    held += take(under_test, 60)
    assert isinstance(store.acquire(DB, HOLDER), Rejected)

    status = store.set_quota(DB, Quota(limit=20, default_ttl_ms=TTL))
    assert (status.limit, status.in_use) == (20, 100)  # it drains: nothing is granted
    assert isinstance(store.acquire(DB, HOLDER), Rejected)
    for grant in held[:81]:
        store.release(DB, grant.token)
    assert isinstance(store.acquire(DB, HOLDER), Rejected)  # the claim holds off a re-share
    under_test.clock.advance(1_000)  # 19 live now: a second later the room is shared again

    assert isinstance(store.acquire(DB, HOLDER), Granted)
    assert isinstance(store.acquire(DB, HOLDER), Rejected)
    assert store.status(DB).in_use == 20


def test_a_single_item_quota_raised_past_one_item_keeps_its_leases_in_the_limit(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=10, default_ttl_ms=TTL))
    old = take(under_test, 5)
    assert all(parse_shard_lease_id(g.lease.id) is None for g in old)

    store.set_quota(DB, Quota(limit=60, default_ttl_ms=TTL))
    new = take(under_test, 55)

    assert isinstance(store.acquire(DB, HOLDER), Rejected)
    renewed = store.renew(DB, old[0].token)
    assert isinstance(renewed, Renewed)
    assert store.release(DB, old[1].token) is ReleaseOutcome.RELEASED
    assert store.status(DB).in_use == 59
    assert len(new) == 55


def test_a_proposed_secret_in_a_split_quota_is_found_again_and_released_without_its_shard(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=40, default_ttl_ms=TTL))
    secret = new_secret()

    first = store.acquire(DB, HOLDER, secret=secret)
    resent = store.acquire(DB, HOLDER, secret=secret)  # its answer was lost
    assert isinstance(first, Granted)
    assert isinstance(resent, Granted)
    assert resent.lease == first.lease
    assert resent.token == first.token
    assert parse_shard_lease_id(first.lease.id) is not None
    # The proposer that never heard which shard gives it back by the secret it proposed.
    assert store.release(DB, secret) is ReleaseOutcome.RELEASED
    assert store.status(DB).in_use == 0


def test_deleting_a_split_quota_removes_every_shard(under_test: StoreUnderTest) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=40, default_ttl_ms=TTL))
    take(under_test, 3)

    assert store.delete_quota(DB) is True

    # The root alone stays, saying the quota is deleted: a quota made again goes on from
    # its version, so that no change of this one can land on the new one's items.
    left = under_test.dump()
    assert isinstance(left, list)
    (root,) = left
    assert DB in root
    assert "deleted" in root
    with pytest.raises(UnknownDatabase):
        store.status(DB)
    assert store.databases() == ()
    assert store.delete_quota(DB) is False


@pytest.mark.parametrize("limit", [10, 100, 1_000, 2_000])
def test_a_lease_costs_2_wcu_at_any_limit_and_no_write_costs_more_than_1(limit: int) -> None:
    model = CapacityModel(enforce=False)
    store = SimulatedLeaseStore(FakeClock(), capacity=model, rng=random.Random(1))
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=600_000))
    held = [store.acquire(DB, HOLDER) for _ in range(limit // 2)]
    before = model.totals.total_write_units()

    grant = store.acquire(DB, HOLDER)  # uncontended: half the quota is free
    assert isinstance(grant, Granted)
    store.release(DB, grant.token)
    per_lease = model.totals.total_write_units() - before
    while len(held) < limit:  # then full, a few tries at a time near the end
        result = store.acquire(DB, HOLDER)
        if isinstance(result, Granted):
            held.append(result)

    assert per_lease == 2
    totals = model.totals
    assert all(totals.write_units[op] == totals.requests[op] for op in totals.write_units)
    assert store.status(DB).in_use == limit


def test_the_dynamodb_store_and_the_memory_store_split_a_quota_alike(
    dynamodb_client: DynamoDBClient, leases_table: str
) -> None:
    dynamodb = DynamoDBLeaseStore(dynamodb_client, leases_table, FakeClock())
    memory = InMemoryLeaseStore(FakeClock())

    def split(store: DynamoDBLeaseStore | InMemoryLeaseStore) -> list[int]:
        """The shares the store gave its shards."""
        store.set_quota(DB, Quota(limit=500, default_ttl_ms=TTL))
        root = store.items.read(DB)
        assert root is not None
        assert root.config is not None
        count = root.config.shards
        shards = store.items.read_many([shard_item(DB, index) for index in range(count)])
        return [shards[shard_item(DB, index)].quota.limit for index in range(count)]

    shares = split(dynamodb)
    assert shares == split(memory)
    assert sum(shares) == 500
    assert max(shares) <= entries_per_shard(DB)


def legacy_item(limit: int, leases: int, expires_at_ms: int) -> dict[str, Any]:
    """A quota item as the code before fences wrote it, at any limit: no `fences`."""
    ids = [f"legacy{n:010d}" for n in range(leases)]
    return {
        "pk": {"S": DB},
        "sk": {"S": "quota"},
        "limit": {"N": str(limit)},
        "ttl_ms": {"N": str(TTL)},
        "leases": {"M": {i: {"N": str(expires_at_ms)} for i in ids}},
        "holders": {"M": {i: {"S": HOLDER} for i in ids}},
    }


def test_a_quota_item_from_before_fences_is_refused_until_set_quota_upgrades_and_splits_it(
    dynamodb_client: DynamoDBClient, leases_table: str
) -> None:
    clock = FakeClock()
    store = DynamoDBLeaseStore(dynamodb_client, leases_table, clock)
    item = legacy_item(100, 30, clock.now_ms() + TTL)
    dynamodb_client.put_item(TableName=leases_table, Item=item)
    key = {"pk": {"S": DB}, "sk": {"S": "quota"}}

    # Refused, and left as it was, until its quota is set again.
    with pytest.raises(CorruptQuota, match="set its quota again"):
        store.acquire(DB, HOLDER)
    assert dynamodb_client.get_item(TableName=leases_table, Key=key)["Item"] == item

    # set_quota splits it; the leases it holds stay in it and count.
    status = store.set_quota(DB, Quota(limit=100, default_ttl_ms=TTL))
    assert (status.limit, status.in_use) == (100, 30)
    shard_leases = [store.acquire(DB, HOLDER) for _ in range(70)]
    assert all(isinstance(g, Granted) for g in shard_leases)
    assert isinstance(store.acquire(DB, HOLDER), Rejected)
    # An old holder giving its lease back by its old id frees nothing: no token is that id.
    assert store.release(DB, "legacy0000000000") is ReleaseOutcome.ALREADY_RELEASED
    assert store.status(DB).in_use == 100

    # When the old leases have ended (and their skew margin), their room goes to the shards.
    for grant in shard_leases:
        assert isinstance(grant, Granted)
        assert isinstance(store.renew(DB, grant.token, ttl_ms=3 * TTL), Renewed)
    clock.advance(TTL + SKEW_MARGIN_MS)
    taken = [store.acquire(DB, HOLDER) for _ in range(30)]
    assert all(isinstance(g, Granted) for g in taken), taken
    assert isinstance(store.acquire(DB, HOLDER), Rejected)
    assert store.status(DB).in_use == 100


def test_a_split_quota_from_before_fences_is_upgraded_whole_by_setting_its_quota_again(
    dynamodb_client: DynamoDBClient, leases_table: str
) -> None:
    clock = FakeClock()
    store = DynamoDBLeaseStore(dynamodb_client, leases_table, clock, shard_capacity=lambda _: 4)
    store.set_quota(DB, Quota(limit=12, default_ttl_ms=TTL))
    items = [DB, *(shard_item(DB, index) for index in range(3))]
    for item in items:  # as the version before fences left them
        dynamodb_client.update_item(
            TableName=leases_table,
            Key={"pk": {"S": item}, "sk": {"S": "quota"}},
            UpdateExpression="REMOVE fences, fence",
        )
    old = DynamoDBLeaseStore(dynamodb_client, leases_table, clock, shard_capacity=lambda _: 4)

    with pytest.raises(CorruptQuota, match="set its quota again"):
        old.acquire(DB, HOLDER)
    old.set_quota(DB, Quota(limit=12, default_ttl_ms=TTL))  # the same quota: no share changes

    grants = [old.acquire(DB, HOLDER) for _ in range(12)]
    assert all(isinstance(grant, Granted) for grant in grants)
    assert isinstance(old.acquire(DB, HOLDER), Rejected)
