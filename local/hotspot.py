"""`make demo ARGS="--scenario hotspot"`: a latency-critical API and a hot batch on one
database (issue 15, "fair share between functions"; domain.groups), run twice in one go
on the local stack: (a) one shared pool, (b) with a reservation for the API and a cap for
the batch.

Both functions are the test function (service.workload) declared twice, as a stack would
declare two functions: each with its own name, `CONNLEASE_GROUP` and concurrency. The
API's invocations hold their connection briefly and wait at most a short budget for a
lease; the batch's hold it long, at a higher concurrency. For a fixed time per run each
worker invokes its function back to back through the local Lambda endpoint (leases
through the helper, or `--mode direct`), while a poller reads the quota's status every
250 ms and counts the live leases of each function (a lease's holder starts with its
function's name). Printed per function and run: invocations that succeeded, refusals
(NoCapacity), lease waits p50/p95/p99, leases held; per run, the quota's utilization
(mean leases held / limit); and a chart of the leases each function held over time, both
runs side by side (demo-output/hotspot.png).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TimeElapsedColumn
from rich.table import Table

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import MySqlEndpoint
from domain import ConnleaseError, InvalidInput, LeaseStore, QuotaStatus
from domain.groups import Groups, Reservation, check_group, parse_reservations
from domain.lease_store import CONFIG_CACHE_MS
from domain.model import check_database, check_limit
from local.cfn import ResponseCatcher, custom_resource_event
from local.demo_setup import MySqlUnusable, check_mysql, mysql_from_environment, parse_query_time
from local.lambda_endpoint import FunctionSpec
from local.stack import HELPER, SEEDER, TEST, LocalStack, Tables, workload_functions
from local.watch import Poller
from service.bootstrap import Harness
from service.harness import invoke_sync, percentile
from service.settings import HarnessSettings
from service.workload import QueryTime

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

API = "connlease-api"
BATCH = "connlease-batch"
SUCCEEDED = "succeeded"
REFUSED = "no_capacity"
SHARED = "(a) shared"
RESERVED = "(b) groups"


@dataclass(frozen=True)
class FunctionLoad:
    """One function of the scenario: the test function under its own name and group."""

    name: str
    group: str
    concurrency: int
    query_time_s: QueryTime
    wait_budget_ms: int | None = None  # None: until its invocation's deadline

    def __post_init__(self) -> None:
        check_group(self.group)
        if self.concurrency < 1:
            raise InvalidInput(f"{self.group}.concurrency", "must be at least 1")

    def event(self) -> dict[str, Any]:
        """What each of its invocations is sent (the test function's event)."""
        event: dict[str, Any] = {"query_time_s": self.query_time_s}
        if self.wait_budget_ms is not None:
            event["wait_budget_ms"] = self.wait_budget_ms
        return event

    def describe(self) -> str:
        query = self.query_time_s
        held = f"{query[0]:g}-{query[1]:g} s" if isinstance(query, tuple) else f"{query:g} s"
        budget = (
            "until its deadline" if self.wait_budget_ms is None else f"{self.wait_budget_ms} ms"
        )
        return f"concurrency {self.concurrency}, queries of {held}, wait budget {budget}"


API_LOAD = FunctionLoad(API, "api", concurrency=3, query_time_s=0.05, wait_budget_ms=1_000)
BATCH_LOAD = FunctionLoad(BATCH, "batch", concurrency=12, query_time_s=(0.5, 1.0))


@dataclass(frozen=True)
class HotspotOptions:
    seconds: float = 15.0  # each run's load
    quota: int = 10
    # Run (b)'s groups: the API's usual concurrency less one reserved, borrowing past it;
    # the batch capped one below the pool, so that the API's bursts always find a lease.
    groups: str = "api=2,batch=0:max=7"
    api: FunctionLoad = API_LOAD
    batch: FunctionLoad = BATCH_LOAD
    mode: Literal["lambda", "direct"] = "lambda"
    helper_concurrency: int = 8
    sample_interval_s: float = 0.25
    output_dir: Path = Path("demo-output")
    mysql: MySqlEndpoint = field(default_factory=MySqlEndpoint)
    quota_database: str = "hotspot-mysql"
    show_progress: bool = True

    def __post_init__(self) -> None:
        check_limit(self.quota)
        check_database(self.quota_database)
        if self.api.name == self.batch.name:
            raise InvalidInput("functions", "the API and the batch need names of their own")
        self.reservations()  # raises InvalidInput

    @property
    def loads(self) -> tuple[FunctionLoad, FunctionLoad]:
        return (self.api, self.batch)

    def reservations(self) -> tuple[Reservation, ...]:
        """Run (b)'s groups, checked against the quota as the seeder will check them."""
        reservations = parse_reservations(self.groups)
        Groups().replaced(reservations, self.quota)
        return reservations

    def reservation(self, group: str) -> Reservation | None:
        return next((r for r in self.reservations() if r.group == group), None)


# --- the summary maths ----------------------------------------------------------------

Step = tuple[float, float]  # (from this time, the value holds until the next step)
Span = tuple[float, float]  # (start, end)


def step_mean(steps: Sequence[Step], start: float, end: float) -> float:
    """The time-weighted mean over [start, end] of a step function: each value holds from
    its time until the next step's (the last until `end`), 0 before the first."""
    if end <= start:
        raise ValueError(f"an empty window: {start} to {end}")
    ordered = sorted(steps)
    area = 0.0
    for index, (at, value) in enumerate(ordered):
        until = ordered[index + 1][0] if index + 1 < len(ordered) else end
        area += value * max(0.0, min(until, end) - max(at, start))
    return area / (end - start)


def span_steps(spans: Iterable[Span]) -> list[Step]:
    """How many spans are open over time, as a step function (one step per start or end;
    a span that ends when another starts hands over without a step up)."""
    changes: dict[float, int] = {}
    for start, end in spans:
        if end < start:
            raise ValueError(f"a span that ends before it starts: {start} to {end}")
        changes[start] = changes.get(start, 0) + 1
        changes[end] = changes.get(end, 0) - 1
    steps, open_ = [], 0
    for at in sorted(changes):
        open_ += changes[at]
        steps.append((at, float(open_)))
    return steps


def peak(steps: Iterable[Step]) -> int:
    return int(max((value for _, value in steps), default=0))


def waits_ms(answers: Iterable[Mapping[str, Any]]) -> list[float]:
    """Every lease wait the answers report, ascending: granted and refused alike (a
    refusal's is its whole budget), as the harness counts them."""
    return sorted(float(a["lease_wait_ms"]) for a in answers if a.get("lease_wait_ms") is not None)


@dataclass(frozen=True)
class FunctionSummary:
    """One function's side of one run."""

    function: str
    invocations: int
    succeeded: int
    refused: int  # NoCapacity: no lease within its budget
    wait_p50_ms: float | None
    wait_p95_ms: float | None
    wait_p99_ms: float | None
    mean_held: float  # leases, time-weighted over the run's window
    peak_held: int
    seconds: float

    @property
    def failed(self) -> int:
        return self.invocations - self.succeeded - self.refused

    @property
    def per_second(self) -> float:
        return self.succeeded / self.seconds

    @classmethod
    def of(
        cls,
        function: str,
        answers: Sequence[Mapping[str, Any]],
        held: Sequence[Step],
        seconds: float,
    ) -> FunctionSummary:
        """From the function's answers and its leases held over time (seconds since the
        load began; the window is [0, seconds], what ran on after it is left out of the
        mean, not of the peak)."""
        waits = waits_ms(answers)
        outcomes = [str(answer.get("outcome")) for answer in answers]
        return cls(
            function=function,
            invocations=len(answers),
            succeeded=outcomes.count(SUCCEEDED),
            refused=outcomes.count(REFUSED),
            wait_p50_ms=percentile(waits, 50),
            wait_p95_ms=percentile(waits, 95),
            wait_p99_ms=percentile(waits, 99),
            mean_held=step_mean(held, 0.0, seconds),
            peak_held=peak(held),
            seconds=seconds,
        )


def utilization(summaries: Iterable[FunctionSummary], limit: int) -> float:
    """The quota's utilization: mean leases held, all functions together, over the limit."""
    return sum(summary.mean_held for summary in summaries) / limit


# --- watching the quota ---------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at_s: float  # since the load began
    held: Mapping[str, int]  # live leases by function


def held_by_function(status: QuotaStatus, functions: Iterable[str], now_ms: int) -> dict[str, int]:
    """Live leases by function: a lease's holder is `function/request-id` (client.holder_of),
    whatever share of the quota it is in."""
    held = dict.fromkeys(functions, 0)
    for lease in status.leases:
        function = lease.holder.partition("/")[0]
        if function in held and lease.is_live(now_ms):
            held[function] += 1
    return held


class LeaseSampler(Poller):
    """Reads the quota's status every `interval_s` and keeps each function's live leases."""

    def __init__(
        self,
        store: LeaseStore,
        database: str,
        functions: Sequence[str],
        began: float,
        interval_s: float = 0.25,
    ) -> None:
        super().__init__(interval_s, "lease-sampler")
        self._store, self._database, self._functions = store, database, functions
        self._began = began
        self.samples: list[Sample] = [Sample(0.0, dict.fromkeys(functions, 0))]
        self.failures = 0

    def sample(self) -> None:
        asked = time.monotonic()
        try:
            status = self._store.status(self._database)
        except ConnleaseError:
            self.failures += 1  # a gap in the series, not a failed run
            return
        # The status is of some instant during the read: its middle, near enough.
        at_s = (asked + time.monotonic()) / 2 - self._began
        held = held_by_function(status, self._functions, SystemClock().now_ms())
        self.samples.append(Sample(at_s, held))

    def stopped(self) -> None:
        self.sample()

    def steps(self, function: str) -> list[Step]:
        return [(sample.at_s, float(sample.held.get(function, 0))) for sample in self.samples]


# --- the runs -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunReport:
    label: str
    groups: str | None  # None: one shared pool
    limit: int
    seconds: float
    functions: tuple[FunctionSummary, ...]  # the API's, then the batch's
    samples: tuple[Sample, ...]
    missed_samples: int = 0

    @property
    def utilization(self) -> float:
        return utilization(self.functions, self.limit)

    def function(self, name: str) -> FunctionSummary:
        return next(summary for summary in self.functions if summary.function == name)

    @property
    def peak_total(self) -> int:
        return max((sum(sample.held.values()) for sample in self.samples), default=0)


@dataclass(frozen=True)
class HotspotReport:
    options: HotspotOptions
    shared: RunReport
    reserved: RunReport
    quota_after: QuotaStatus
    chart: Path
    log_dir: Path
    seconds: float

    @property
    def runs(self) -> tuple[RunReport, RunReport]:
        return (self.shared, self.reserved)


def hotspot_functions(url: str, tables: Tables, options: HotspotOptions) -> list[FunctionSpec]:
    """The helper (lambda mode), the test function twice (the API and the batch, each with
    its CONNLEASE_GROUP and concurrency) and the seeder, wired as `make demo` wires them."""
    specs = {
        spec.name: spec
        for spec in workload_functions(
            url,
            tables,
            mysql=options.mysql,
            quota_database=options.quota_database,
            concurrency=max(load.concurrency for load in options.loads),
            lease_mode=options.mode,
        )
    }
    test = specs[TEST]
    declared = []
    if options.mode == "lambda":
        declared.append(
            replace(
                specs[HELPER],
                concurrency=options.helper_concurrency,
                # Started with the endpoint: run (a) would otherwise pay their cold starts.
                provisioned=options.helper_concurrency,
            )
        )
    for load in options.loads:
        declared.append(
            replace(
                test,
                name=load.name,
                environment=dict(test.environment)
                | {"POWERTOOLS_SERVICE_NAME": load.name, "CONNLEASE_GROUP": load.group},
                concurrency=load.concurrency,
                provisioned=load.concurrency,
            )
        )
    declared.append(specs[SEEDER])
    return declared


def seed_quota(
    stack: LocalStack, options: HotspotOptions, groups: str, *, update: bool = False
) -> None:
    """Employees and the quota through the seeder custom resource; `groups` "" for none."""
    properties = {"Database": options.quota_database, "Limit": str(options.quota)}
    properties["Groups"] = groups
    client = stack.lambda_client()
    with ResponseCatcher() as catcher:
        if update:
            event = custom_resource_event(
                "Update",
                properties,
                catcher.url_for("seed"),
                physical_id=f"connlease-quota-{options.quota_database}",
            )
        else:
            event = custom_resource_event("Create", properties, catcher.url_for("seed"))
        client.invoke(FunctionName=SEEDER, Payload=json.dumps(event))
        (response,) = catcher.wait_for(1, timeout_s=60)
    if response.get("Status") != "SUCCESS":
        raise RuntimeError(f"seeding failed: {response.get('Reason')}")


def warm_up(stack: LocalStack, options: HotspotOptions) -> None:
    """An invocation per environment of each function, at once, before run (a): their
    first invocation's one-off work (the helper client, the first connect) is no part of
    either run."""
    client = stack.lambda_client()
    callers = [
        (Harness(HarnessSettings(test_function=load.name), client), load)
        for load in options.loads
        for _ in range(load.concurrency)
    ]
    payload = json.dumps({"query_time_s": 0}).encode()
    threads = [
        threading.Thread(target=invoke_sync, args=(harness, payload)) for harness, _ in callers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_load(
    stack: LocalStack,
    store: LeaseStore,
    options: HotspotOptions,
    *,
    label: str,
    groups: str | None,
    console: Console,
) -> RunReport:
    """Each function's workers invoke it back to back for `options.seconds`; invocations
    in flight then finish and count."""
    client = stack.lambda_client()
    answers: dict[str, list[dict[str, Any]]] = {load.name: [] for load in options.loads}
    lock = threading.Lock()
    began = time.monotonic()
    stop_at = began + options.seconds

    def worker(load: FunctionLoad) -> None:
        harness = Harness(HarnessSettings(test_function=load.name), client)
        payload = json.dumps(load.event()).encode()
        while time.monotonic() < stop_at:
            answer = invoke_sync(harness, payload)
            with lock:
                answers[load.name].append(answer)

    threads = [
        threading.Thread(target=worker, args=(load,), name=f"{load.group}-{i}", daemon=True)
        for load in options.loads
        for i in range(load.concurrency)
    ]
    sampler = LeaseSampler(
        store,
        options.quota_database,
        [load.name for load in options.loads],
        began,
        options.sample_interval_s,
    )
    with (
        sampler.watching(),
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not options.show_progress,
        ) as progress,
    ):
        task = progress.add_task(label, total=options.seconds)
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            with lock:
                done = ", ".join(
                    f"{load.group} {sum(a.get('outcome') == SUCCEEDED for a in answers[load.name])}"
                    for load in options.loads
                )
            progress.update(
                task,
                completed=min(options.seconds, time.monotonic() - began),
                description=f"{label}: {done} ok",
            )
            time.sleep(0.25)
    summaries = tuple(
        FunctionSummary.of(load.name, answers[load.name], sampler.steps(load.name), options.seconds)
        for load in options.loads
    )
    return RunReport(
        label=label,
        groups=groups,
        limit=options.quota,
        seconds=options.seconds,
        functions=summaries,
        samples=tuple(sampler.samples),
        missed_samples=sampler.failures,
    )


def run_hotspot(options: HotspotOptions, console: Console | None = None) -> HotspotReport:
    console = console or Console(quiet=True)
    started = time.monotonic()
    check_mysql(options.mysql)
    options.output_dir.mkdir(parents=True, exist_ok=True)
    log_dir = options.output_dir / f"hotspot-logs-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = uuid.uuid4().hex[:6]
    tables = Tables(f"hotspot-leases-{suffix}", f"hotspot-idem-{suffix}")
    with LocalStack(
        lambda url, tables: hotspot_functions(url, tables, options), tables=tables, log_dir=log_dir
    ) as stack:
        store = DynamoDBLeaseStore(stack.dynamodb_client(), tables.leases, SystemClock())
        console.print(
            f"[bold]seeding[/] Employees and a quota of {options.quota} without groups via the"
            " seeder; warming up"
        )
        seed_quota(stack, options, "")
        warm_up(stack, options)
        shared = run_load(stack, store, options, label=SHARED, groups=None, console=console)
        console.print(f"[bold]groups[/] {escape(options.groups)} via the seeder (an Update)")
        seed_quota(stack, options, options.groups, update=True)
        # Each store keeps a quota's groups it read for CONFIG_CACHE_MS: after that, every
        # acquire in run (b) goes by them.
        time.sleep(CONFIG_CACHE_MS / 1000 + 0.5)
        reserved = run_load(
            stack, store, options, label=RESERVED, groups=options.groups, console=console
        )
        quota_after = store.status(options.quota_database)
    chart = draw_chart(shared, reserved, options, options.output_dir / "hotspot.png")
    return HotspotReport(
        options=options,
        shared=shared,
        reserved=reserved,
        quota_after=quota_after,
        chart=chart,
        log_dir=log_dir,
        seconds=time.monotonic() - started,
    )


# --- the chart and the tables ---------------------------------------------------------


def draw_chart(shared: RunReport, reserved: RunReport, options: HotspotOptions, path: Path) -> Path:
    chart_figure(shared, reserved, options).savefig(path, dpi=100)
    return path


def chart_figure(shared: RunReport, reserved: RunReport, options: HotspotOptions) -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415 - heavy, and only the demo draws

    figure = Figure(figsize=(13, 5.5), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    for axes, run in ((left, shared), (right, reserved)):
        _draw_run(axes, run, options)
    left.set_ylabel("leases held")
    handles, labels = left.get_legend_handles_labels()
    more_handles, more_labels = right.get_legend_handles_labels()
    for handle, label in zip(more_handles, more_labels, strict=True):
        if label not in labels:
            handles.append(handle)
            labels.append(label)
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5))
    figure.suptitle(
        f"connlease hotspot: quota {options.quota}, {options.seconds:g} s per run, "
        f"mode {options.mode}\n"
        f"api: {options.api.describe()}; batch: {options.batch.describe()}"
    )
    return figure


