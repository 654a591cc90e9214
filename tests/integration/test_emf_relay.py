"""The local stack's EMF relay: what a function prints as EMF is, a moment later, a metric
in the embedded CloudWatch, read back as `connlease watch` reads it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from adapters.clock import SystemClock
from adapters.cloudwatch import MetricReader
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.emf import EmfMetricsSink
from domain import Granted, Quota
from domain.ports import Metric
from local.dynamodb import EmbeddedDynamoDB
from local.emf_relay import EmfRelay, cloudwatch_client, forget_metrics, publish
from local.lambda_endpoint import FunctionSpec
from local.stack import HELPER, LocalStack, Tables, helper_function

pytestmark = pytest.mark.integration

NAMESPACE = "connlease-relay-it"


def refusals_line(database: str, count: int, seconds_ago: int = 0) -> str:
    """The EMF line a function prints after `count` refused acquires (the project's own
    sink, through Powertools), stamped `seconds_ago`."""
    metrics = Metrics(namespace=NAMESPACE, service="connlease-helper")
    metrics.clear_metrics()
    sink = EmfMetricsSink(metrics, NAMESPACE)
    for _ in range(count):
        sink.record(Metric.NO_CONNECTIONS_LEFT, 1, database)
    sink.record(Metric.REMAINING_CONNECTIONS, 0, database)
    document: dict[str, Any] = dict(metrics.serialize_metric_set())
    metrics.clear_metrics()
    document["_aws"]["Timestamp"] -= seconds_ago * 1000
    return json.dumps(document)


@pytest.fixture
def cloudwatch(embedded_dynamodb: EmbeddedDynamoDB) -> Any:
    return cloudwatch_client(embedded_dynamodb.endpoint_url)


@pytest.fixture
def database() -> str:
    return f"relay-{uuid.uuid4().hex[:8]}"


def refused(cloudwatch: Any, database: str, seconds: int = 60) -> dict[int, float]:
    """NoConnectionsLeftError per second over the last `seconds`, as the watch reads it."""
    # The current second whole: CloudWatch reads whole seconds.
    end = datetime.now(UTC) + timedelta(seconds=1)
    return MetricReader(cloudwatch, NAMESPACE).per_second(
        Metric.NO_CONNECTIONS_LEFT, database, end - timedelta(seconds=seconds), end
    )


def eventually(check: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_an_emf_line_becomes_the_metric_a_reader_finds_second_by_second(
    cloudwatch: Any, database: str
) -> None:
    now_s = int(time.time())
    lines = [
        "START RequestId: 1 Version: $LATEST",
        refusals_line(database, 3),
        refusals_line(database, 2, seconds_ago=5),
        '{"level":"INFO","message":"not a metric"}',
        "REPORT RequestId: 1\tDuration: 3.00 ms",
    ]

    sent = publish(cloudwatch, lines)

    assert sent == 4  # two metrics on each of the two EMF lines
    found = refused(cloudwatch, database)
    first, last = sorted(found)
    assert (found[first], found[last]) == (2.0, 3.0)  # each point counted once
    assert last - first == 5
    assert abs(last - now_s) <= 1  # at the time the line carried


def test_a_group_line_is_its_own_metric_and_not_counted_twice(
    cloudwatch: Any, database: str
) -> None:
    line = refusals_line(database, 1)
    document = json.loads(line)
    # The line the sink writes for a group's refusal: dimensions service, database, group.
    document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = [["service", "database", "group"]]
    document["group"] = "batch"

    publish(cloudwatch, [line, json.dumps(document)])

    assert sum(refused(cloudwatch, database).values()) == 1
    listed = cloudwatch.list_metrics(
        Namespace=NAMESPACE,
        MetricName="NoConnectionsLeftError",
        Dimensions=[{"Name": "database", "Value": database}],
    )["Metrics"]
    assert len(listed) == 2  # one for the database, one for its group: each listed once


def test_the_relay_follows_log_files_from_where_they_ended_when_it_started(
    cloudwatch: Any, database: str, tmp_path: Path
) -> None:
    log, later = tmp_path / "helper.log", tmp_path / "test.log"
    log.write_text(refusals_line(database, 7) + "\n")  # printed before: not relayed
    with EmfRelay(cloudwatch, lambda: [log, later], interval_s=0.1).watching() as relay:
        whole, half = refusals_line(database, 2), refusals_line(database, 1)
        with log.open("a") as out:
            out.write(f"START RequestId: 2\n{whole}\n{half[:40]}")
            out.flush()
            eventually(lambda: sum(refused(cloudwatch, database).values()) == 2)
            out.write(half[40:] + "\n")  # a line is relayed once it is whole
        eventually(lambda: sum(refused(cloudwatch, database).values()) == 3)
        later.write_text(refusals_line(database, 4) + "\n")  # a log that appears later
        eventually(lambda: sum(refused(cloudwatch, database).values()) == 7)
        with log.open("a") as out:
            out.write(refusals_line(database, 10) + "\n")
    # Stopping relays what was printed before it stopped.
    assert sum(refused(cloudwatch, database).values()) == 17
    assert relay.failed == 0


def test_forgotten_metrics_are_the_old_ones(cloudwatch: Any, database: str) -> None:
    publish(cloudwatch, [refusals_line(database, 4, seconds_ago=7200)])
    publish(cloudwatch, [refusals_line(database, 1)])

    forget_metrics(datetime.now(UTC) - timedelta(hours=1))

    assert sum(refused(cloudwatch, database, seconds=3 * 3600).values()) == 1


def test_on_the_local_stack_a_refusal_by_the_helper_reaches_cloudwatch() -> None:
    database = f"relay-{uuid.uuid4().hex[:8]}"
    tables = Tables(f"relay-leases-{uuid.uuid4().hex[:6]}", f"relay-idem-{uuid.uuid4().hex[:6]}")

    def functions(url: str, tables: Tables) -> list[FunctionSpec]:
        return [helper_function(url, tables, concurrency=1, namespace=NAMESPACE)]

    with LocalStack(functions, tables=tables, relay_metrics=True) as stack:
        store = DynamoDBLeaseStore(stack.dynamodb_client(), tables.leases, SystemClock())
        store.set_quota(database, Quota(limit=1, default_ttl_ms=30_000))
        assert isinstance(store.acquire(database, "holder/1"), Granted)
        answer = json.loads(
            stack.lambda_client()
            .invoke(
                FunctionName=HELPER,
                Payload=json.dumps({"action": "acquire", "database": database, "wait_ms": 0}),
            )["Payload"]
            .read()
        )
        assert answer["outcome"] == "no_capacity"
        cloudwatch = cloudwatch_client(stack.dynamodb.endpoint_url)

        eventually(lambda: sum(refused(cloudwatch, database).values()) == 1)
