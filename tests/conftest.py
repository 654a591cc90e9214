"""Shared fixtures: the embedded DynamoDB and the two lease stores under one contract."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from adapters.dynamodb import create_table
from domain.lease_store import LeaseStore
from local.dynamodb import EmbeddedDynamoDB, RequestCounter
from tests.fakes import FakeClock, RecordingMetrics
from tests.stores import dynamodb_store, memory_store

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


# `make test` runs on two workers (pytest-xdist, `--dist loadgroup`). An integration test
# shares this machine's MariaDB (its max_connections and Threads_connected, which the
# campaigns and the seeder read and set), the .venv (`make cli`), or the processes and
# ports of a local stack: those run on one worker, one at a time, as without workers.
# These modules touch nothing but their own tables in their worker's embedded DynamoDB
# and run beside them; a new integration module is shared until added here. A unit test
# touches nothing outside its process.
SHARED = "shared"
OWN_STATE_ONLY = frozenset(
    {
        "test_capacity_model",
        "test_concurrency",
        "test_dynamodb_store",
        "test_force_release",
        "test_group_invariants",
        "test_invariants",
        "test_item_rules_on_dynamodb",
        "test_quota_lives",
        "test_split_quota",
        "test_store_contract",
    }
)


# On two workers sharing two cores an example's time says nothing of the rule under test:
# no example fails for being slow (Hypothesis's 200 ms deadline).
settings.register_profile("connlease", deadline=None)
settings.load_profile("connlease")

# In pytest-xdist's workers COLUMNS is set (to 80, seen here), and the CLI honours
# COLUMNS for output that is not a terminal, as it would a user's shell's (cli/app.py, read
# once at import). Tests run as from a pipe with no COLUMNS set, as they do without workers.
os.environ.pop("COLUMNS", None)


def shares_the_machine(item: pytest.Item) -> bool:
    return "integration" in item.path.parts and item.path.stem not in OWN_STATE_ONLY


# Around pytest-xdist's own hook of this name, which reads the marks (before it) and groups
# by them (after it): a grouping that did not take fails the run rather than let shared
# tests run beside each other (as it silently did on pytest 9.2).
@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None]:
    for item in items:
        if shares_the_machine(item):
            item.add_marker(pytest.mark.xdist_group(SHARED))
    yield
    if getattr(config.option, "loadgroup", False):  # set in an xdist worker
        ungrouped = [
            item.nodeid
            for item in items
            if shares_the_machine(item) and not item.nodeid.endswith(f"@{SHARED}")
        ]
        if ungrouped:
            raise pytest.UsageError(
                f"{len(ungrouped)} shared tests not grouped by pytest-xdist (first:"
                f" {ungrouped[0]}): pytest and pytest-xdist disagree; see pyproject.toml"
            )


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
