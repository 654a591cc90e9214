"""`make demo`: the same burst without connlease (MySQL's error 1040) and with it, locally.

No AWS account is needed. The original sample's load demo, the same burst run twice
against one MySQL server whose max_connections is lowered for the demo to a little above
the quota (and put back after, even when the demo is stopped): first without connlease,
each invocation of the test function connecting straight away (LEASE_MODE none), so that
the burst overruns max_connections and MySQL refuses connections with error 1040; then
with connlease, each invocation taking a lease before it connects, so that MySQL never
sees more connections than the quota and no invocation meets a 1040. (MariaDB will not
lower max_connections under 10: idle connections the demo holds take up the difference.)

Both runs are served by one local stack: embedded DynamoDB and the local Lambda endpoint
running the helper, the seeder (Employees and the quota), and a test function and a
harness for each run. The server is the one DB_HOST, DB_PORT, DB_USER and DB_PASSWORD
name; else 127.0.0.1:3306; else, when MariaDB is installed, a throwaway one
(local.demo_setup.demo_mysql). A poller reads MySQL's Threads_connected every 50 ms.

The report gives both runs side by side, each figure explained in a line, and a chart
(demo-output/demo-chart.png): MySQL connections against max_connections and the quota,
errors 1040 per second, and each invocation's lease wait.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import (
    TOO_MANY_CONNECTIONS,
    DatabaseError,
    MySqlConnector,
    MySqlEndpoint,
    server_variable,
)
from domain import QuotaStatus
from local import figures, hotspot
from local.cfn import ResponseCatcher, custom_resource_event
from local.demo_setup import (
    MaxConnectionsFixed,
    MySqlUnusable,
    demo_mysql,
    max_connections,
    mysql_from_environment,
    parse_query_time,
    unwind_on_sigterm,
)
from local.lambda_endpoint import FunctionSpec
from local.mariadb import ThrowawayFailed
from local.stack import HARNESS, HELPER, SEEDER, TEST, LocalStack, Tables, workload_functions
from local.watch import ConnectionTimeline
from service.workload import QueryTime

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The run without connlease: the same test function and harness, LEASE_MODE none.
BARE_TEST = "connlease-test-none"
BARE_HARNESS = "connlease-harness-none"
WITHOUT = "without connlease"
WITH = "with connlease"
# max_connections for the demo: what is open before the bursts, the quota, and this many.
SPARE_CONNECTIONS = 1
# The client library's default backoff between refused tries (service.client).
BACKOFF_CAP_S = 1.0


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
    # First the burst without connlease, under a lowered max_connections. False: only the
    # run with connlease, and the server's max_connections is left alone.
    without_connlease: bool = True


@dataclass(frozen=True)
class Call:
    """One invocation of a test function, from its "workload done" log line; times in
    seconds since its run's burst began."""

    ended_s: float
    duration_s: float
    outcome: str
    lease_wait_s: float | None = None  # None: it took no lease (LEASE_MODE none)
    db_error_code: int | None = None

    @property
    def began_s(self) -> float:
        return self.ended_s - self.duration_s


