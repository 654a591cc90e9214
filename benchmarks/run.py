"""`make bench` (about 7 minutes) and `make bench-quick` (about 1): run every benchmark,
print the figures, write docs/benchmarks.md and its chart."""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import cost
from benchmarks.burst import Row, max_connections, run_burst, run_level
from benchmarks.coldstart import ColdStart, measure
from benchmarks.strategies import (
    Connlease,
    DynamoDBCounter,
    MemoryCounter,
    Raw,
    SampleCounter,
    Strategy,
)
from connlease import __version__
from connlease.adapters.clock import SystemClock
from connlease.adapters.dynamodb import DynamoDBLeaseStore, create_table
from connlease.adapters.memory import InMemoryLeaseStore
from connlease.adapters.mysql import MySqlConnector, MySqlEndpoint
from connlease.domain import Backoff, DecorrelatedJitter, Quota
from connlease.local.demo import mysql_from_environment
from connlease.local.dynamodb import EmbeddedDynamoDB, RequestCounter
from connlease.local.watch import ConnectionWatcher

MAX_CONNECTIONS = 30
QUOTA = 25  # max_connections less headroom for the watcher and anything else connected
STORE_LATENCY_S = 0.004  # about one in-region DynamoDB call
UTILIZATION_QUOTA = 10
DATABASE = "bench-db"


@dataclass(frozen=True)
class Plan:
    levels: list[int]
    seconds: float
    oversubscription: list[int]
    cold_start_rounds: int


FULL = Plan([5, 10, 20, 30, 60, 120, 240], 5.0, [2, 4, 8], 10)
QUICK = Plan([10, 60, 240], 2.0, [4], 4)


DEFAULT_BACKOFF = "decorrelated 20-1000 ms (the client's default)"


def backoff() -> Backoff:
    return DecorrelatedJitter(base_ms=20, cap_ms=1000)


def strategies(mysql: MySqlEndpoint, dynamodb: EmbeddedDynamoDB) -> list[Strategy]:
    connector = MySqlConnector(mysql, None)
    client = dynamodb.client(max_pool_connections=300)
    create_table(client, "bench")
    counted = RequestCounter(client)
    ddb_store = DynamoDBLeaseStore(client, "bench", SystemClock())
    ddb_store.set_quota(DATABASE, Quota(QUOTA, 60_000))
    memory_store = InMemoryLeaseStore(SystemClock(), latency_s=STORE_LATENCY_S)
    memory_store.set_quota(DATABASE, Quota(QUOTA, 60_000))
    return [
        Raw(connector),
        SampleCounter(DynamoDBCounter(client, "bench", QUOTA), connector, "embedded DynamoDB"),
        SampleCounter(MemoryCounter(QUOTA, STORE_LATENCY_S), connector, "4 ms store"),
        Connlease(
            ddb_store,
            connector,
            database=DATABASE,
            backend="embedded DynamoDB",
            requests=lambda: counted.sent["UpdateItem"] + counted.sent["GetItem"],
            backoff=backoff(),
        ),
        Connlease(
            memory_store,
            connector,
            database=DATABASE,
            backend="4 ms store",
            requests=memory_store.request_count,
            backoff=backoff(),
        ),
    ]


@dataclass(frozen=True)
class UtilizationRow:
    factor: int
    query_ms: int
    backoff: str
    row: Row


BACKOFF_SWEEP = {
    "decorrelated 5-50 ms": DecorrelatedJitter(5, 50),
    "decorrelated 20-250 ms": DecorrelatedJitter(20, 250),
}


