"""CloudWatch through its API, for a process that is not a Lambda function (the operator's
command line): no EMF log of its reaches CloudWatch, so a metric is a PutMetricData call,
and a metric the functions wrote is read back with GetMetricData."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from adapters.emf import DIMENSION, GROUP_DIMENSION, HIGH_RESOLUTION, UNITS
from domain.ports import Metric, MetricsSink

# GetMetricData takes at most 500 metrics a call.
MAX_QUERIES = 500


class CloudWatchMetricsSink(MetricsSink):
    """One PutMetricData a record, with the dimensions the functions' EMF lines carry
    (service, database, and group when there is one), so the dashboard finds it beside
    theirs."""

    def __init__(self, client: Any, namespace: str, service: str) -> None:
        self._client = client
        self._namespace = namespace
        self._service = service

    def record(self, metric: Metric, value: float, database: str, group: str | None = None) -> None:
        dimensions = [
            {"Name": "service", "Value": self._service},
            {"Name": DIMENSION, "Value": database},
        ]
        if group is not None:
            dimensions.append({"Name": GROUP_DIMENSION, "Value": group})
        try:
            self._client.put_metric_data(
                Namespace=self._namespace,
                MetricData=[
                    {
                        "MetricName": metric.value,
                        "Dimensions": dimensions,
                        "Value": value,
                        "Unit": UNITS[metric].value,
                        "StorageResolution": 1 if metric in HIGH_RESOLUTION else 60,
                    }
                ],
            )
        except (ClientError, BotoCoreError) as error:
            raise unavailable("put metric", error) from error


class MetricReader:
    """A database's metric summed over every dimension set that names it (each function
    and service writes its own), second by second."""

    def __init__(self, client: Any, namespace: str) -> None:
        self._client = client
        self._namespace = namespace

    def per_second(
        self, metric: Metric, database: str, start: datetime, end: datetime
    ) -> dict[int, float]:
        """Sum of `metric` for `database` per epoch second in [start, end). Points come
        as CloudWatch has them: a metric written through EMF logs arrives some seconds
        late, and only one written at high resolution has points a second apart."""
        try:
            # Every page of both: a busy namespace lists more than a page of series, and a
            # long window at one second holds more points than one answer carries.
            listed = [
                found
                for page in self._client.get_paginator("list_metrics").paginate(
                    Namespace=self._namespace,
                    MetricName=metric.value,
                    Dimensions=[{"Name": DIMENSION, "Value": database}],
                )
                for found in page.get("Metrics", [])
            ]
            # A group's lines count its refusals too: the database's own lines have them.
            # Each series once, however often the listing names it.
            unique = {
                _series_key(found): found
                for found in listed
                if not any(d["Name"] == GROUP_DIMENSION for d in found.get("Dimensions", []))
            }
            series = list(unique.values())
            sums: Counter[int] = Counter()
            for first in range(0, len(series), MAX_QUERIES):
                queries = [
                    {
                        "Id": f"m{index}",
                        "MetricStat": {"Metric": found, "Period": 1, "Stat": "Sum"},
                        "ReturnData": True,
                    }
                    for index, found in enumerate(series[first : first + MAX_QUERIES])
                ]
                pages = self._client.get_paginator("get_metric_data").paginate(
                    MetricDataQueries=queries, StartTime=start, EndTime=end
                )
                for page in pages:
                    for result in page.get("MetricDataResults", []):
                        for at, value in zip(
                            result.get("Timestamps", []), result.get("Values", []), strict=False
                        ):
                            sums[int(_utc(at).timestamp())] += value
        except (ClientError, BotoCoreError) as error:
            raise unavailable("read metrics", error) from error
        return dict(sums)


def _series_key(metric: Any) -> tuple[Any, ...]:
    dimensions = sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
    return (metric.get("MetricName"), tuple(dimensions))


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
