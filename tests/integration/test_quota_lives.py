"""A quota deleted and made again, or a group forgotten and named again, never gives a fence
its last life gave (issue 23, item 2): a token never names two grants, so no answer kept for
one (the helper's idempotency record) is ever given for another. On both stores."""

from __future__ import annotations

import pytest

from adapters.dynamodb_item import entries_per_shard
from domain import Granted, Quota, ReleaseOutcome, Renewed
from domain.groups import Reservation, reserved_quota
from domain.shards import parse_shard_lease_id
from domain.tokens import new_secret, parse_token
from tests.conftest import StoreUnderTest

pytestmark = pytest.mark.integration

DB = "orders-mysql"
TTL = 30_000


def granted(result: object) -> Granted:
    assert isinstance(result, Granted), result
    return result


def grants(
    under_test: StoreUnderTest, secrets: list[str], group: str | None = None
) -> list[Granted]:
    store = under_test.store
    return [granted(store.acquire(DB, "fn/a", secret=secret, group=group)) for secret in secrets]


def released(under_test: StoreUnderTest, taken: list[Granted]) -> None:
    for grant in taken:
        assert under_test.store.release(DB, grant.token) is ReleaseOutcome.RELEASED


def assert_new_life(old: list[Granted], new: list[Granted], under_test: StoreUnderTest) -> None:
    """The same secrets, granted again: every token is new, every fence above the last life's,
    and an old token frees nothing of the new grants."""
    assert not {grant.token for grant in old} & {grant.token for grant in new}
    assert min(grant.lease.fence for grant in new) > max(grant.lease.fence for grant in old)
    for grant in old:
        assert under_test.store.release(DB, grant.token) is ReleaseOutcome.ALREADY_RELEASED
    for grant in new:
        assert isinstance(under_test.store.renew(DB, grant.token), Renewed)


def test_a_split_quota_deleted_and_made_again_numbers_its_grants_above_its_last_life(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    limit = 3 * entries_per_shard(DB) + 1  # four shards, fences each their own
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=TTL))
    secrets = [new_secret() for _ in range(12)]
    old = grants(under_test, secrets)
    assert all(parse_shard_lease_id(grant.lease.id) for grant in old)
    released(under_test, old)

    assert store.delete_quota(DB)
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=TTL))
    new = grants(under_test, secrets)

    # Each proposal goes to the shard its secret picks, in both lives.
    assert [parse_token(g.token).shard for g in new] == [parse_token(g.token).shard for g in old]
    assert_new_life(old, new, under_test)


def test_a_groups_reserved_and_borrowed_leases_in_a_quota_made_again_have_new_tokens(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    groups = [Reservation("api", 2), Reservation("batch", 0, max=2)]
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL), groups)
    secrets = [new_secret() for _ in range(2)]
    old = grants(under_test, secrets, "api") + grants(under_test, secrets, "batch")
    assert [parse_token(g.token).reserved for g in old] == [True, True, False, False]
    assert all(parse_token(g.token).ticket is not None for g in old[2:])
    released(under_test, old)

    assert store.delete_quota(DB)
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL), groups)
    new = grants(under_test, secrets, "api") + grants(under_test, secrets, "batch")

    assert_new_life(old[:2], new[:2], under_test)
    assert_new_life(old[2:], new[2:], under_test)
    # The tickets too: each a grant of the cap's own items, made again.
    old_tickets = [parse_token(g.token).ticket for g in old[2:]]
    new_tickets = [parse_token(g.token).ticket for g in new[2:]]
    assert min(t.fence or 0 for t in new_tickets if t) > max(t.fence or 0 for t in old_tickets if t)


def test_a_group_forgotten_and_named_again_numbers_its_grants_above_its_last_life(
    under_test: StoreUnderTest,
) -> None:
    store = under_test.store
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL), [Reservation("api", 3)])
    secrets = [new_secret() for _ in range(3)]
    old = grants(under_test, secrets, "api")
    released(under_test, old)

    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL), [])  # retired, holding nothing
    assert store.items.read(reserved_quota(DB, "api")) is None  # forgotten: its items deleted
    assert store.status(DB).groups is None
    store.set_quota(DB, Quota(limit=6, default_ttl_ms=TTL), [Reservation("api", 3)])
    new = grants(under_test, secrets, "api")

    assert all(parse_token(g.token).reserved for g in new)
    assert_new_life(old, new, under_test)