@dataclass(frozen=True)
class RunReport:
    """One burst: the harness's summary, and what the chart draws."""

    name: str  # WITHOUT or WITH
    leased: bool
    invocations: int
    outcomes: dict[str, int]
    db_errors: dict[str, int]  # by MySQL error code
    lease_wait_ms: dict[str, float | None]  # p50, p95, p99
    peak_connections: int  # Threads_connected at its highest, less the baseline
    # (seconds since the burst began, Threads_connected less the baseline), every 50 ms
    connections: list[tuple[float, int]]
    calls: list[Call]
    refused_per_second: dict[int, float]  # NoConnectionsLeftError summed, from EMF
    seconds: float  # from the burst's first invocation to the harness's answer
    quota_after: QuotaStatus | None = None  # with connlease only

    @property
    def accounted(self) -> int:
        return self.outcomes.get("succeeded", 0) + self.outcomes.get("no_capacity", 0)

    @property
    def too_many_connections(self) -> int:
        """Invocations MySQL refused with error 1040."""
        return self.db_errors.get(str(TOO_MANY_CONNECTIONS), 0)

    @property
    def refused_acquires(self) -> int:
        return round(sum(self.refused_per_second.values()))

    def errors_per_second(self, code: int = TOO_MANY_CONNECTIONS) -> dict[int, int]:
        counted = Counter(int(call.ended_s) for call in self.calls if call.db_error_code == code)
        return dict(counted)

    def mean_hold_s(self) -> float | None:
        """How long a succeeded invocation held its connection, on average."""
        held = [
            call.duration_s - (call.lease_wait_s or 0.0)
            for call in self.calls
            if call.outcome == "succeeded"
        ]
        return sum(held) / len(held) if held else None


@dataclass(frozen=True)
class DemoReport:
    options: DemoOptions
    runs: tuple[RunReport, ...]  # without connlease (unless skipped), then with
    # Connections open before the bursts: the demo's poller, the connection that set
    # max_connections, and any other client's. The chart draws the bursts' own above it.
    baseline_connections: int
    max_connections: int  # in effect during the runs
    max_connections_before: int  # the server's own, put back after
    # Held idle while max_connections was lowered: MariaDB raises less than 10 to 10.
    idle_connections: int
    chart: Path
    seconds: float

    @property
    def with_connlease(self) -> RunReport:
        return self.runs[-1]

    @property
    def without_connlease(self) -> RunReport | None:
        return self.runs[0] if len(self.runs) > 1 else None

    @property
    def room(self) -> int:
        """Connections max_connections leaves the bursts."""
        return self.max_connections - self.baseline_connections


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
        before = server_variable(probe, "max_connections")
        # The probe counts itself: the connection that sets max_connections takes its place.
        open_now = server_variable(probe, "Threads_connected")
        probe.close()
    except DatabaseError as error:
        raise MySqlUnusable.of(options.mysql, error) from error
    # Room for what is open now, the poller about to open, the quota, and a spare.
    asked = open_now + 1 + options.quota + SPARE_CONNECTIONS
    options.output_dir.mkdir(parents=True, exist_ok=True)
    log_dir = options.output_dir / f"logs-{time.strftime('%Y%m%d-%H%M%S')}"
    tables = Tables(f"demo-leases-{uuid.uuid4().hex[:6]}", f"demo-idem-{uuid.uuid4().hex[:6]}")
    with ExitStack() as cleanup:  # undone in reverse, however the demo ends
        in_effect, idle = before, 0
        if options.without_connlease:
            try:
                in_effect = cleanup.enter_context(max_connections(options.mysql, asked))
            except DatabaseError as error:
                raise MaxConnectionsFixed(options.mysql, error) from error
            # MariaDB will not go under 10: idle connections take up the difference, as
            # other clients would on a real server, so that the bursts' room is as asked.
            idle = max(0, in_effect - asked)
            for _ in range(idle):
                cleanup.callback(MySqlConnector(options.mysql, None)().close)
            console.print(
                f"[bold]max_connections[/] {before} lowered to {in_effect} for the demo (put "
                f"back at the end){f', {idle} idle connections held' if idle else ''}"
            )
        timeline = cleanup.enter_context(ConnectionTimeline(options.mysql).watching())
        stack = cleanup.enter_context(
            LocalStack(lambda url, tables: functions(url, tables, options), tables, log_dir)
        )
        console.print(f"[bold]seeding[/] Employees and a quota of {options.quota} via the seeder")
        seed(stack, options)
        runs = []
        if options.without_connlease:
            runs.append(burst(stack, options, console, timeline, leased=False))
        runs.append(burst(stack, options, console, timeline, leased=True))
        report = DemoReport(
            options=options,
            runs=tuple(runs),
            baseline_connections=timeline.baseline,
            max_connections=in_effect,
            max_connections_before=before,
            idle_connections=idle,
            chart=options.output_dir / "demo-chart.png",
            seconds=0.0,
        )
    draw_chart(report, report.chart)
    return replace(report, seconds=time.monotonic() - started)


