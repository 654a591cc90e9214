"""DynamoDB's capacity as it bills and throttles, for the local stand-ins: moto and the
in-memory store enforce none of it, so a figure measured on them says nothing about cost
or ceiling unless they apply this model.

- Every request is billed the units adapters.dynamodb_size says it costs, by table and
  operation.
- One partition serves at most 1,000 WCU and 3,000 RCU a second; past that DynamoDB
  throttles with `ProvisionedThroughputExceededException`, reason
  `TableWriteKeyRangeThroughputExceeded` (or `...Read...`).

Standard library (and adapters.dynamodb_size) only: the in-memory store uses it without an SDK.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from adapters.dynamodb_size import read_units, write_units

PARTITION_WCU_PER_S = 1_000
PARTITION_RCU_PER_S = 3_000


class TokenBucket:
    """One partition's throughput for one kind of unit: `rate` a second, holding at most
    one second's worth. A request is admitted while the bucket is not in debt and pays
    what it cost afterwards (its size is known only then), as DynamoDB admits on an
    estimate and charges the actual units."""

    def __init__(self, rate: float, now_s: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._at_s = now_s

    def _refill(self, now_s: float) -> None:
        self._tokens = min(self.rate, self._tokens + (now_s - self._at_s) * self.rate)
        self._at_s = now_s

    def admits(self, now_s: float) -> bool:
        self._refill(now_s)
        return self._tokens > 0

    def pay(self, units: float, now_s: float) -> None:
        self._refill(now_s)
        self._tokens -= units


class Throttled(Exception):
    """A partition is past its throughput: what DynamoDB answers as
    ProvisionedThroughputExceededException with a KeyRangeThroughputExceeded reason."""

    def __init__(self, table: str, key: str, kind: str) -> None:
        self.table, self.key, self.kind = table, key, kind
        self.reason = f"Table{kind}KeyRangeThroughputExceeded"
        super().__init__(
            f"Throughput exceeds the current capacity for one or more partitions "
            f"({self.reason} on {table} key {key})"
        )


@dataclass
class CapacityTotals:
    """What was billed: units and requests by table and operation, and throttles."""

    write_units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    read_units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    requests: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)

    def total_write_units(self) -> float:
        return sum(self.write_units.values())

    def total_read_units(self) -> float:
        return sum(self.read_units.values())


class CapacityModel:
    """Meters every request as DynamoDB bills it and throttles each partition key past
    DynamoDB's per-partition rates, times `scale` (a scale below 1 shrinks both rates,
    so that this machine can reach the ceiling with a load shrunk by as much).

    A partition key stands for a partition: DynamoDB may put several keys on one
    partition, never one item on several, so per key is the most it could serve."""

    def __init__(
        self,
        scale: float = 1.0,
        *,
        enforce: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = scale
        self.enforce = enforce
        self.totals = CapacityTotals()
        self._monotonic = monotonic
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, table: str, key: str, kind: str, now_s: float) -> TokenBucket:
        bucket = self._buckets.get((table, key, kind))
        if bucket is None:
            per_s = PARTITION_WCU_PER_S if kind == "Write" else PARTITION_RCU_PER_S
            bucket = self._buckets[table, key, kind] = TokenBucket(per_s * self.scale, now_s)
        return bucket

    def admit(self, table: str, key: str, kind: str) -> None:
        """Raise Throttled if the key's partition has no throughput left this instant."""
        with self._lock:
            now_s = self._monotonic()
            if self.enforce and not self._bucket(table, key, kind, now_s).admits(now_s):
                self.totals.throttled[f"{table}:{kind}"] += 1
                raise Throttled(table, key, kind)

    def charge_write(self, table: str, key: str, operation: str, before: int, after: int) -> int:
        units = write_units(before, after)
        self._charge(table, key, operation, "Write", units)
        return units

    def charge_read(
        self, table: str, key: str, operation: str, size: int, *, consistent: bool
    ) -> float:
        units = read_units(size, consistent=consistent)
        self._charge(table, key, operation, "Read", units)
        return units

    def _charge(self, table: str, key: str, operation: str, kind: str, units: float) -> None:
        with self._lock:
            now_s = self._monotonic()
            self._bucket(table, key, kind, now_s).pay(units, now_s)
            billed = self.totals.write_units if kind == "Write" else self.totals.read_units
            billed[f"{table}:{operation}"] += units
            self.totals.requests[f"{table}:{operation}"] += 1

    @contextmanager
    def scaled(self, scale: float) -> Iterator[None]:
        """Partitions held to `scale` of DynamoDB's rates for a while, from full buckets."""
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        with self._lock:
            before, self.scale = self.scale, scale
            self._buckets.clear()
        try:
            yield
        finally:
            with self._lock:
                self.scale = before
                self._buckets.clear()

    def reset(self) -> None:
        with self._lock:
            self.totals = CapacityTotals()
            self._buckets.clear()
