"""The burst: C simulated invocations at once for a fixed time, each connecting, running
`SELECT SLEEP(0.02)` and disconnecting, against MariaDB with max_connections=30."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.strategies import Strategy, Tally
from local.watch import ConnectionWatcher
from service.harness import percentile


@dataclass(frozen=True)
class Row:
    strategy: str
    concurrency: int
    began: float
    seconds: float
    elapsed_s: float
    tally: Tally
    peak_connections: int
    store_requests: int

    @property
    def attempts(self) -> int:
        t = self.tally
        return t.succeeded + t.rejected + sum(t.db_errors.values())

    @property
    def success_pct(self) -> float:
        return 100 * self.tally.succeeded / self.attempts if self.attempts else 0.0

    @property
    def throughput(self) -> float:
        return self.tally.succeeded / self.elapsed_s

    def latency_ms(self, p: int) -> float | None:
        return percentile(sorted(self.tally.latencies_ms), p)

    @property
    def requests_per_grant(self) -> float | None:
        return self.store_requests / self.tally.succeeded if self.tally.succeeded else None

    @property
    def ended(self) -> float:
        """When the level's fixed time was up (perf_counter); in-flight work ran on."""
        return self.began + self.seconds

    @property
    def workers_served(self) -> int:
        return self.tally.workers_served(self.ended)

    @property
    def longest_ms(self) -> float | None:
        return max(self.tally.latencies_ms, default=None)

    def utilization(self, quota: int) -> float:
        """The share of the quota's connection-seconds spent inside queries, over the
        level's fixed time: the drain after it (waiters finishing) is not saturation."""
        return self.tally.in_query_s(self.began, self.ended) / (quota * self.seconds)


def run_level(
    strategy: Strategy,
    concurrency: int,
    seconds: float,
    watcher: ConnectionWatcher,
) -> Row:
    """`concurrency` workers invoke back to back until the time is up; in-flight
    invocations finish and count."""
    tally = Tally()
    requests_before = strategy.store_requests()
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker() -> None:
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                strategy.invoke(tally)
        finally:
            strategy.done()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    watcher.restart_peak()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return Row(
        strategy=strategy.name,
        concurrency=concurrency,
        began=began,
        seconds=seconds,
        elapsed_s=elapsed,
        tally=tally,
        peak_connections=watcher.restart_peak(),
        store_requests=strategy.store_requests() - requests_before,
    )


def run_burst(
    strategies: list[Strategy],
    levels: list[int],
    seconds: float,
    watcher: ConnectionWatcher,
    progress: Callable[[str], None] = print,
) -> list[Row]:
    rows = []
    for strategy in strategies:
        for concurrency in levels:
            row = run_level(strategy, concurrency, seconds, watcher)
            progress(
                f"{strategy.name:32} c={concurrency:<4} success {row.success_pct:5.1f}%"
                f"  {row.throughput:6.1f}/s  peak {row.peak_connections}"
            )
            rows.append(row)
            time.sleep(0.5)  # let the server close what the level left
    return rows
