"""`make demo`: the original sample's whole demo on this machine, without an AWS account.

Starts the embedded DynamoDB and the local Lambda endpoint, seeds Employees and the
quota through the seeder custom resource, runs the harness against the test function,
and reports: outcomes, MySQL errors by code, lease waits, and the peak number of MySQL
connections next to the quota, plus a chart of RemainingConnections and
NoConnectionsLeftError drawn from the EMF lines the functions printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import DatabaseError, MySqlConnector, MySqlEndpoint, server_variable
from domain import QuotaStatus
from local import hotspot
from local.cfn import ResponseCatcher, custom_resource_event
from local.demo_setup import MySqlUnusable, mysql_from_environment, parse_query_time
from local.stack import HARNESS, SEEDER, TEST, LocalStack, Tables, workload_functions
from local.watch import ConnectionWatcher
from service.workload import QueryTime

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class DemoOptions:
    iterations: int = 200
    concurrency: int = 20
    quota: int = 5
    query_time_s: QueryTime = (0.1, 0.4)
    mode: Literal["lambda", "direct"] = "lambda"
    lease_hold_ms: int = 0  # 0: a lease per invocation; else warm leases held this long
    lease_ttl_ms: int | None = None  # how long an invocation may hold its connection
    output_dir: Path = Path("demo-output")
    mysql: MySqlEndpoint = field(default_factory=MySqlEndpoint)
    quota_database: str = "demo-mysql"
    show_progress: bool = True


@dataclass(frozen=True)
class DemoReport:
    options: DemoOptions
    invocations: int
    outcomes: dict[str, int]
    db_errors: dict[str, int]
    lease_wait_ms: dict[str, float | None]
    baseline_connections: int
    peak_connections: int  # Threads_connected at its highest, less the baseline
    max_connections: int
    quota_after: QuotaStatus
    chart: Path
    seconds: float

    @property
    def accounted(self) -> int:
        return self.outcomes.get("succeeded", 0) + self.outcomes.get("no_capacity", 0)


def lease_ttl_ms(options: DemoOptions) -> int:
    """The options' TTL, else: a lease per invocation lasts until the invocation's deadline;
    a warm one covers the longest query and a second more, so that an environment frozen
    after the load keeps its slot seconds, not the function's whole timeout."""
    if options.lease_ttl_ms is not None:
        return options.lease_ttl_ms
    if not options.lease_hold_ms:
        return 0
    query_time = options.query_time_s
    longest_s = query_time[1] if isinstance(query_time, tuple) else query_time
    return round(longest_s * 1000) + 1000


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoReport:
    console = console or Console(quiet=True)
    started = time.monotonic()
    try:
        probe = MySqlConnector(options.mysql, None)()
        max_connections = server_variable(probe, "max_connections")
        probe.close()
    except DatabaseError as error:
        raise MySqlUnusable.of(options.mysql, error) from error
    options.output_dir.mkdir(parents=True, exist_ok=True)
    log_dir = options.output_dir / f"logs-{time.strftime('%Y%m%d-%H%M%S')}"
    tables = Tables(f"demo-leases-{uuid.uuid4().hex[:6]}", f"demo-idem-{uuid.uuid4().hex[:6]}")

    def functions(url: str, tables: Tables) -> list[Any]:
        return workload_functions(
            url,
            tables,
            mysql=options.mysql,
            quota_database=options.quota_database,
            concurrency=options.concurrency,
            lease_mode=options.mode,
            lease_hold_ms=options.lease_hold_ms,
            lease_ttl_ms=lease_ttl_ms(options),
        )

    with LocalStack(functions, tables=tables, log_dir=log_dir) as stack:
        assert stack.lambdas is not None
        client = stack.lambda_client()
        console.print(f"[bold]seeding[/] Employees and a quota of {options.quota} via the seeder")
        seed(stack, options)
        watcher = ConnectionWatcher(options.mysql)
        event = {
            "iterations": options.iterations,
            "operation": "load",
            "concurrency": options.concurrency,
            "query_time_s": options.query_time_s,
            "invocation": "sync",
        }
        load_started_ms = int(time.time() * 1000)
        result: dict[str, Any] = {}
        with watcher.watching():
            worker = threading.Thread(
                target=lambda: result.update(
                    json.loads(
                        client.invoke(FunctionName=HARNESS, Payload=json.dumps(event))[
                            "Payload"
                        ].read()
                    )
                )
            )
            worker.start()
            follow_progress(stack, options, console, worker)
            worker.join()
        if not result.get("ok"):
            raise RuntimeError(f"the harness failed: {result}")
        store = DynamoDBLeaseStore(stack.dynamodb_client(), tables.leases, SystemClock())
        quota_after = store.status(options.quota_database)
        chart = draw_chart(
            emf_points(log_dir, options.quota_database, since_ms=load_started_ms),
            options,
            options.output_dir / "demo-chart.png",
        )
    return DemoReport(
        options=options,
        invocations=result["invocations"],
        outcomes=result["outcomes"],
        db_errors=result["db_errors"],
        lease_wait_ms=result["lease_wait_ms"],
        baseline_connections=watcher.baseline,
        peak_connections=watcher.peak_above_baseline,
        max_connections=max_connections,
        quota_after=quota_after,
        chart=chart,
        seconds=time.monotonic() - started,
    )


