"""The lease store on DynamoDB: quota items in one table (their format in
adapters.dynamodb_item), each typed write of domain.item one conditional UpdateItem
(adapters.dynamodb_requests), a read one consistent GetItem or BatchGetItem."""

from __future__ import annotations

import random
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from adapters.dynamodb_item import QUOTA_SORT_KEY, Item, entries_per_shard, parse_item
from adapters.dynamodb_requests import request_for
from domain.errors import CorruptQuota, StoreUnavailable
from domain.item import Grant, ItemWrite, QuotaState, Remove
from domain.lease_store import LeaseStore
from domain.model import SKEW_MARGIN_MS
from domain.ports import Clock, ItemStore, Written
from domain.tokens import new_secret

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

BATCH_GET_LIMIT = 100  # keys in one BatchGetItem
BATCH_GET_ROUNDS = 4
KEY_SCHEMA: tuple[tuple[str, Literal["HASH", "RANGE"]], ...] = (("pk", "HASH"), ("sk", "RANGE"))


def create_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the leases table (on-demand) if it does not exist; for local stacks and tests."""
    # A table made already may be CREATING still: waited for all the same.
    with suppress(client.exceptions.ResourceInUseException):
        client.create_table(
            TableName=table_name,
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in KEY_SCHEMA],
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name, _ in KEY_SCHEMA
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    wait_until_active(client, table_name)


def wait_until_active(client: DynamoDBClient, table_name: str, *, delay_s: int = 1) -> None:
    """Return once the table is ACTIVE: a new table is CREATING for a while, and DynamoDB
    refuses reads and writes to it until then (moto makes it ACTIVE at once)."""
    client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": delay_s, "MaxAttempts": 300 // delay_s}
    )


class DynamoDBItems(ItemStore):
    """Quota items in a DynamoDB table: a read is a consistent GetItem, a write one
    conditional UpdateItem (the item it refused on comes back with the refusal)."""

    def __init__(self, client: DynamoDBClient, table_name: str, clock: Clock) -> None:
        self.client = client
        self.table = table_name
        self._clock = clock  # paces the retries of a batch read's unprocessed keys

    def _key(self, key: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": {"S": key}, "sk": {"S": QUOTA_SORT_KEY}}

    def read(self, key: str) -> QuotaState | None:
        try:
            response = self.client.get_item(
                TableName=self.table, Key=self._key(key), ConsistentRead=True
            )
        except (ClientError, BotoCoreError) as error:
            _unavailable("status", error)
        item = response.get("Item")
        return None if item is None else parse_item(key, item)

    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        found: dict[str, QuotaState] = {}
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            batch = [self._key(key) for key in keys[start : start + BATCH_GET_LIMIT]]
            for item in self._batch_get(batch):
                key = item["pk"]["S"]
                found[key] = parse_item(key, item)
        return found

    def _batch_get(self, keys: list[dict[str, AttributeValueTypeDef]]) -> list[Item]:
        """One BatchGetItem, with what DynamoDB leaves unprocessed (a throttled partition)
        asked for again after a short pause, a few times."""
        items: list[Item] = []
        for attempt in range(BATCH_GET_ROUNDS):
            try:
                response = self.client.batch_get_item(
                    RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
                )
            except (ClientError, BotoCoreError) as error:
                _unavailable("read shards", error)
            items += response.get("Responses", {}).get(self.table, [])
            left = response.get("UnprocessedKeys", {}).get(self.table)
            keys = list(left["Keys"]) if left and "Keys" in left else []
            if not keys:
                return items
            self._clock.sleep_ms(20 * 2**attempt)
        raise StoreUnavailable("read shards", "keys left unprocessed (throttled)", True)

    def write(self, key: str, write: ItemWrite) -> Written:
        operation, request = request_for(write)
        request.setdefault("ReturnValuesOnConditionCheckFailure", "ALL_OLD")
        try:
            response = self.client.update_item(
                TableName=self.table, Key=self._key(key), ReturnValues="ALL_NEW", **request
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                _unavailable(operation, error)
            seen = cast("Item | None", error.response.get("Item"))
            if seen is None:
                # Real DynamoDB returns the item with the refusal; where an endpoint does
                # not, a consistent read stands in.
                return Written(False, self.read(key))
            return Written(False, parse_item(key, seen))
        except BotoCoreError as error:
            _unavailable(operation, error)
        try:
            return Written(True, parse_item(key, response.get("Attributes", {})))
        except CorruptQuota:
            # A lease entry was malformed (the item-level checks passed): undo our grant so
            # the failed call leaves the table as it found it.
            if isinstance(write, Grant):
                self.write(key, Remove(write.lease.id, None))
            raise

    def delete(self, key: str, epoch: int | None = None) -> bool:
        request: dict[str, Any] = {}
        if epoch is not None:  # domain.item.may_forget
            request = {
                "ConditionExpression": "epoch = :epoch",
                "ExpressionAttributeValues": {":epoch": {"N": str(epoch)}},
            }
        try:
            response = self.client.delete_item(
                TableName=self.table, Key=self._key(key), ReturnValues="ALL_OLD", **request
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            _unavailable("delete_quota", error)
        except BotoCoreError as error:
            _unavailable("delete_quota", error)
        return "Attributes" in response

    def all_keys(self) -> list[str]:
        """A Scan of the keys alone (billed by the size of the items it reads, as any scan
        is): for an operator's listing, never on a lease's path."""
        keys = []
        try:
            pages = self.client.get_paginator("scan").paginate(
                TableName=self.table,
                ProjectionExpression="pk",
                FilterExpression="sk = :quota",
                ExpressionAttributeValues={":quota": {"S": QUOTA_SORT_KEY}},
            )
            for page in pages:
                keys += [item["pk"]["S"] for item in page.get("Items", [])]
        except (ClientError, BotoCoreError) as error:
            _unavailable("list databases", error)
        return keys


class DynamoDBLeaseStore(LeaseStore):
    """A LeaseStore over a DynamoDB table."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        clock: Clock,
        secrets: Callable[[], str] = new_secret,
        *,
        rng: random.Random | None = None,
        shard_capacity: Callable[[str], int] = entries_per_shard,
        reclaim_grace_ms: int = SKEW_MARGIN_MS,
    ) -> None:
        """`shard_capacity`: leases per shard item; by default what fits 1 KB (tests pass
        fewer, to split small quotas)."""
        self.dynamodb = DynamoDBItems(client, table_name, clock)
        super().__init__(
            self.dynamodb,
            clock,
            secrets,
            shard_capacity=shard_capacity,
            rng=rng,
            reclaim_grace_ms=reclaim_grace_ms,
        )


def _unavailable(operation: str, error: ClientError | BotoCoreError) -> NoReturn:
    raise unavailable(operation, error) from error