def functions(url: str, tables: Tables, options: DemoOptions) -> list[FunctionSpec]:
    """The sample's four functions, and for the run without connlease a second test
    function (LEASE_MODE none) with a harness of its own. The test functions' environments
    and, in lambda mode, the helper's start with the stack (provisioned concurrency)."""
    specs = workload_functions(
        url,
        tables,
        mysql=options.mysql,
        quota_database=options.quota_database,
        concurrency=options.concurrency,
        lease_mode=options.mode,
        lease_hold_ms=options.lease_hold_ms,
        lease_ttl_ms=lease_ttl_ms(options),
    )
    if options.mode == "lambda":
        # The helper's environments started with the stack, as the test function's are:
        # else the first leases wait seconds for them to start cold, a wait no lease costs.
        specs = [
            replace(spec, provisioned=spec.concurrency) if spec.name == HELPER else spec
            for spec in specs
        ]
    if not options.without_connlease:
        return specs
    named = {spec.name: spec for spec in specs}
    test, harness = named[TEST], named[HARNESS]
    return [
        *specs,
        replace(
            test,
            name=BARE_TEST,
            environment={
                **test.environment,
                "LEASE_MODE": "none",
                "POWERTOOLS_SERVICE_NAME": BARE_TEST,
            },
        ),
        replace(
            harness,
            name=BARE_HARNESS,
            environment={
                **harness.environment,
                "TEST_FUNCTION": BARE_TEST,
                "POWERTOOLS_SERVICE_NAME": BARE_HARNESS,
            },
        ),
    ]


def burst(
    stack: LocalStack,
    options: DemoOptions,
    console: Console,
    timeline: ConnectionTimeline,
    *,
    leased: bool,
) -> RunReport:
    """The harness's burst, through the test function with connlease or without."""
    assert stack.lambdas is not None
    harness, test = (HARNESS, TEST) if leased else (BARE_HARNESS, BARE_TEST)
    name = WITH if leased else WITHOUT
    console.print(
        f"[bold]{name}[/]: {options.iterations} invocations at concurrency {options.concurrency}"
    )
    event = {
        "iterations": options.iterations,
        "operation": "load",
        "concurrency": options.concurrency,
        "query_time_s": options.query_time_s,
        "invocation": "sync",
    }
    client = stack.lambda_client()
    result: dict[str, Any] = {}

    def invoke() -> None:
        answer = client.invoke(FunctionName=harness, Payload=json.dumps(event))["Payload"].read()
        result.update(json.loads(answer))

    began_ms = now_ms()
    # A daemon: stopped with Ctrl-C, the demo does not wait for the harness's answer.
    worker = threading.Thread(target=invoke, daemon=True)
    worker.start()
    follow_progress(stack, options, console, worker, test=test, description=name)
    worker.join()
    ended_ms = now_ms()
    if not result.get("ok"):
        raise RuntimeError(f"the harness failed: {result}")
    log_dir = stack.lambdas.log_dir
    settle(timeline)
    connections = [
        ((at_ms - began_ms) / 1000, connected - timeline.baseline)
        for at_ms, connected in list(timeline.samples)
        if at_ms >= began_ms - PRE_ROLL_MS
    ]
    quota_after = None
    if leased:
        store = DynamoDBLeaseStore(stack.dynamodb_client(), stack.tables.leases, SystemClock())
        quota_after = store.status(options.quota_database)
    refused = emf_points(log_dir, options.quota_database, since_ms=began_ms).get(
        "NoConnectionsLeftError", {}
    )
    return RunReport(
        name=name,
        leased=leased,
        invocations=result["invocations"],
        outcomes=result["outcomes"],
        db_errors=result["db_errors"],
        lease_wait_ms=result["lease_wait_ms"],
        peak_connections=max(
            (held for at_s, held in connections if 0 <= at_s <= (ended_ms - began_ms) / 1000),
            default=0,
        ),
        connections=connections,
        calls=calls_in_log(log_dir / f"{test}.log", since_ms=began_ms),
        refused_per_second={second: sum(values) for second, values in refused.items()},
        seconds=(ended_ms - began_ms) / 1000,
        quota_after=quota_after,
    )


