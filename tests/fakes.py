"""Fakes that implement the domain's ports, for tests without AWS."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from adapters.memory import InMemoryItems, operation_of
from domain.item import ItemWrite, QuotaState
from domain.ports import Clock, Metric, MetricsSink, Written

START_MS = 1_800_000_000_000


class Boom(Exception):
    """What a test's own code raises, to tell it apart from anything connlease raises."""


class FakeClock(Clock):
    """A clock that only moves when told to; sleeping moves it."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self._now_ms = now_ms
        self._lock = threading.Lock()
        self.slept_ms: list[int] = []

    def now_ms(self) -> int:
        return self._now_ms

    def sleep_ms(self, ms: int) -> None:
        self.slept_ms.append(ms)
        self.advance(ms)

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now_ms += ms


class RecordingMetrics(MetricsSink):
    def __init__(self) -> None:
        self.values: dict[tuple[Metric, str], list[float]] = defaultdict(list)
        self.by_group: dict[tuple[Metric, str, str], list[float]] = defaultdict(list)

    def record(self, metric: Metric, value: float, database: str, group: str | None = None) -> None:
        if group is None:
            self.values[metric, database].append(value)
        else:
            self.by_group[metric, database, group].append(value)


class InMemoryIdempotencyStore(BasePersistenceLayer):
    """Powertools idempotency records in a dict: the DynamoDB layer's semantics, no AWS."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.records: dict[str, DataRecord] = {}

    def _get_record(self, idempotency_key: str) -> DataRecord:
        try:
            return self.records[idempotency_key]
        except KeyError:
            raise IdempotencyItemNotFoundError(idempotency_key) from None

    def _put_record(self, data_record: DataRecord) -> None:
        existing = self.records.get(data_record.idempotency_key)
        if existing is not None and not existing.is_expired:
            raise IdempotencyItemAlreadyExistsError(old_data_record=existing)
        self.records[data_record.idempotency_key] = data_record

    def _update_record(self, data_record: DataRecord) -> None:
        self.records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        self.records.pop(data_record.idempotency_key, None)


class FakeContext:
    """A Lambda context whose remaining time runs on a FakeClock."""

    def __init__(
        self, clock: FakeClock, timeout_ms: int = 30_000, function_name: str = "orders-fn"
    ) -> None:
        self._clock = clock
        self._deadline_ms = clock.now_ms() + timeout_ms
        self.function_name = function_name
        self.aws_request_id = "8f14e45f-ceea-467f-a8f0-9b0b1c6e2a11"
        self.memory_limit_in_mb = 128
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}"
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - self._clock.now_ms())


class HookedItems(InMemoryItems):
    """In-memory items that call `hook(operation, applied)` around each request: before it
    (`applied` False) and after it (True), where a test raises to fail the request, before
    or after it took effect (its answer lost). Operations as adapters.memory names them
    (`add`, `reclaim`, `remove`, `extend`, `read`, ...)."""

    def __init__(self, hook: Callable[[str, bool], None]) -> None:
        super().__init__()
        self.hook = hook

    def read(self, key: str) -> QuotaState | None:
        self.hook("read", False)
        found = super().read(key)
        self.hook("read", True)
        return found

    def read_many(self, keys: Sequence[str]) -> dict[str, QuotaState]:
        self.hook("read_items", False)
        found = super().read_many(keys)
        self.hook("read_items", True)
        return found

    def write(self, key: str, write: ItemWrite) -> Written:
        operation = operation_of(write)
        self.hook(operation, False)
        written = super().write(key, write)
        self.hook(operation, True)
        return written
