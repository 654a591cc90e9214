"""The local stores bill and limit as DynamoDB does: the embedded DynamoDB answers
ReturnConsumedCapacity with DynamoDB's units (moto's own figures are guesses), throttles a
partition key past its rate with DynamoDB's error, refuses an expression over its limits,
and the in-memory store bills the same units for the same steps."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from adapters.dynamodb import DynamoDBLeaseStore, create_table
from domain import Granted, Quota, StoreUnavailable
from domain.lease_store import LeaseStore
from domain.model import SKEW_MARGIN_MS
from local.capacity_model import CapacityModel
from local.dynamodb import EmbeddedDynamoDB
from local.simulated import SimulatedLeaseStore
from tests.fakes import FakeClock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

KEY = {"pk": {"S": "orders-mysql"}, "sk": {"S": "quota"}}


def padded(size: int) -> dict[str, Any]:
    """An item of exactly `size` bytes: pk 2+12, sk 2+5, zzz 3+n."""
    return KEY | {"zzz": {"S": "x" * (size - 24)}}


@pytest.fixture
def table(dynamodb_client: DynamoDBClient) -> str:
    name = f"metered-{uuid.uuid4().hex[:8]}"
    create_table(dynamodb_client, name)
    return name


def consumed(response: Any) -> float:
    return float(response["ConsumedCapacity"]["CapacityUnits"])


def test_writes_are_billed_by_the_larger_image_and_refused_ones_too(
    dynamodb_client: DynamoDBClient, embedded_dynamodb: EmbeddedDynamoDB, table: str
) -> None:
    put = dynamodb_client.put_item(
        TableName=table, Item=padded(2_500), ReturnConsumedCapacity="TOTAL"
    )
    shrink = dynamodb_client.update_item(
        TableName=table, Key=KEY, UpdateExpression="SET zzz = :p",
        ExpressionAttributeValues={":p": {"S": "small"}}, ReturnConsumedCapacity="TOTAL",
    )  # fmt: skip
    totals = embedded_dynamodb.capacity.totals
    before = totals.write_units[f"{table}:UpdateItem"]
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        dynamodb_client.update_item(
            TableName=table, Key=KEY, UpdateExpression="SET zzz = :p",
            ConditionExpression="attribute_not_exists(pk)",
            ExpressionAttributeValues={":p": {"S": "y" * 3_000}},
        )  # fmt: skip

    assert consumed(put) == 3  # 2,500 bytes: 3 started KB
    assert consumed(shrink) == 3  # the larger image was the 2,500 bytes before
    assert totals.write_units[f"{table}:UpdateItem"] - before == 1  # 31 bytes, refused


def test_reads_are_billed_per_4_kb_half_when_eventual_and_batches_item_by_item(
    dynamodb_client: DynamoDBClient, table: str
) -> None:
    dynamodb_client.put_item(TableName=table, Item=padded(5_000))
    small = {"pk": {"S": "small"}, "sk": {"S": "quota"}}
    dynamodb_client.put_item(TableName=table, Item=small)

    strong = dynamodb_client.get_item(
        TableName=table, Key=KEY, ConsistentRead=True, ReturnConsumedCapacity="TOTAL"
    )
    eventual = dynamodb_client.get_item(TableName=table, Key=KEY, ReturnConsumedCapacity="TOTAL")
    batch = dynamodb_client.batch_get_item(
        RequestItems={table: {"Keys": [KEY, small], "ConsistentRead": True}},
        ReturnConsumedCapacity="TOTAL",
    )

    assert (consumed(strong), consumed(eventual)) == (2, 1)
    assert batch["ConsumedCapacity"][0]["CapacityUnits"] == 2 + 1


@pytest.fixture
def throttling() -> Iterator[EmbeddedDynamoDB]:
    # 1 WCU and 3 RCU a second per partition key, on a clock that stands still: a bucket
    # once spent stays spent, whatever this machine's speed.
    frozen = CapacityModel(scale=0.001, monotonic=lambda: 0.0)
    with EmbeddedDynamoDB(capacity=frozen) as server:
        yield server


def test_a_hot_partition_key_is_throttled_with_dynamodbs_error_and_others_are_served(
    throttling: EmbeddedDynamoDB,
) -> None:
    client = throttling.client(retries={"mode": "standard", "max_attempts": 1})
    create_table(client, "hot")

    client.put_item(TableName="hot", Item=KEY)  # the partition's one unit a second

    with pytest.raises(ClientError) as refused:
        client.put_item(TableName="hot", Item=KEY)
    client.put_item(TableName="hot", Item={"pk": {"S": "cold"}, "sk": {"S": "quota"}})

    error = refused.value.response
    assert error["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert error["ThrottlingReasons"][0]["reason"] == "TableWriteKeyRangeThroughputExceeded"  # type: ignore[typeddict-item]


def test_a_throttled_store_call_is_a_store_error_that_may_pass(
    throttling: EmbeddedDynamoDB,
) -> None:
    client = throttling.client(retries={"mode": "standard", "max_attempts": 1})
    create_table(client, "hot")
    store = DynamoDBLeaseStore(client, "hot", FakeClock())
    store.set_quota("orders-mysql", Quota(limit=10, default_ttl_ms=60_000))  # one unit

    with pytest.raises(StoreUnavailable) as refused:
        store.acquire("orders-mysql")

    assert refused.value.retryable is True
    assert "ProvisionedThroughputExceeded" in str(refused.value)


def test_a_batch_read_leaves_a_throttled_key_unprocessed(throttling: EmbeddedDynamoDB) -> None:
    client = throttling.client(retries={"mode": "standard", "max_attempts": 1})
    create_table(client, "hot")
    cold = {"pk": {"S": "cold"}, "sk": {"S": "quota"}}
    for key in (KEY, cold):
        client.put_item(TableName="hot", Item=key)
    for _ in range(3):
        client.get_item(TableName="hot", Key=KEY, ConsistentRead=True)

    answer = client.batch_get_item(
        RequestItems={"hot": {"Keys": [KEY, cold], "ConsistentRead": True}}
    )

    assert [item["pk"] for item in answer["Responses"]["hot"]] == [{"S": "cold"}]
    assert answer["UnprocessedKeys"]["hot"]["Keys"] == [KEY]


def test_an_expression_over_300_operators_is_refused_as_dynamodb_refuses_it(
    dynamodb_client: DynamoDBClient, table: str
) -> None:
    condition = " AND ".join(["attribute_exists(pk)"] * 151)  # 151 functions, 150 ANDs

    with pytest.raises(ClientError) as refused:
        dynamodb_client.put_item(TableName=table, Item=KEY, ConditionExpression=condition)

    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "301 operators" in refused.value.response["Error"]["Message"]


def run_steps(store: LeaseStore, clock: FakeClock) -> None:
    """Take leases up to the limit with holders, refuse one, renew, give back, reclaim."""
    store.set_quota("orders-mysql", Quota(limit=40, default_ttl_ms=1_000))
    held = [store.acquire("orders-mysql", holder=f"orders-fn/{n:08d}") for n in range(40)]
    store.acquire("orders-mysql")
    clock.advance(300)
    for result in held[:10]:
        assert isinstance(result, Granted)
        store.renew("orders-mysql", result.token, ttl_ms=5_000)
        store.release("orders-mysql", result.token)
    clock.advance(1_000 + SKEW_MARGIN_MS)  # the rest have expired, and their skew margin
    assert isinstance(store.acquire("orders-mysql", holder="late-fn/00000001"), Granted)
    store.status("orders-mysql")


def test_the_in_memory_store_bills_what_dynamodb_bills_for_the_same_steps(
    embedded_dynamodb: EmbeddedDynamoDB, dynamodb_client: DynamoDBClient, leases_table: str
) -> None:
    # The same secrets for both: the same lease keys, so items of the same sizes.
    ids = iter(f"secret-{n:010d}" for n in range(1_000))
    memory_ids = iter(f"secret-{n:010d}" for n in range(1_000))
    clock, memory_clock = FakeClock(), FakeClock()
    model = embedded_dynamodb.capacity
    before = (model.totals.total_write_units(), model.totals.total_read_units())
    dynamodb_store = DynamoDBLeaseStore(
        dynamodb_client, leases_table, clock, lambda: next(ids), rng=random.Random(7)
    )
    run_steps(dynamodb_store, clock)
    dynamodb = (
        model.totals.total_write_units() - before[0],
        model.totals.total_read_units() - before[1],
    )
    memory_model = CapacityModel(enforce=False)
    memory = SimulatedLeaseStore(
        memory_clock, lambda: next(memory_ids), capacity=memory_model, rng=random.Random(7)
    )

    run_steps(memory, memory_clock)

    billed = (memory_model.totals.total_write_units(), memory_model.totals.total_read_units())
    assert billed == dynamodb
    # Split over shards of at most 1 KB, the quota is written for 1 WCU a write.
    writes = sum(
        count
        for op, count in memory_model.totals.requests.items()
        if op in memory_model.totals.write_units
    )
    assert dynamodb[0] == writes


def test_a_body_that_is_not_json_is_answered_as_dynamodb_answers_it(
    embedded_dynamodb: EmbeddedDynamoDB,
) -> None:
    request = urllib.request.Request(
        embedded_dynamodb.endpoint_url,
        data=b"{not json",
        headers={
            "X-Amz-Target": "DynamoDB_20120810.UpdateItem",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)

    assert refused.value.code == 400
    assert json.loads(refused.value.read())["__type"].endswith("#SerializationException")