# The chart draws each run's connections from this long before its burst, and after it
# until they are back to what was open before (at most SETTLE_S: warm leases keep theirs).
PRE_ROLL_MS = 250
SETTLE_S = 3.0


def settle(timeline: ConnectionTimeline) -> None:
    """Wait until the connections a burst opened are closed, as MySQL counts them (the
    last answer comes before the server has reaped the last connection)."""
    deadline = time.monotonic() + SETTLE_S
    time.sleep(PRE_ROLL_MS / 1000)
    while time.monotonic() < deadline and timeline.samples[-1][1] > timeline.baseline:
        time.sleep(0.05)


def now_ms() -> int:
    return int(time.time() * 1000)


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
    stack: LocalStack,
    options: DemoOptions,
    console: Console,
    worker: threading.Thread,
    *,
    test: str = TEST,
    description: str = "invocations",
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
        task = progress.add_task(description, total=options.iterations)
        while worker.is_alive():
            done = sum(1 for line in lambdas.log_lines(test) if line.startswith("REPORT"))
            progress.update(task, completed=done)
            worker.join(timeout=0.25)
        progress.update(task, completed=options.iterations)


# Powertools' log timestamp: "2026-11-27 10:00:00,123+0000".
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f%z"


def calls_in_log(log: Path, since_ms: int) -> list[Call]:
    """Each invocation's "workload done" line in the test function's log, from `since_ms`."""
    calls = []
    for line in log.read_text().splitlines() if log.exists() else []:
        if '"workload done"' not in line:
            continue
        document = json.loads(line)
        ended_ms = datetime.strptime(document["timestamp"], LOG_TIME).timestamp() * 1000
        if ended_ms < since_ms:
            continue
        wait_ms = document.get("lease_wait_ms")
        code = document.get("db_error_code")
        calls.append(
            Call(
                ended_s=(ended_ms - since_ms) / 1000,
                duration_s=float(document.get("duration_ms", 0)) / 1000,
                outcome=str(document.get("outcome")),
                lease_wait_s=None if wait_ms is None else float(wait_ms) / 1000,
                db_error_code=None if code is None else int(code),
            )
        )
    return sorted(calls, key=lambda call: call.ended_s)


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
            if second < 0:
                continue
            for name in ("RemainingConnections", "NoConnectionsLeftError"):
                for value in document.get(name, []):
                    points[name][second].append(value)
    return points


def draw_chart(report: DemoReport, path: Path) -> Path:
    """Both runs side by side, written to `path`."""
    chart_figure(report).savefig(path, dpi=100)
    return path


RUN_COLORS = {WITHOUT: "tab:orange", WITH: "tab:blue"}