COLORS = ("tab:green", "tab:orange")


def _draw_run(axes: Axes, run: RunReport, options: HotspotOptions) -> None:
    """Each function's leases as a line of its own (not stacked: a group's reservation and
    cap compare with its own line), over a light fill, and all leases as a thin line."""
    times = [sample.at_s for sample in run.samples]
    for load, color in zip(options.loads, COLORS, strict=True):
        held = [float(sample.held.get(load.name, 0)) for sample in run.samples]
        axes.fill_between(times, held, step="post", color=color, alpha=0.25, linewidth=0)
        axes.step(times, held, where="post", color=color, label=f"{load.group} ({load.name})")
    total = [float(sum(sample.held.values())) for sample in run.samples]
    axes.step(times, total, where="post", color="black", linewidth=0.8, label="all leases")
    axes.axhline(run.limit, color="tab:gray", linestyle="--", label=f"quota ({run.limit})")
    if run.groups is not None:
        reserved = options.reservation(options.api.group)
        capped = options.reservation(options.batch.group)
        if reserved is not None and reserved.reserved:
            axes.axhline(
                reserved.reserved,
                color=COLORS[0],
                linestyle=":",
                label=f"{options.api.group}'s reservation",
            )
        if capped is not None and capped.max is not None:
            axes.axhline(
                capped.max, color="tab:red", linestyle=":", label=f"{options.batch.group}'s cap"
            )
    axes.axvspan(run.seconds, max([run.seconds, *times]), color="tab:gray", alpha=0.12)
    axes.set_ylim(0, run.limit + 1.5)
    axes.set_xlabel("seconds since the load began (shaded: in-flight invocations finishing)")
    api = run.function(options.api.name)
    axes.set_title(
        f"{run.label}: {run.groups or f'one pool of {run.limit}'}\n"
        f"utilization {100 * run.utilization:.0f}%, {options.api.group} wait p99 "
        f"{_ms(api.wait_p99_ms)}, {options.api.group} refused {api.refused}",
        fontsize=10,
    )
    axes.grid(alpha=0.3)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def results_table(report: HotspotReport) -> Table:
    """Per function and run, side by side: a column for each."""
    table = Table(title="connlease hotspot: per function and run")
    table.add_column("")
    columns = [(load, run) for load in report.options.loads for run in report.runs]
    for load, run in columns:
        table.add_column(f"{load.group}\n{run.label}", justify="right")
    rows: list[tuple[str, Callable[[FunctionSummary], str]]] = [
        ("invocations ok (per s)", lambda s: f"{s.succeeded} ({s.per_second:.1f})"),
        ("refused (NoCapacity)", lambda s: str(s.refused)),
        ("other failures", lambda s: str(s.failed)),
        ("lease wait p50", lambda s: _ms(s.wait_p50_ms)),
        ("lease wait p95", lambda s: _ms(s.wait_p95_ms)),
        ("lease wait p99", lambda s: _ms(s.wait_p99_ms)),
        ("leases held mean / peak", lambda s: f"{s.mean_held:.1f} / {s.peak_held}"),
    ]
    for name, cell in rows:
        table.add_row(name, *(cell(run.function(load.name)) for load, run in columns))
    return table