def seed(stack: LocalStack, options: DemoOptions) -> None:
    client = stack.lambda_client()
    with ResponseCatcher() as catcher:
        event = custom_resource_event(
            "Create",
            {"Database": options.quota_database, "Limit": str(options.quota)},
            catcher.url_for("seed"),
        )
        client.invoke(FunctionName=SEEDER, Payload=json.dumps(event))
        (response,) = catcher.wait_for(1, timeout_s=60)
    if response.get("Status") != "SUCCESS":
        raise RuntimeError(f"seeding failed: {response.get('Reason')}")


def follow_progress(
    stack: LocalStack, options: DemoOptions, console: Console, worker: threading.Thread
) -> None:
    """A progress bar fed by the test function's log: one REPORT line per invocation."""
    assert stack.lambdas is not None
    lambdas = stack.lambdas
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not options.show_progress,
    ) as progress:
        task = progress.add_task("invocations", total=options.iterations)
        while worker.is_alive():
            done = sum(1 for line in lambdas.log_lines(TEST) if line.startswith("REPORT"))
            progress.update(task, completed=done)
            worker.join(timeout=0.25)
        progress.update(task, completed=options.iterations)


def emf_points(log_dir: Path, database: str, since_ms: int) -> dict[str, dict[int, list[float]]]:
    """Per metric, per second since `since_ms`: the values the EMF lines carried."""
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for log in log_dir.glob("*.log"):
        for line in log.read_text().splitlines():
            if not line.startswith('{"_aws"'):
                continue
            try:
                document = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{log.name}: not one EMF document: {line!r}") from error
            if document.get("database") != database:
                continue
            second = (document["_aws"]["Timestamp"] - since_ms) // 1000
            for name in ("RemainingConnections", "NoConnectionsLeftError"):
                for value in document.get(name, []):
                    points[name][second].append(value)
    return points


def draw_chart(points: dict[str, dict[int, list[float]]], options: DemoOptions, path: Path) -> Path:
    """The local twin of the sample's CloudWatch graph, written to `path`."""
    chart_figure(points, options).savefig(path, dpi=100)
    return path


