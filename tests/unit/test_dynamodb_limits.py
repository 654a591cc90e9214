"""The capacity model's meter against sizes worked out by hand from DynamoDB's documented
rules (Developer Guide, "DynamoDB item sizes and formats"), its partition buckets, and the
largest expression the store sends against DynamoDB's expression limits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from adapters.dynamodb import DynamoDBItems
from adapters.dynamodb_item import quota_item
from adapters.dynamodb_size import (
    MAX_EXPRESSION_OPERATORS,
    expression_operators,
    expression_problem,
    item_size,
    read_units,
    value_size,
    write_units,
)
from domain.decisions import MAX_RECLAIM_PER_WRITE
from domain.groups import MAX_GROUPS, Groups, Reservation
from domain.item import Accept, Grant, NewLease, QuotaConfig, QuotaState
from domain.model import MAX_HOLDER_LENGTH, MAX_LIMIT, Lease, Quota
from local.capacity_model import CapacityModel, Throttled
from tests.fakes import FakeClock


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"S": "orders-mysql"}, 12),
        ({"S": "é"}, 2),  # UTF-8 bytes, not characters
        ({"N": "1795746289236"}, 8),  # 13 significant digits: 7 bytes, plus 1
        ({"N": "60000"}, 2),  # trailing zeros trimmed: "6"
        ({"N": "-0012.50"}, 3),  # leading and trailing zeros trimmed: "125"
        ({"N": "0"}, 2),
        ({"B": "AAEC"}, 3),  # base64 on the wire, raw bytes counted
        ({"BOOL": True}, 1),
        ({"NULL": True}, 1),
        ({"SS": ["ab", "c"]}, 3),
        ({"L": [{"S": "ab"}, {"N": "5"}]}, 3 + (2 + 1) + (2 + 1)),
        ({"M": {}}, 3),
        ({"M": {"id": {"N": "12"}}}, 3 + (2 + 2 + 1)),
    ],
)
def test_an_attribute_value_is_sized_as_dynamodb_documents(
    value: dict[str, Any], size: int
) -> None:
    assert value_size(value) == size


def test_a_quota_item_with_one_lease_is_139_bytes_as_worked_out_by_hand() -> None:
    lease = Lease(
        "4Q0RdejA",
        "orders-fn/8f14e45f",
        1_795_746_289_236,
        fence=1,
        granted_at_ms=1_795_746_229_236,
    )
    state = QuotaState("orders-mysql", Quota(limit=100, default_ttl_ms=60_000), (lease,), fence=1)
    # pk 2+12, sk 2+5, limit 5+2, ttl_ms 6+2, leases 6+3+(8+8+1), holders 7+3+(8+31+1)
    # (tag 0, tab, the holder, tab, 10 digits of seconds), fences 6+3+(8+2+1) (the lease's
    # fence, 1: one digit, 1 byte plus 1), fence 5+2
    assert item_size(quota_item(state)) == 14 + 7 + 7 + 8 + 26 + 50 + 20 + 7 == 139


def test_writes_are_billed_per_started_kilobyte_of_the_larger_image() -> None:
    assert write_units(0, 0) == 1  # a refused write to no item still costs one
    assert write_units(1024, 10) == 1
    assert write_units(10, 1025) == 2
    assert write_units(7_300, 7_200) == 8


def test_reads_are_billed_per_started_4_kb_and_half_when_eventually_consistent() -> None:
    assert read_units(0, consistent=True) == 1
    assert read_units(4096, consistent=True) == 1
    assert read_units(4097, consistent=True) == 2
    assert read_units(4097, consistent=False) == 1
    assert read_units(100, consistent=False) == 0.5


def test_operators_and_functions_are_counted_as_dynamodb_counts_them() -> None:
    note = (
        "attribute_exists(pk) AND (attribute_not_exists(wanted_at)"
        " OR NOT attribute_type(wanted_at, :N) OR NOT (wanted_at BETWEEN :fresh AND :ahead))"
    )
    # 3 functions, AND, 2 OR, 2 NOT, BETWEEN (its AND is part of it)
    assert expression_operators(note) == 9
    # A SET assigns: only its + counts (DynamoDB's own example counts the + alone).
    assert expression_operators("SET leases.#id = :now + :ttl REMOVE leases.#v-1", update=True) == 1
    assert expression_operators("size(leases) < #limit") == 2


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def test_a_partition_is_throttled_past_its_scaled_rate_and_refills_with_time() -> None:
    clock = Clock()
    model = CapacityModel(scale=0.01, monotonic=clock)  # 10 WCU/s, 30 RCU/s a partition

    for _ in range(10):
        model.admit("leases", "orders", "Write")
        model.charge_write("leases", "orders", "UpdateItem", 100, 100)
    with pytest.raises(Throttled) as throttled:
        model.admit("leases", "orders", "Write")
    assert throttled.value.reason == "TableWriteKeyRangeThroughputExceeded"

    model.admit("leases", "other", "Write")  # another partition key has its own
    model.admit("leases", "orders", "Read")  # and reads their own budget
    clock.now_s += 0.1
    model.admit("leases", "orders", "Write")
    assert model.totals.total_write_units() == 10
    assert model.totals.throttled == {"leases:Write": 1}


def test_a_write_larger_than_a_seconds_budget_is_admitted_and_the_partition_pays_it_off() -> None:
    clock = Clock()
    model = CapacityModel(scale=0.001, monotonic=clock)  # 1 WCU/s

    model.admit("leases", "orders", "Write")
    model.charge_write("leases", "orders", "UpdateItem", 8 * 1024, 8 * 1024)  # 8 WCU
    clock.now_s += 7
    with pytest.raises(Throttled):
        model.admit("leases", "orders", "Write")
    clock.now_s += 1.5
    model.admit("leases", "orders", "Write")


class Recording:
    """A DynamoDB client that answers every update with the item it is given."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item
        self.requests: list[dict[str, Any]] = []

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return {"Attributes": self.item}