def quota_table(report: HotspotReport) -> Table:
    table = Table(title="the quota")
    table.add_column("")
    for run in report.runs:
        table.add_column(run.label, justify="right")
    table.add_row("groups", *(run.groups or "none" for run in report.runs))
    table.add_row(
        "utilization (mean held / limit)",
        *(
            f"{100 * run.utilization:.0f}% "
            f"({sum(f.mean_held for f in run.functions):.1f} / {run.limit})"
            for run in report.runs
        ),
    )
    table.add_row("peak held", *(f"{run.peak_total} / {run.limit}" for run in report.runs))
    after = report.quota_after
    table.caption = (
        f"after: {after.in_use} in use, {after.remaining} of {after.limit} free; "
        f"chart {report.chart}; logs {report.log_dir}; took {report.seconds:.0f} s"
    )
    return table


# --- the command line -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    defaults = HotspotOptions()
    parser = argparse.ArgumentParser(
        prog='make demo ARGS="--scenario hotspot ..."',
        description="A latency-critical API and a hot batch function on one database, run "
        "as one shared pool, then with a reservation for the API and a cap for the batch.",
    )
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="each run's load")
    parser.add_argument("--quota", "-q", type=int, default=defaults.quota)
    parser.add_argument(
        "--groups",
        default=defaults.groups,
        help="run (b)'s groups, as the seeder's Groups property: group=reserved[:max=N]"
        "[:noborrow], comma-separated",
    )
    parser.add_argument("--api-concurrency", type=int, default=defaults.api.concurrency)
    parser.add_argument(
        "--api-query-time",
        type=parse_query_time,
        default=defaults.api.query_time_s,
        help="seconds each API invocation holds its connection: 0.05, or a range 0.02-0.1",
    )
    parser.add_argument(
        "--api-wait-budget-ms",
        type=int,
        default=defaults.api.wait_budget_ms,
        help="how long an API invocation waits for a lease before it gives up (NoCapacity)",
    )
    parser.add_argument("--batch-concurrency", type=int, default=defaults.batch.concurrency)
    parser.add_argument(
        "--batch-query-time",
        type=parse_query_time,
        default=defaults.batch.query_time_s,
        help="seconds each batch invocation holds its connection: 2, or a range 0.5-1",
    )
    parser.add_argument("--mode", choices=["lambda", "direct"], default=defaults.mode)
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir)
    args = parser.parse_args(argv)
    console = Console()
    try:
        options = HotspotOptions(
            seconds=args.seconds,
            quota=args.quota,
            groups=args.groups,
            api=replace(
                defaults.api,
                concurrency=args.api_concurrency,
                query_time_s=args.api_query_time,
                wait_budget_ms=args.api_wait_budget_ms,
            ),
            batch=replace(
                defaults.batch,
                concurrency=args.batch_concurrency,
                query_time_s=args.batch_query_time,
            ),
            mode=args.mode,
            output_dir=args.output_dir,
            mysql=mysql_from_environment(),
        )
    except (InvalidInput, ValueError) as error:
        parser.error(str(error))
    try:
        report = run_hotspot(options, console)
    except MySqlUnusable as error:
        console.print(error.explain())
        return 2
    console.print(results_table(report))
    console.print(quota_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
