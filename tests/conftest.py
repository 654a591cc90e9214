"""Shared fixtures: the embedded DynamoDB and the two lease stores under one contract."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pytest

from adapters.dynamodb import create_table
from domain.lease_store import LeaseStore
from local.dynamodb import EmbeddedDynamoDB, RequestCounter
from tests.fakes import FakeClock, RecordingMetrics
from tests.stores import dynamodb_store, memory_store

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@pytest.fixture(scope="session")
def embedded_dynamodb() -> Iterator[EmbeddedDynamoDB]:
    with EmbeddedDynamoDB() as server:
        yield server


@pytest.fixture
def dynamodb_client(embedded_dynamodb: EmbeddedDynamoDB) -> DynamoDBClient:
    return embedded_dynamodb.client(max_pool_connections=64)


@pytest.fixture
def leases_table(dynamodb_client: DynamoDBClient) -> str:
    name = f"leases-{uuid.uuid4().hex[:8]}"
    create_table(dynamodb_client, name)
    return name


@dataclass
class StoreUnderTest:
    """A store with what the contract needs to look behind it: its request count and a
    dump of everything it holds, to prove that a refused call wrote nothing; a refused
    acquire may only note that someone waits, which `dump_but_note` leaves out."""

    store: LeaseStore
    clock: FakeClock
    requests: Callable[[], int]
    dump_items: Callable[[bool], object]
    kind: str

    def dump(self) -> object:
        return self.dump_items(True)

    def dump_but_note(self) -> object:
        return self.dump_items(False)


def make_memory_store(clock: FakeClock, shard_capacity: int | None = None) -> StoreUnderTest:
    store = memory_store(clock, shard_capacity=shard_capacity)
    reads = ("read", "read_items", "scan")
    return StoreUnderTest(
        store,
        clock,
        requests=lambda: sum(n for op, n in store.requests.items() if op not in reads),
        dump_items=lambda note: sorted(
            repr((key, item if note else replace(item, wanted_at_ms=0)))
            for key, item in store.memory.snapshot().items()
        ),
        kind="memory",
    )


def make_dynamodb_store(
    clock: FakeClock, client: DynamoDBClient, table: str, shard_capacity: int | None = None
) -> StoreUnderTest:
    counter = RequestCounter(client)
    store = dynamodb_store(client, table, clock, shard_capacity=shard_capacity)
    return StoreUnderTest(
        store,
        clock,
        requests=lambda: sum(counter.sent[op] for op in ("UpdateItem", "PutItem", "DeleteItem")),
        dump_items=lambda note: sorted(
            repr({k: v for k, v in item.items() if note or k != "wanted_at"})
            for item in client.scan(TableName=table, ConsistentRead=True)["Items"]
        ),
        kind="dynamodb",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


@pytest.fixture(params=["memory", "dynamodb"])
def under_test(request: pytest.FixtureRequest) -> StoreUnderTest:
    clock = FakeClock()
    if request.param == "memory":
        return make_memory_store(clock)
    client = request.getfixturevalue("dynamodb_client")
    return make_dynamodb_store(clock, client, request.getfixturevalue("leases_table"))
