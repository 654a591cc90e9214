"""How a split quota's limit is shared out and its lease ids name their shards."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from domain.shards import (
    first_shard,
    parse_shard_lease_id,
    plan_shares,
    shard_lease_id,
    shard_order,
)
from domain.tokens import KEY_CHARS, lease_key


@given(
    limit=st.integers(1, 2_000),
    held=st.lists(st.integers(0, 16), max_size=130),
    per_shard=st.integers(1, 32),
)
def test_shares_sum_to_the_limit_cover_what_each_shard_holds_and_fit_a_shard(
    limit: int, held: list[int], per_shard: int
) -> None:
    held = [min(h, per_shard) for h in held]
    shares = plan_shares(limit, held, per_shard)

    if sum(held) > limit:
        assert shares is None  # it must drain first
        return
    assert shares is not None
    assert sum(shares) == limit
    assert all(share >= h for share, h in zip(shares, held, strict=False))
    assert all(share <= per_shard for share in shares)
    assert len(shares) >= len(held)


def test_a_new_quota_is_shared_as_evenly_as_it_can_be() -> None:
    assert plan_shares(100, [], 16) == [15, 15, 14, 14, 14, 14, 14]
    assert plan_shares(16, [], 16) == [16]


def test_a_raised_quota_gives_the_new_room_to_the_emptiest_shards_first() -> None:
    assert plan_shares(12, [4, 0], 16) == [6, 6]
    assert plan_shares(10, [9, 0], 16) == [9, 1]


@given(st.integers(0, 9_999), st.text("ABCabc0189_", min_size=1, max_size=58))
def test_a_shard_lease_id_names_its_shard_and_key(index: int, key: str) -> None:
    # A lease's key never has a '-' (domain.tokens.lease_key): only a shard's id has one.
    assert parse_shard_lease_id(shard_lease_id(index, key)) == (index, key)


@given(st.text(st.sampled_from("ABCXYZabcxyz0189_-"), min_size=16, max_size=64))
def test_a_single_items_lease_id_names_no_shard(secret: str) -> None:
    key = lease_key("orders-mysql", secret)

    assert len(key) == KEY_CHARS
    assert parse_shard_lease_id(key) is None


def test_a_proposed_id_is_tried_first_in_the_same_shard_every_time() -> None:
    first = first_shard("propose1", 7)
    orders = [shard_order(7, first_shard("propose1", 7), random.Random(seed)) for seed in range(20)]

    assert {order[0] for order in orders} == {first}
    assert all(sorted(order) == list(range(7)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1  # the rest is random
