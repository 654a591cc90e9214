"""The EMF metrics sink: what CloudWatch is told about each metric, without a Lambda."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools import Metrics

from adapters.emf import EmfMetricsSink
from domain import Metric

NAMESPACE = "Connlease"
DB = "orders-mysql"
OTHER = "billing-mysql"


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    # Powertools Metrics instances share one metric set: start and leave it empty.
    metrics = Metrics(namespace=NAMESPACE, service="connlease-helper")
    metrics.clear_metrics()
    yield metrics
    metrics.clear_metrics()


def emf_line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The one EMF line written to stdout since the last read, as CloudWatch reads it."""
    (line,) = capsys.readouterr().out.splitlines()
    document: dict[str, Any] = json.loads(line)
    return document


def definitions(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    return {metric["Name"]: metric for metric in directive["Metrics"]}


# A gauge of free leases: a count (the sample's graph sums and alarms on it), at one-second
# resolution so that a burst's floor is seen.
ONE_SECOND_COUNT = {"Name": "RemainingConnections", "Unit": "Count", "StorageResolution": 1}


def test_remaining_connections_is_a_one_second_count_on_the_invocations_emf_line(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    EmfMetricsSink(metrics, NAMESPACE).record(Metric.REMAINING_CONNECTIONS, 3, DB)

    metrics.flush_metrics()  # what log_metrics does as the invocation ends

    document = emf_line(capsys)
    assert definitions(document)["RemainingConnections"] == ONE_SECOND_COUNT
    assert (document["database"], document["RemainingConnections"]) == (DB, [3.0])


def test_remaining_connections_of_a_second_database_is_a_one_second_count_too(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = EmfMetricsSink(metrics, NAMESPACE)
    sink.record(Metric.REMAINING_CONNECTIONS, 3, DB)

    sink.record(Metric.REMAINING_CONNECTIONS, 7, OTHER)  # its own line, flushed at once

    document = emf_line(capsys)
    assert definitions(document)["RemainingConnections"] == ONE_SECOND_COUNT
    assert (document["database"], document["RemainingConnections"]) == (OTHER, [7.0])


def test_a_groups_metric_goes_out_on_its_own_line_with_service_database_and_group(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = EmfMetricsSink(metrics, NAMESPACE)

    sink.record(Metric.ACQUIRE_WAIT_MS, 12, DB, "api")

    document = emf_line(capsys)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    # The dashboard finds every group by searching this dimension set.
    assert sorted(directive["Dimensions"][0]) == ["database", "group", "service"]
    assert (document["database"], document["group"], document["AcquireWaitMs"]) == (
        DB,
        "api",
        [12.0],
    )
    metrics.flush_metrics()
    assert capsys.readouterr().out == ""  # nothing left on the invocation's own line