def chart_figure(report: DemoReport) -> Figure:
    """A column per run: MySQL connections against max_connections and the quota, errors
    1040 per second, each invocation's lease wait; rows share their scale."""
    # A bare Figure, not pyplot: no global figure to close, no backend to pick.
    from matplotlib.figure import Figure  # noqa: PLC0415 - heavy, and only the demo draws

    options = report.options
    runs = report.runs
    # Constrained layout reserves room for the title and the legend outside the axes.
    figure = Figure(figsize=(max(10, 6 * len(runs) + 1), 8), layout="constrained")
    # One time scale for both runs: the one without connlease is short, most of it refused.
    grid = figure.subplots(3, len(runs), sharex=True, sharey="row", squeeze=False)
    top = max(report.room, options.quota, *(run.peak_connections for run in runs)) + 2
    for column, run in enumerate(runs):
        connections, errors, waits = grid[:, column]
        draw_connections(connections, run, report)
        connections.set_ylim(bottom=-0.5, top=top)
        draw_errors(errors, run)
        draw_waits(waits, run)
        waits.set_xlabel("seconds since the burst began")
        failed = run.too_many_connections
        connections.set_title(
            f"{run.name}: {failed} of {run.invocations} failed with error 1040,"
            f"\npeak {run.peak_connections} MySQL connections",
            fontsize="medium",
        )
    most_errors = max(max(run.errors_per_second().values(), default=0) for run in runs)
    grid[1, 0].set_ylim(bottom=0, top=max(1, most_errors) * 1.1)
    grid[0, 0].set_ylabel("MySQL connections")
    grid[1, 0].set_ylabel("errors 1040 per second")
    grid[2, 0].set_ylabel("lease wait (s)")
    # One legend below the axes (inside them it hid the lines), each label once.
    handles, labels = [], []
    for axes in grid.flat:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="outside lower center", ncols=2)
    title = (
        f"connlease demo: {options.iterations} invocations at concurrency "
        f"{options.concurrency}, quota {options.quota}, mode {options.mode}, "
        f"max_connections {report.max_connections}"
    )
    if options.lease_hold_ms:
        title += (
            f"\nwarm leases held {options.lease_hold_ms} ms, lease TTL {lease_ttl_ms(options)} ms"
        )
    figure.suptitle(title)
    return figure


def draw_connections(axes: Axes, run: RunReport, report: DemoReport) -> None:
    seconds = [at_s for at_s, _ in run.connections] or [0.0]
    held = [count for _, count in run.connections] or [0]
    axes.step(
        seconds,
        held,
        where="post",
        color=RUN_COLORS[run.name],
        label=f"MySQL connections {run.name} (Threads_connected "
        f"less the {report.baseline_connections} open before)",
    )
    axes.axhline(
        report.room,
        color="tab:red",
        linestyle="--",
        label=f"max_connections {report.max_connections}, "
        f"less the {report.baseline_connections} open before",
    )
    axes.axhline(
        report.options.quota,
        color="tab:gray",
        linestyle=":",
        label=f"quota ({report.options.quota})",
    )


def draw_errors(axes: Axes, run: RunReport) -> None:
    per_second = run.errors_per_second()
    if not per_second:
        axes.text(
            0.5,
            0.5,
            "no error 1040",
            transform=axes.transAxes,
            ha="center",
            va="center",
            color="tab:gray",
        )
        return
    seconds = sorted(per_second)
    axes.bar(
        seconds,
        [per_second[second] for second in seconds],
        align="edge",
        width=0.9,
        color="tab:red",
        label="errors 1040 (Too many connections) per second",
    )


def draw_waits(axes: Axes, run: RunReport) -> None:
    if not run.leased:
        axes.text(
            0.5,
            0.5,
            "no leases: each invocation\nconnected straight away",
            transform=axes.transAxes,
            ha="center",
            va="center",
            color="tab:gray",
        )
        return
    for outcome, color, label in (
        ("succeeded", "tab:blue", "lease wait of an invocation that got its lease"),
        ("no_capacity", "tab:purple", "lease wait of one that got none (no capacity)"),
    ):
        picked = [
            (call.began_s, call.lease_wait_s)
            for call in run.calls
            if call.outcome == outcome and call.lease_wait_s is not None
        ]
        axes.scatter(
            [began_s for began_s, _ in picked],
            [wait_s for _, wait_s in picked],
            s=9,
            color=color,
            label=label,
        )


