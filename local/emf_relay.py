"""The local CloudWatch Logs' metric extraction: what turns a function's EMF lines into
metrics in AWS, done here for the local stack.

In AWS a function prints embedded-metric-format JSON and CloudWatch Logs makes metrics of
it; nothing calls PutMetricData. Locally the lines land in the functions' log files
(`local.lambda_endpoint`), so `EmfRelay` follows those files and posts each EMF line as
PutMetricData to the embedded server, which serves CloudWatch beside DynamoDB: the
namespace, dimensions, values, timestamp and storage resolution the line carries. As in
AWS, a metric shows up a moment after the line was printed (here within `interval_s`).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import moto.cloudwatch.models as moto_cloudwatch
from botocore.exceptions import BotoCoreError, ClientError
from moto.core.models import DEFAULT_ACCOUNT_ID

from local.context import LOCAL_REGION
from local.dynamodb import local_service_client
from local.watch import Poller

# PutMetricData takes up to 1,000 metrics a call; a metric up to 150 values (EMF 100).
MAX_DATA_PER_CALL = 1000
MAX_VALUES_PER_DATUM = 150
EMF_KEY = "_aws"


def forget_metrics(before: datetime, region: str = LOCAL_REGION) -> int:
    """Drop the embedded CloudWatch's points stamped before `before`; how many. moto keeps
    every point and scans them all on each read, so a stack that stands for hours would
    read slower and slower (and hold up DynamoDB, which waits behind each read)."""
    data = moto_cloudwatch.cloudwatch_backends[DEFAULT_ACCOUNT_ID][region].metric_data
    seen = len(data)
    kept = [datum for datum in data[:seen] if _utc(datum.timestamp) >= before]
    # One slice assignment: points a request appended meanwhile, past `seen`, stay.
    data[:seen] = kept
    return seen - len(kept)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def cloudwatch_client(endpoint_url: str) -> Any:
    """CloudWatch at the embedded server's address (moto serves it beside DynamoDB)."""
    return local_service_client("cloudwatch", endpoint_url)


def metric_data(line: str) -> list[tuple[str, dict[str, Any]]]:
    """The PutMetricData entries one log line stands for, each with its namespace; none
    for a line that is not an EMF document. As CloudWatch Logs does, each metric goes out
    once per dimension set of its directive, and a dimension set naming a key the line
    does not have is left out."""
    if not line.startswith("{") or f'"{EMF_KEY}"' not in line:
        return []
    try:
        return _entries(json.loads(line))
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        # Malformed (a directive not a map, a timestamp out of range): CloudWatch Logs
        # drops such a line too, and the relay must keep going.
        return []


def _entries(document: Any) -> list[tuple[str, dict[str, Any]]]:
    meta = document[EMF_KEY]
    timestamp = datetime.fromtimestamp(meta["Timestamp"] / 1000, UTC)
    directives = meta["CloudWatchMetrics"]
    entries: list[tuple[str, dict[str, Any]]] = []
    for directive in directives:
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str):
            continue
        dimension_sets = [
            [{"Name": name, "Value": str(document[name])} for name in names]
            for names in directive.get("Dimensions", [[]])
            if all(isinstance(document.get(name), str) for name in names)
        ]
        for metric in directive.get("Metrics", []):
            values = _values(document.get(metric.get("Name")))
            if not values:
                continue
            for dimensions in dimension_sets:
                for first in range(0, len(values), MAX_VALUES_PER_DATUM):
                    datum: dict[str, Any] = {
                        "MetricName": metric["Name"],
                        "Dimensions": dimensions,
                        "Timestamp": timestamp,
                        "Values": values[first : first + MAX_VALUES_PER_DATUM],
                        "StorageResolution": 1 if metric.get("StorageResolution") == 1 else 60,
                    }
                    if metric.get("Unit"):
                        datum["Unit"] = metric["Unit"]
                    entries.append((namespace, datum))
    return entries


def _values(found: object) -> list[float]:
    items = found if isinstance(found, list) else [found]
    # bool is an int to Python; CloudWatch takes numbers only.
    return [
        float(item)
        for item in items
        if isinstance(item, int | float) and not isinstance(item, bool)
    ]


def publish(client: Any, lines: Iterable[str]) -> int:
    """PutMetricData for the EMF lines among `lines`, batched per namespace; the number
    of metric entries sent."""
    by_namespace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        for namespace, datum in metric_data(line):
            by_namespace[namespace].append(datum)
    sent = 0
    for namespace, data in by_namespace.items():
        for first in range(0, len(data), MAX_DATA_PER_CALL):
            batch = data[first : first + MAX_DATA_PER_CALL]
            client.put_metric_data(Namespace=namespace, MetricData=batch)
            sent += len(batch)
    return sent


class EmfRelay(Poller):
    """Follows log files from where they end when it is made (or from their first byte,
    for a file that appears later) and publishes their EMF lines every `interval_s` while
    `watching()`; a last pass when it stops relays what was printed before."""

    def __init__(
        self, client: Any, files: Callable[[], Iterable[Path]], interval_s: float = 0.5
    ) -> None:
        super().__init__(interval_s, "emf-relay")
        self._client = client
        self._files = files
        self._offsets = {path: path.stat().st_size if path.exists() else 0 for path in files()}
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0  # entries a PutMetricData refused or never delivered

    def sample(self) -> None:
        self.relay_once()

    def stopped(self) -> None:
        self.relay_once()

    def relay_once(self) -> int:
        """Publish the EMF lines written since the last pass; the entries sent."""
        with self._lock:
            lines = [line for path in self._files() for line in self._new_lines(path)]
            if not lines:
                return 0
            try:
                sent = publish(self._client, lines)
            except (ClientError, BotoCoreError):
                # A lost batch is a gap in a graph; the functions must not notice.
                self.failed += sum(len(metric_data(line)) for line in lines)
                return 0
            self.sent += sent
            return sent

    def _new_lines(self, path: Path) -> list[str]:
        offset = self._offsets.get(path, 0)
        try:
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
        except FileNotFoundError:
            return []
        # A line still being written waits for the next pass.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offsets[path] = offset + len(complete)
        return complete.decode("utf-8", errors="replace").splitlines()
