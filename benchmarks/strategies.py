"""The ways a function can get its MySQL connection, each as one simulated invocation."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from connlease.adapters.clock import SystemClock
from connlease.adapters.mysql import DatabaseError, MySqlConnector
from connlease.client import ConnectionLeases
from connlease.domain import Backoff, LeaseStore, NoCapacity

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

QUERY = "SELECT SLEEP(0.02)"


@dataclass
class Tally:
    """What a level of the burst came to; added to by every worker thread."""

    succeeded: int = 0
    rejected: int = 0
    db_errors: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    in_query_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ok(self, latency_ms: float, in_query_s: float) -> None:
        with self.lock:
            self.succeeded += 1
            self.latencies_ms.append(latency_ms)
            self.in_query_s += in_query_s

    def refused(self) -> None:
        with self.lock:
            self.rejected += 1

    def failed(self, code: int) -> None:
        with self.lock:
            self.db_errors[code] += 1


def query(connector: MySqlConnector, sql: str = QUERY) -> float:
    """Connect, run the query, close; the seconds spent inside the query."""
    connection = connector()
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(sql)
            cursor.fetchall()
        return time.perf_counter() - started
    finally:
        connection.close()


class Strategy(Protocol):
    name: str

    def invoke(self, tally: Tally) -> None: ...

    def store_requests(self) -> int: ...


class Raw:
    """pymysql connect-per-call: what a function does without any quota."""

    name = "raw pymysql"

    def __init__(self, connector: MySqlConnector) -> None:
        self._connector = connector

    def invoke(self, tally: Tally) -> None:
        started = time.perf_counter()
        try:
            in_query = query(self._connector)
        except DatabaseError as error:
            tally.failed(error.code)
            return
        tally.ok((time.perf_counter() - started) * 1000, in_query)

    def store_requests(self) -> int:
        return 0


class CounterBackend(Protocol):
    requests: int

    def take(self) -> bool: ...

    def give_back(self) -> object: ...


class SampleCounter:
    """The original sample: decrement a counter if > 0, increment it after; fail fast."""

    def __init__(self, counter: CounterBackend, connector: MySqlConnector, backend: str) -> None:
        self.name = f"sample counter ({backend})"
        self._counter = counter
        self._connector = connector

    def invoke(self, tally: Tally) -> None:
        started = time.perf_counter()
        if not self._counter.take():
            tally.refused()
            return
        try:
            in_query = query(self._connector)
        except DatabaseError as error:
            tally.failed(error.code)
            return
        finally:
            self._counter.give_back()
        tally.ok((time.perf_counter() - started) * 1000, in_query)

    def store_requests(self) -> int:
        return self._counter.requests


class DynamoDBCounter:
    """The sample's counter item: RemainingConnections, conditionally decremented."""

    def __init__(self, client: DynamoDBClient, table: str, limit: int) -> None:
        self._client, self._table = client, table
        self._key: dict[str, Any] = {"pk": {"S": "sample-counter"}, "sk": {"S": "counter"}}
        self.requests = 0
        client.put_item(
            TableName=table,
            Item=self._key
            | {"MaxConnections": {"N": str(limit)}, "RemainingConnections": {"N": str(limit)}},
        )

    def _update(self, expression: str, condition: str) -> bool:
        self.requests += 1
        values = {":one": {"N": "1"}} | ({":zero": {"N": "0"}} if ":zero" in condition else {})
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key,
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def take(self) -> bool:
        return self._update(
            "SET RemainingConnections = RemainingConnections - :one",
            "RemainingConnections > :zero",
        )

    def give_back(self) -> bool:
        return self._update(
            "SET RemainingConnections = RemainingConnections + :one",
            "RemainingConnections < MaxConnections",
        )

    def remaining(self) -> int:
        item = self._client.get_item(TableName=self._table, Key=self._key, ConsistentRead=True)
        return int(item["Item"]["RemainingConnections"]["N"])


class MemoryCounter:
    """The same counter in memory, each request taking `latency_s` like a network call."""

    def __init__(self, limit: int, latency_s: float) -> None:
        self._limit = self._remaining = limit
        self._latency_s = latency_s
        self._lock = threading.Lock()
        self.requests = 0

    def _step(self, delta: int) -> bool:
        time.sleep(self._latency_s / 2)
        with self._lock:
            self.requests += 1
            applied = 0 <= self._remaining + delta <= self._limit
            if applied:
                self._remaining += delta
        time.sleep(self._latency_s / 2)
        return applied

    def take(self) -> bool:
        return self._step(-1)

    def give_back(self) -> None:
        self._step(+1)


class Connlease:
    """A lease around every connection, waiting with jitter within a 10 s budget."""

    def __init__(
        self,
        store: LeaseStore,
        connector: MySqlConnector,
        *,
        database: str,
        backend: str,
        requests: Callable[[], int],
        backoff: Backoff,
        wait_budget_ms: int = 10_000,
        sql: str = QUERY,
    ) -> None:
        self.name = f"connlease ({backend})"
        self._sql = sql
        self._store, self._database, self._backoff = store, database, backoff
        self._connector = connector
        self._requests = requests
        self._wait_budget_ms = wait_budget_ms
        self._local = threading.local()

    def _leases(self) -> ConnectionLeases:
        # One per thread, as one per execution environment.
        leases: ConnectionLeases | None = getattr(self._local, "leases", None)
        if leases is None:
            leases = self._local.leases = ConnectionLeases(
                self._store,
                self._database,
                backoff=self._backoff,
                clock=SystemClock(),
                rng=random.Random(),
            )
        return leases

    def invoke(self, tally: Tally) -> None:
        started = time.perf_counter()
        in_query = 0.0
        try:
            with self._leases().connect(
                lambda: self._connector, wait_budget_ms=self._wait_budget_ms
            ) as connector:
                in_query = query(connector, self._sql)
        except NoCapacity:
            tally.refused()
            return
        except DatabaseError as error:
            tally.failed(error.code)
            return
        tally.ok((time.perf_counter() - started) * 1000, in_query)

    def store_requests(self) -> int:
        return self._requests()
