"""Watching MySQL from the side: the server's own count of open connections."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from connlease.adapters.mysql import MySqlConnector, MySqlEndpoint, server_variable


class ConnectionWatcher:
    """Polls MariaDB's Threads_connected every 50 ms on its own connection."""

    def __init__(self, mysql: MySqlEndpoint, interval_s: float = 0.05) -> None:
        self._connection = MySqlConnector(mysql, None)()
        self._interval_s = interval_s
        self.baseline = server_variable(self._connection, "Threads_connected")
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak = max(self.peak, server_variable(self._connection, "Threads_connected"))

    def restart_peak(self) -> int:
        """The peak so far, less the baseline; the next peak counts from now."""
        peak, self.peak = self.peak, self.baseline
        return peak - self.baseline

    @contextmanager
    def watching(self) -> Iterator[ConnectionWatcher]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self._connection.close()