def utilization(
    mysql: MySqlEndpoint, plan: Plan, watcher: ConnectionWatcher
) -> list[UtilizationRow]:
    """Saturation at each oversubscription with the client's default backoff, for the
    burst's 20 ms query and a 100 ms one; then, at 4x, other backoffs for comparison."""
    runs = [
        (factor, query_ms, DEFAULT_BACKOFF, backoff())
        for query_ms in (20, 100)
        for factor in plan.oversubscription
    ]
    runs += [(4, 20, name, sweep) for name, sweep in BACKOFF_SWEEP.items()]
    rows = []
    for factor, query_ms, label, chosen in runs:
        store = InMemoryLeaseStore(SystemClock(), latency_s=STORE_LATENCY_S)
        store.set_quota(DATABASE, Quota(UTILIZATION_QUOTA, 60_000))
        strategy = Connlease(
            store,
            MySqlConnector(mysql, None),
            database=DATABASE,
            backend="4 ms store",
            requests=store.request_count,
            backoff=chosen,
            sql=f"SELECT SLEEP({query_ms / 1000})",
        )
        row = run_level(strategy, UTILIZATION_QUOTA * factor, plan.seconds, watcher)
        print(
            f"utilization {factor}x, {query_ms} ms query, {label}: "
            f"{100 * row.utilization(UTILIZATION_QUOTA):.1f}%"
            f"  {row.requests_per_grant or 0:.2f} requests per lease"
        )
        rows.append(UtilizationRow(factor, query_ms, label, row))
    return rows