def test_the_largest_write_the_store_sends_fits_dynamodbs_expression_limits() -> None:
    # The reclaim write at its largest: the most victims, with a grant of a lease that
    # names the longest holder and its own TTL, on the largest limit.
    victims = tuple(
        Lease(f"victim-{n:09d}-id", "x" * MAX_HOLDER_LENGTH, 1_795_746_289_236 + n)
        for n in range(MAX_RECLAIM_PER_WRITE)
    )
    state = QuotaState("d" * 128, Quota(MAX_LIMIT, 86_400_000), victims)
    client = Recording(quota_item(state))
    items = DynamoDBItems(client, "connlease-leases", FakeClock())  # type: ignore[arg-type]
    lease = NewLease("L" * 16, "h" * MAX_HOLDER_LENGTH, 9_999)

    items.write(state.database, Grant(lease, 0, victims, MAX_LIMIT))

    (request,) = client.requests
    for name in ("UpdateExpression", "ConditionExpression"):
        assert expression_problem(name, request[name]) is None, request[name]
    # The condition checks each victim, so the limit is real for this write.
    assert expression_operators(request["ConditionExpression"]) > MAX_RECLAIM_PER_WRITE
    assert expression_operators(request["ConditionExpression"]) <= MAX_EXPRESSION_OPERATORS


def test_the_largest_change_the_store_sends_fits_dynamodbs_expression_limits() -> None:
    """A change accepted on a root with the most groups, each capped and split."""
    reservations = [Reservation(f"{'g' * 60}{n:04d}", 100, max=120) for n in range(MAX_GROUPS)]
    groups = Groups().replaced(reservations, MAX_LIMIT)
    groups = replace(
        groups,
        rules=tuple(
            replace(rule, share_shards=999, cap_shards=999, capped=True) for rule in groups.rules
        ),
    )
    config = QuotaConfig(MAX_LIMIT, 86_400_000, 999, groups, True, 1_795_746_289_236)
    state = QuotaState("d" * 128, Quota(MAX_LIMIT, 86_400_000), (), config=config, epoch=2**40)
    client = Recording(quota_item(state))
    items = DynamoDBItems(client, "connlease-leases", FakeClock())  # type: ignore[arg-type]

    items.write(state.database, Accept(2**40, config, MAX_LIMIT, 1_795_746_289_236, 1_000))

    (request,) = client.requests
    for name in ("UpdateExpression", "ConditionExpression"):
        assert expression_problem(name, request[name]) is None, request[name]


def test_a_model_held_to_a_lower_scale_for_a_while_returns_to_its_own() -> None:
    clock = Clock()
    model = CapacityModel(monotonic=clock)  # DynamoDB's own rates

    with model.scaled(0.001):  # 1 WCU a second, from a full bucket
        model.admit("leases", "orders", "Write")
        model.charge_write("leases", "orders", "UpdateItem", 100, 100)
        with pytest.raises(Throttled):
            model.admit("leases", "orders", "Write")

    model.admit("leases", "orders", "Write")  # full buckets at the old rate again
    assert model.scale == 1.0