def chart_figure(points: dict[str, dict[int, list[float]]], options: DemoOptions) -> Figure:
    # A bare Figure, not pyplot: no global figure to close, no backend to pick.
    from matplotlib.figure import Figure  # noqa: PLC0415 - heavy, and only the demo draws

    remaining = points.get("RemainingConnections", {})
    refused = points.get("NoConnectionsLeftError", {})
    seconds = sorted(set(remaining) | set(refused)) or [0]
    # Constrained layout reserves room for the title and the legend outside the axes.
    figure = Figure(figsize=(9, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    for pick, shade, label in ((min, "tab:blue", "min"), (max, "tab:cyan", "max")):
        top.step(
            seconds,
            [pick(remaining[s]) if s in remaining else None for s in seconds],
            where="post",
            color=shade,
            label=f"RemainingConnections ({label} per second)",
        )
    top.axhline(options.quota, color="tab:gray", linestyle="--", label=f"quota ({options.quota})")
    top.set_ylim(bottom=-0.5, top=options.quota + 1)
    top.set_ylabel("leases free")
    bottom.bar(
        seconds,
        [sum(refused.get(s, [])) for s in seconds],
        color="tab:red",
        label="NoConnectionsLeftError (sum per second)",
    )
    bottom.set_ylabel("refused acquires")
    bottom.set_xlabel("seconds since the load started")
    # One legend below the axes: inside them it hid the quota line and the bars.
    figure.legend(loc="outside lower center", ncols=2)
    # A line each for the run and the warm leases: on one line a warm run's title is
    # wider than the figure.
    title = (
        f"connlease demo: {options.iterations} invocations, "
        f"concurrency {options.concurrency}, quota {options.quota}, mode {options.mode}"
    )
    if options.lease_hold_ms:
        title += (
            f"\nwarm leases held {options.lease_hold_ms} ms, lease TTL {lease_ttl_ms(options)} ms"
        )
    figure.suptitle(title)
    return figure


def quota_after(report: DemoReport) -> str:
    after = report.quota_after
    said = f"{after.in_use} in use, {after.remaining} of {after.limit} free"
    if report.options.lease_hold_ms and after.in_use:
        # Frozen warm environments cannot give back: their leases end on their own.
        ends_s = max(lease.expires_at_ms for lease in after.leases) / 1000 - time.time()
        said += f" (kept by warm environments; the last ends in {max(0, ends_s):.0f} s)"
    return said


def results_table(report: DemoReport) -> Table:
    outcomes = report.outcomes
    waits = report.lease_wait_ms
    db_errors = ", ".join(f"{code}: {n}" for code, n in sorted(report.db_errors.items())) or "none"
    table = Table(title="connlease demo", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("invocations", str(report.invocations)),
        ("succeeded", str(outcomes.get("succeeded", 0))),
        ("no capacity", str(outcomes.get("no_capacity", 0))),
        ("DB errors by code", db_errors),
        (
            "other failures",
            str(report.invocations - report.accounted - sum(report.db_errors.values())),
        ),
        (
            "lease wait p50 / p95 / p99",
            " / ".join(_ms(waits.get(p)) for p in ("p50", "p95", "p99")),
        ),
        (
            "peak MySQL connections (Threads_connected)",
            f"{report.peak_connections} above a baseline of {report.baseline_connections}"
            f"; quota {report.options.quota}, max_connections {report.max_connections}",
        ),
        ("quota after the run", quota_after(report)),
        ("chart", str(report.chart)),
        ("took", f"{report.seconds:.0f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


SCENARIOS = ("default", "hotspot")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `--scenario hotspot` hands the rest of the line to its own parser (local.hotspot).
    picker = argparse.ArgumentParser(add_help=False)
    picker.add_argument("--scenario", choices=SCENARIOS, default="default")
    picked, rest = picker.parse_known_args(argv)
    if picked.scenario == "hotspot":
        return hotspot.main(rest)
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(prog="make demo ARGS=...", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="default",
        help="default: this demo; hotspot: an API and a batch function on one database, "
        'without and with groups (make demo ARGS="--scenario hotspot --help")',
    )
    parser.add_argument("--iterations", "-n", type=int, default=defaults.iterations)
    parser.add_argument("--concurrency", "-c", type=int, default=defaults.concurrency)
    parser.add_argument("--quota", "-q", type=int, default=defaults.quota)
    parser.add_argument(
        "--query-time",
        type=parse_query_time,
        default=defaults.query_time_s,
        help="seconds each invocation holds its connection: 0.2, or a range such as 0.1-0.4",
    )
    parser.add_argument("--mode", choices=["lambda", "direct"], default=defaults.mode)
    parser.add_argument(
        "--lease-hold-ms",
        type=int,
        default=defaults.lease_hold_ms,
        help="warm leases: each test environment keeps its lease and connection this long "
        "(0, the default: a lease per invocation)",
    )
    parser.add_argument(
        "--lease-ttl-ms",
        type=int,
        default=None,
        help="how long one invocation may hold its connection (0: until its deadline; "
        "default: that, or with warm leases the longest query time and a second more)",
    )
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir)
    args = parser.parse_args(argv)
    console = Console()
    try:
        mysql = mysql_from_environment()
    except ValueError as error:
        parser.error(str(error))
    options = DemoOptions(
        iterations=args.iterations,
        concurrency=args.concurrency,
        quota=args.quota,
        query_time_s=args.query_time,
        mode=args.mode,
        lease_hold_ms=args.lease_hold_ms,
        lease_ttl_ms=args.lease_ttl_ms,
        output_dir=args.output_dir,
        mysql=mysql,
    )
    try:
        report = run_demo(options, console)
    except MySqlUnusable as error:
        console.print(error.explain())
        return 2
    console.print(results_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
