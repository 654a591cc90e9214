"""Watching from the side while a load runs: a sampler on a thread of its own, and MariaDB's
own count of open connections."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from adapters.mysql import MySqlConnector, MySqlEndpoint, server_variable


class Poller(ABC):
    """Calls `sample` every `interval_s` on a thread of its own while `watching()`."""

    def __init__(self, interval_s: float, name: str) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=name, daemon=True)

    @abstractmethod
    def sample(self) -> None: ...

    @abstractmethod
    def stopped(self) -> None:
        """Runs once, after the last sample: a final look, closing what sampling used."""

    def _poll(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()

    @contextmanager
    def watching(self) -> Iterator[Self]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.stopped()


class ConnectionWatcher(Poller):
    """Polls MariaDB's Threads_connected every 50 ms on its own connection."""

    def __init__(self, mysql: MySqlEndpoint, interval_s: float = 0.05) -> None:
        super().__init__(interval_s, "connection-watcher")
        self._connection = MySqlConnector(mysql, None)()
        self.baseline = server_variable(self._connection, "Threads_connected")
        self.peak = self.baseline

    def sample(self) -> None:
        self.peak = max(self.peak, server_variable(self._connection, "Threads_connected"))

    def stopped(self) -> None:
        self._connection.close()

    @property
    def peak_above_baseline(self) -> int:
        return self.peak - self.baseline

    def restart_peak(self) -> int:
        """The peak so far, less the baseline; the next peak counts from now."""
        peak, self.peak = self.peak, self.baseline
        return peak - self.baseline


class ConnectionTimeline(ConnectionWatcher):
    """A ConnectionWatcher that keeps every sample, (wall-clock ms, Threads_connected), so
    that a chart can draw MySQL's own count of connections through a run."""

    def __init__(self, mysql: MySqlEndpoint, interval_s: float = 0.05) -> None:
        super().__init__(mysql, interval_s)
        self.samples: list[tuple[int, int]] = [(_now_ms(), self.baseline)]

    def sample(self) -> None:
        connected = server_variable(self._connection, "Threads_connected")
        self.samples.append((_now_ms(), connected))
        self.peak = max(self.peak, connected)


def _now_ms() -> int:
    return int(time.time() * 1000)