def quota_after(report: DemoReport) -> str:
    after = report.with_connlease.quota_after
    if after is None:
        return "-"
    said = f"{after.in_use} in use, {after.remaining} of {after.limit} free"
    if report.options.lease_hold_ms and after.in_use:
        # Frozen warm environments cannot give back: their leases end on their own.
        ends_s = max(lease.expires_at_ms for lease in after.leases) / 1000 - time.time()
        said += f" (kept by warm environments; the last ends in {max(0, ends_s):.0f} s)"
    return said


def results_table(report: DemoReport) -> Table:
    table = Table(title="connlease demo: the same burst without and with connlease")
    table.add_column("", style="bold")
    for run in report.runs:
        table.add_column(run.name)
    rows: list[tuple[str, list[str]]] = [
        ("invocations", [str(run.invocations) for run in report.runs]),
        ("succeeded", [str(run.outcomes.get("succeeded", 0)) for run in report.runs]),
        (
            "failed with error 1040 (too many connections)",
            [str(run.too_many_connections) for run in report.runs],
        ),
        ("other DB errors by code", [other_db_errors(run) for run in report.runs]),
        ("no capacity (the wait ran out)", [no_capacity(run) for run in report.runs]),
        ("other failures", [other_failures(run) for run in report.runs]),
        (
            f"peak MySQL connections (room {report.room}, quota {report.options.quota})",
            [str(run.peak_connections) for run in report.runs],
        ),
        ("lease wait p50 / p95 / p99", [waits(run) for run in report.runs]),
        ("refused acquires (NoConnectionsLeftError)", [refused(run) for run in report.runs]),
        ("burst took", [f"{run.seconds:.1f} s" for run in report.runs]),
    ]
    for name, values in rows:
        table.add_row(name, *values)
    return table


def other_db_errors(run: RunReport) -> str:
    others = {code: n for code, n in run.db_errors.items() if code != str(TOO_MANY_CONNECTIONS)}
    return ", ".join(f"{code}: {n}" for code, n in sorted(others.items())) or "none"


def no_capacity(run: RunReport) -> str:
    return str(run.outcomes.get("no_capacity", 0)) if run.leased else "-"


def other_failures(run: RunReport) -> str:
    return str(run.invocations - run.accounted - sum(run.db_errors.values()))


def waits(run: RunReport) -> str:
    if not run.leased:
        return "-"
    return " / ".join(_ms(run.lease_wait_ms.get(p)) for p in ("p50", "p95", "p99"))


