"""Fakes that implement the domain's ports, for tests without AWS."""

from __future__ import annotations

import threading
from collections import defaultdict

from connlease.domain.ports import Clock, Metric, MetricsSink

START_MS = 1_800_000_000_000


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

    def record(self, metric: Metric, value: float, database: str) -> None:
        self.values[metric, database].append(value)
