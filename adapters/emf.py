"""Metrics as CloudWatch embedded metric format, through Powertools Metrics.

EMF lines are written to stdout and become metrics without a PutMetricData call (the
original sample made two per invocation).
"""

from __future__ import annotations

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricResolution, MetricUnit, single_metric

from domain.ports import Metric, MetricsSink

UNITS = {
    Metric.REMAINING_CONNECTIONS: MetricUnit.Count,
    Metric.NO_CONNECTIONS_LEFT: MetricUnit.Count,
    Metric.LEASES_ACQUIRED: MetricUnit.Count,
    Metric.LEASES_RELEASED: MetricUnit.Count,
    Metric.LEASES_RECLAIMED: MetricUnit.Count,
    Metric.ACQUIRE_WAIT_MS: MetricUnit.Milliseconds,
    Metric.REMAINING_RESERVED: MetricUnit.Count,
    Metric.LEASES_BORROWED: MetricUnit.Count,
    Metric.LEASES_FORCE_RELEASED: MetricUnit.Count,
}
# What operators watch during a burst, a second at a time (`connlease watch` reads the
# refusals per second): one-second points, at the same price per metric.
HIGH_RESOLUTION = {Metric.REMAINING_CONNECTIONS, Metric.NO_CONNECTIONS_LEFT}
DIMENSION = "database"
GROUP_DIMENSION = "group"


class EmfMetricsSink(MetricsSink):
    """Adds to the invocation's Powertools metric set, flushed by `log_metrics`.

    A metric set has one dimension set; a metric for a second database in the same
    invocation goes out on its own EMF line instead of being mislabelled, and so does a
    group's (dimensions service, database, group), which the dashboard finds by search.
    """

    def __init__(self, metrics: Metrics, namespace: str) -> None:
        self._metrics = metrics
        self._namespace = namespace

    def record(self, metric: Metric, value: float, database: str, group: str | None = None) -> None:
        resolution = (
            MetricResolution.High if metric in HIGH_RESOLUTION else MetricResolution.Standard
        )
        current = self._metrics.dimension_set.get(DIMENSION)
        if group is not None or current not in (None, database):
            dimensions = {DIMENSION: database}
            if group is not None:
                dimensions[GROUP_DIMENSION] = group
            self._line_of_its_own(metric, value, resolution, dimensions)
            return
        if current is None:
            self._metrics.add_dimension(DIMENSION, database)
        self._metrics.add_metric(
            name=metric.value, unit=UNITS[metric], value=value, resolution=resolution
        )

    def _line_of_its_own(
        self,
        metric: Metric,
        value: float,
        resolution: MetricResolution,
        dimensions: dict[str, str],
    ) -> None:
        with single_metric(
            name=metric.value,
            unit=UNITS[metric],
            value=value,
            resolution=resolution,
            namespace=self._namespace,
        ) as single:
            # The invocation's own line carries the service dimension; a line of its own
            # must too, or it lands in a dimension set the dashboard does not search.
            service = getattr(self._metrics, "service", None)
            if service:
                single.add_dimension("service", service)
            for name, dimension in dimensions.items():
                single.add_dimension(name, dimension)