def refused(run: RunReport) -> str:
    return f"{run.refused_acquires:,}" if run.leased else "-"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def explanations(report: DemoReport) -> list[str]:
    """One line per figure of the table: what it is, and why it came out so."""
    options = report.options
    quota = options.quota
    said = []
    bare = report.without_connlease
    if bare is not None:
        held = (
            f", {report.idle_connections} idle ones the demo holds because MariaDB will not "
            "lower max_connections under 10"
            if report.idle_connections
            else ""
        )
        said.append(
            f"max_connections {report.max_connections} for both runs (the server's "
            f"{report.max_connections_before} put back after) less the "
            f"{report.baseline_connections} connections open before the bursts (the demo's "
            f"poller, the one that set max_connections{held}, any other client's) leaves "
            f"them room for {report.room}: the quota of {quota} and {report.room - quota} more."
        )
    if bare is not None:
        extra = (
            " (Threads_connected goes past it: MariaDB lets an account with CONNECTION ADMIN,"
            " such as root, one connection more, and still counts one for a moment while it"
            " refuses or closes it)"
            if bare.peak_connections > report.room
            else ""
        )
        said.append(
            f"Without connlease {bare.too_many_connections} of {bare.invocations} invocations "
            f"failed with error 1040 (Too many connections): up to {options.concurrency} at "
            f"once connected straight away, where max_connections left room for "
            f"{report.room}{extra}; MySQL connections peaked at {bare.peak_connections}."
        )
    run = report.with_connlease
    said.append(
        f"With connlease {run.too_many_connections} of {run.invocations} failed with error "
        f"1040: MySQL connections peaked at {run.peak_connections}, the quota is {quota}; "
        f"{run.outcomes.get('no_capacity', 0)} got no lease before their wait ran out "
        "(no capacity: a clean refusal, not an error from MySQL)."
    )
    refusals = run.refused_acquires
    per_invocation = f"about {refusals / max(1, run.invocations):.0f} per invocation"
    if options.mode == "lambda":
        said.append(
            f"Refused acquires ({refusals:,}, the helper's NoConnectionsLeftError): each a try "
            f"that found all {quota} leases taken, answered at once, and tried again after a "
            f"backoff, {per_invocation}; a refused acquire is a retry, not a failed invocation."
        )
    else:
        said.append(
            f"Refused acquires ({refusals:,}, NoConnectionsLeftError): in direct mode only an "
            "acquire that gave up (its wait ran out: no capacity) counts, not the tries that "
            "found the quota full and were retried after a backoff."
        )
    p99 = run.lease_wait_ms.get("p99")
    hold_s = run.mean_hold_s()
    if p99 is not None and hold_s is not None:
        need_s = run.invocations * hold_s / quota
        said.append(
            f"Lease wait p99 {_ms(p99)}: {run.invocations} invocations shared {quota} leases, "
            f"each held about {hold_s:.2f} s, so the burst needed at least {need_s:.1f} s and "
            "the last waited for the earlier ones; retries are not a queue (a freed lease "
            f"goes to whoever asks next, a waiter sleeps up to {BACKOFF_CAP_S:g} s between "
            f"tries), so the unluckiest wait through much of the burst ({run.seconds:.1f} s)."
        )
    return said


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
    parser.add_argument(
        "--connlease-only",
        action="store_true",
        help="skip the run without connlease, and leave the server's max_connections as it "
        "is (for a server other clients use)",
    )
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir)
    args = parser.parse_args(argv)
    try:
        mysql_from_environment()
    except ValueError as error:  # a malformed DB_PORT
        parser.error(str(error))
    console = Console()
    # Stopped with SIGTERM, unwind as with Ctrl-C: max_connections is put back, the
    # functions' environments and a throwaway MariaDB are stopped.
    unwind_on_sigterm()
    try:
        with demo_mysql(lambda line: console.print(escape(line))) as mysql:
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
                without_connlease=not args.connlease_only,
            )
            report = run_demo(options, console)
    except MySqlUnusable as error:
        console.print(error.explain())
        return 2
    except KeyboardInterrupt:  # what the run changed and started is undone by now
        console.print("stopped: max_connections is put back, what the demo started is stopped")
        return 130
    except ThrowawayFailed as error:
        console.print(f"[red]The throwaway MariaDB would not start[/]: {escape(str(error))}")
        return 2
    console.print(results_table(report))
    for line in explanations(report):
        console.print(f"- {escape(line)}")
    console.print(f"quota after the run: {quota_after(report)}")
    console.print(f"chart: {report.chart}; took {report.seconds:.0f} s")
    if not argv and report.without_connlease is not None:  # the run README describes
        figures.record("demo", "make demo", headline(report))
        figures.fill_docs()
        shutil.copyfile(report.chart, figures.ROOT / "docs" / "demo-chart.png")  # its picture
    return 0


def headline(report: DemoReport) -> dict[str, str]:
    """The figures README quotes from the default run (local.figures puts them there)."""
    without, leased = report.without_connlease, report.with_connlease
    assert without is not None
    options = report.options
    return {
        "demo.invocations": str(options.iterations),
        "demo.concurrency": str(options.concurrency),
        "demo.quota": str(options.quota),
        "demo.failed_1040_without": str(without.too_many_connections),
        "demo.failed_1040_with": str(leased.too_many_connections),
        "demo.peak_with": str(leased.peak_connections),
        "demo.refused_acquires": f"{leased.refused_acquires:,}",
        "demo.wait_p99": _seconds_or_ms(leased.lease_wait_ms.get("p99")),
    }


def _seconds_or_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