def machine(mysql: MySqlEndpoint) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os  # noqa: PLC0415

    connection = MySqlConnector(mysql, None)()
    with connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        (server,) = cursor.fetchone() or ("?",)
    connection.close()
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"MariaDB {server}, connlease {__version__}"
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def burst_table(rows: list[Row]) -> list[str]:
    lines = [
        "| strategy | concurrency | success % | throughput /s | p50 ms | p95 ms | p99 ms "
        "| peak connections | DB errors | rejected | store requests per success |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        errors = ", ".join(f"{code}: {n}" for code, n in sorted(row.tally.db_errors.items()))
        per = row.requests_per_grant
        lines.append(
            f"| {row.strategy} | {row.concurrency} | {row.success_pct:.1f} "
            f"| {row.throughput:.1f} | {ms(row.latency_ms(50))} | {ms(row.latency_ms(95))} "
            f"| {ms(row.latency_ms(99))} | {row.peak_connections} | {errors or '0'} "
            f"| {row.tally.rejected} | {'-' if per is None or per == 0 else f'{per:.2f}'} |"
        )
    return lines


def draw(rows: list[Row], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in dict.fromkeys(row.strategy for row in rows):
        mine = [row for row in rows if row.strategy == name]
        levels = [row.concurrency for row in mine]
        left.plot(levels, [row.success_pct for row in mine], marker="o", label=name)
        right.plot(levels, [row.throughput for row in mine], marker="o", label=name)
    for axis, label in ((left, "success %"), (right, "successful invocations / s")):
        axis.set_xscale("log")
        axis.set_xlabel("concurrent invocations")
        axis.set_ylabel(label)
        axis.set_xticks([row.concurrency for row in rows])
        axis.set_xticklabels([str(row.concurrency) for row in rows])
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(f"Burst against max_connections={MAX_CONNECTIONS}, SELECT SLEEP(0.02)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report(
    *,
    command: str,
    plan: Plan,
    rows: list[Row],
    util: list[UtilizationRow],
    cold: ColdStart,
    host: str,
    chart: Path,
) -> str:
    items = cost.item_costs()
    uncontended = cost.requests_per_uncontended_lease()
    cpu_us = cost.client_cpu_us()
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}; machine: {host}. "
        "Every figure below comes from that one run; absolute times are noisy on this "
        "shared 2-core machine, ratios measured side by side less so.",
        "",
        "## Burst",
        "",
        f"MariaDB `max_connections={MAX_CONNECTIONS}` for the run (restored after). Each "
        f"simulated invocation (a thread) connects, runs `SELECT SLEEP(0.02)` and "
        f"disconnects, back to back for {plan.seconds:.0f} s per level. The managed strategies "
        f"hold a quota of {QUOTA}. connlease waits with decorrelated jitter (base 20 ms, "
        "cap 1 s) within a 10 s budget; the sample's counter fails fast. Each managed "
        "strategy runs twice: through the embedded DynamoDB (moto, serialized, about 190 "
        f"writes/s here: its ceiling, not the algorithm's) and through the in-memory store "
        f"with {STORE_LATENCY_S * 1000:.0f} ms per request (about an in-region DynamoDB call). "
        "Latency is of successful invocations, wait included. Peak connections is "
        "`Threads_connected` polled every 50 ms, less the poller's own.",
        "",
        *burst_table(rows),
        "",
        f"![success and throughput by concurrency]({chart.name})",
        "",
        "## Quota utilization under saturation",
        "",
        f"connlease on the {STORE_LATENCY_S * 1000:.0f} ms store, quota {UTILIZATION_QUOTA}, "
        "the same invocation: the share of the quota's connection-seconds spent inside "
        "queries (100% is the physical limit), and store requests per granted lease.",
        "",
        "| oversubscription | query | backoff | concurrency | utilization "
        "| requests per lease | success % |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for item in util:
        row = item.row
        lines.append(
            f"| {item.factor}x | {item.query_ms} ms | {item.backoff} | {row.concurrency} "
            f"| {100 * row.utilization(UTILIZATION_QUOTA):.1f}% "
            f"| {row.requests_per_grant or 0:.2f} | {row.success_pct:.1f} |"
        )
    lines += [
        "",
        "## Lease cost",
        "",
        f"- Store requests per granted lease, uncontended: {uncontended:.2f} "
        "(one write to take, one to give back).",
        f"- Client CPU per acquire + release against a zero-latency store: {cpu_us:.0f} µs.",
        "",
        "Item size and write units of the costliest acquire or release (a full quota; an "
        "UpdateItem costs one WCU per started KB of the larger of the item before and after):",
        "",
        "| limit | item bytes (no holders) | WCU | item bytes (with holders) | WCU |",
        "|---:|---:|---:|---:|---:|",
    ]
    for cost_item in items:
        lines.append(
            f"| {cost_item.limit} | {cost_item.bytes_bare} | {cost_item.wcu_bare} "
            f"| {cost_item.bytes_with_holders} | {cost_item.wcu_with_holders} |"
        )
    lines += [
        "",
        "## Cold start",
        "",
        f"Process start to handler ready (interpreter, imports, the composition root), "
        f"{len(cold.helper_ms)} alternated runs each, Lambda-like environment:",
        "",
        "| handler | median ms | min ms |",
        "|---|---:|---:|",
        f"| helper (`import connlease.service.helper`) | {ms(statistics.median(cold.helper_ms))} "
        f"| {ms(min(cold.helper_ms))} |",
        f"| minimal (`boto3.client('dynamodb')`) | {ms(statistics.median(cold.minimal_ms))} "
        f"| {ms(min(cold.minimal_ms))} |",
        "",
        f"Ratio helper / minimal: **{cold.ratio:.2f}x**.",
        "",
        *targets(rows, util, cold),
    ]
    return "\n".join(lines)


def targets(rows: list[Row], util: list[UtilizationRow], cold: ColdStart) -> list[str]:
    """Where the run stands against the targets, in the same run's figures."""
    managed = [row for row in rows if row.strategy.startswith("connlease")]
    on_store = [row for row in managed if "4 ms" in row.strategy]
    on_emulator = [row for row in managed if "4 ms" not in row.strategy]

    def clean(group: list[Row]) -> bool:
        return all(row.success_pct == 100 and not row.tally.db_errors for row in group)

    def lowest(group: list[Row]) -> str:
        return f"{min(row.success_pct for row in group):.1f}% lowest" if group else "-"

    within = max(row.peak_connections for row in managed) <= QUOTA
    at4 = next(
        u.row for u in util if u.factor == 4 and u.query_ms == 20 and u.backoff == DEFAULT_BACKOFF
    )
    at4_long = next((u.row for u in util if u.factor == 4 and u.query_ms == 100), None)
    used = 100 * at4.utilization(UTILIZATION_QUOTA)
    per = at4.requests_per_grant or 0.0
    hold_floor = 20 + STORE_LATENCY_S * 1000  # half of each of two round trips, plus the query
    ceiling = 100 * 20 / hold_floor

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    return [
        "## Against the targets",
        "",
        "| target | this run | |",
        "|---|---|---|",
        f"| 100% success, 0 DB errors at every level: connlease, 4 ms store | "
        f"{lowest(on_store)} | {mark(clean(on_store))} |",
        f"| the same through the embedded DynamoDB | {lowest(on_emulator)} "
        f"| {mark(clean(on_emulator))} |",
        f"| peak connections never above the quota ({QUOTA}) | "
        f"{max(row.peak_connections for row in managed)} | {mark(within)} |",
        f"| utilization >= 85% at 4x, 4 ms store | {used:.1f}% | {mark(used >= 85)} |",
        f"| <= 2.2 store requests per lease at 4x | {per:.2f} | {mark(per <= 2.2)} |",
        f"| helper cold start <= 1.5x the minimal handler | {cold.ratio:.2f}x "
        f"| {mark(cold.ratio <= 1.5)} |",
        "",
        "Why, where a target is not met:",
        "",
        "- **Success through the embedded DynamoDB.** moto, serialized, takes about 190 "
        "writes a second on this machine, and every waiting invocation's attempt is a write: "
        "at the highest concurrency some waits outlast their 10 s budget and end in a clean "
        "`NoCapacity` (never a MySQL error). The same algorithm on the 4 ms store, which "
        "stands in for DynamoDB's own throughput, succeeds at every level.",
        f"- **Utilization.** A lease counts from the moment its write applies until its "
        "release applies: at least half of each of the two round trips "
        f"({STORE_LATENCY_S * 1000:.0f} ms together) on top of the 20 ms query, and then "
        "the connect and close. With one "
        f"lease per invocation the ceiling for a 20 ms query is therefore about "
        f"{ceiling:.0f}%, before any wait between a release and the next waiter's attempt. "
        f"For a 100 ms query the same run measured "
        f"{100 * at4_long.utilization(UTILIZATION_QUOTA) if at4_long else float('nan'):.1f}%. "
        "Crossing 85% on short queries needs a lease that outlives one invocation (a warm "
        "environment keeping its lease and connection, DESIGN.md's planned item), which in "
        "turn needs a way to close a frozen environment's connection when its lease is "
        "reclaimed.",
        "- **Requests per lease.** Waiters poll: every attempt made while the quota is full "
        "is a refused write. Polling less often leaves freed slots idle longer; the backoff "
        "rows above show the trade (shorter waits: higher utilization, more requests). "
        "Reaching 2.2 at 4x without losing utilization needs the releaser to hand its slot to "
        "a waiter (a queue in the item), not tuning.",
        "- **Cold start.** Both processes run with the variables Lambda sets, "
        "`LAMBDA_TASK_ROOT` included: without it the X-Ray SDK thinks it is outside Lambda "
        "and builds a sampling client with its own AWS client while it is imported, a cost "
        "no real cold start pays (earlier runs of this benchmark were charged it). The "
        "helper validates requests with a pydantic TypeAdapter on the contract instead of "
        "Powertools Parser, has X-Ray patch botocore alone, and makes its clients from "
        "botocore without boto3's resource layer. What remains is what it uses, largest "
        "first: pydantic, the X-Ray SDK with its patch, Powertools, the domain and the "
        "settings models (`python -X importtime -c 'import connlease.service.helper'` with "
        "the environment above shows the split). Under 1.5x would take the contract and "
        "settings off pydantic on the cold path.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    command = "make bench-quick" if args.quick else "make bench"
    mysql = replace(mysql_from_environment(), connect_timeout_s=5, read_timeout_s=5)
    random.seed()
    host = machine(mysql)
    print(host)
    # First, on a quiet machine: after the bursts MariaDB and the OS are still settling.
    cold = measure(plan.cold_start_rounds)
    print(f"cold start: helper / minimal = {cold.ratio:.2f}x")
    with EmbeddedDynamoDB() as dynamodb, max_connections(mysql, MAX_CONNECTIONS):
        watcher = ConnectionWatcher(mysql)
        with watcher.watching():
            rows = run_burst(strategies(mysql, dynamodb), plan.levels, plan.seconds, watcher)
            util = utilization(mysql, plan, watcher)
    chart = args.output.with_suffix(".png")
    draw(rows, chart)
    args.output.write_text(
        report(command=command, plan=plan, rows=rows, util=util, cold=cold, host=host, chart=chart)
    )
    print(f"wrote {args.output} and {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
