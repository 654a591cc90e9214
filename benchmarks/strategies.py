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

from adapters.aws import TRANSIENT_CODES
from adapters.clock import SystemClock
from adapters.mysql import DatabaseError, MySqlConnector
from domain import Backoff, LeaseStore, NoCapacity
from domain.warm import KeepWarm
from service.client import ConnectionLeases

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from pymysql.connections import Connection

QUERY = "SELECT SLEEP(0.02)"
Span = tuple[float, float]
INVOCATION_MS = 15_000  # a simulated invocation's timeout: its wait budget and its query


@dataclass
class Tally:
    """What a level of the burst came to; added to by every worker thread."""

    succeeded: int = 0
    rejected: int = 0
    db_errors: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    queries: list[tuple[int, Span]] = field(default_factory=list)  # (worker, its span)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ok(self, latency_ms: float, query_span: Span) -> None:
        with self.lock:
            self.succeeded += 1
            self.latencies_ms.append(latency_ms)
            self.queries.append((threading.get_ident(), query_span))

    def in_query_s(self, start: float, end: float) -> float:
        """Seconds spent inside queries between `start` and `end` (perf_counter)."""
        return sum(max(0.0, min(e, end) - max(s, start)) for _, (s, e) in self.queries)

    def workers_served(self, end: float) -> int:
        """How many workers had a query done by `end`: the others waited the whole time."""
        return len({worker for worker, (_, done) in self.queries if done <= end})

    def refused(self) -> None:
        with self.lock:
            self.rejected += 1

    def failed(self, code: int) -> None:
        with self.lock:
            self.db_errors[code] += 1


def query(connector: MySqlConnector, sql: str = QUERY) -> float:
    """Connect, run the query, close; the seconds spent inside the query."""
    start, end = query_span(connector, sql)
    return end - start


def query_span(connector: MySqlConnector, sql: str = QUERY) -> Span:
    """Connect, run the query, close; when the query started and ended."""
    connection = connector()
    try:
        return timed(connection, sql)
    finally:
        connection.close()


def timed(connection: Connection[Any], sql: str = QUERY) -> Span:
    """Run the query on an open connection; when it started and ended (perf_counter)."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchall()
    return started, time.perf_counter()


class Strategy(Protocol):
    name: str

    def invoke(self, tally: Tally) -> None: ...

    def store_requests(self) -> int: ...

    def done(self) -> None:
        """The calling worker (an execution environment) stops: let go of what it keeps."""


class Raw:
    """pymysql connect-per-call: what a function does without any quota."""

    name = "raw pymysql"

    def __init__(self, connector: MySqlConnector) -> None:
        self._connector = connector

    def invoke(self, tally: Tally) -> None:
        started = time.perf_counter()
        try:
            span = query_span(self._connector)
        except DatabaseError as error:
            tally.failed(error.code)
            return
        tally.ok((time.perf_counter() - started) * 1000, span)

    def store_requests(self) -> int:
        return 0

    def done(self) -> None:
        pass


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
            span = query_span(self._connector)
        except DatabaseError as error:
            tally.failed(error.code)
            return
        finally:
            self._counter.give_back()
        tally.ok((time.perf_counter() - started) * 1000, span)

    def store_requests(self) -> int:
        return self._counter.requests

    def done(self) -> None:
        pass


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
            code = error.response.get("Error", {}).get("Code")
            # Refused, or throttled past the SDK's retries: the sample's function fails
            # fast either way (a give-back that fails so is a permit lost for good).
            if code == "ConditionalCheckFailedException" or code in TRANSIENT_CODES:
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
    """A lease around every connection, waiting with jitter within a 10 s budget; with
    `keep_warm`, each worker keeps its lease and connection across invocations."""

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
        keep_warm: KeepWarm | None = None,
    ) -> None:
        warm = f", warm {keep_warm.hold_ms} ms" if keep_warm else ""
        self.name = f"connlease ({backend}{warm})"
        self._keep_warm = keep_warm
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
                keep_warm=self._keep_warm,
            )
        return leases

    def invoke(self, tally: Tally) -> None:
        started = time.perf_counter()
        try:
            with self._leases().connect(
                self._connector,
                wait_budget_ms=self._wait_budget_ms,
                # How long one invocation may hold its connection: a warm lease's TTL
                # counts it (without a Lambda context there is no deadline to go by).
                ttl_ms=INVOCATION_MS if self._keep_warm else None,
            ) as connection:
                span = timed(connection, self._sql)
        except NoCapacity:
            tally.refused()
            return
        except DatabaseError as error:
            tally.failed(error.code)
            return
        tally.ok((time.perf_counter() - started) * 1000, span)

    def store_requests(self) -> int:
        return self._requests()

    def done(self) -> None:
        self._leases().close()
