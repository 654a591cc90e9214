"""`connlease watch`: one quota live until Ctrl-C: its status table, and the last minute
(--history) of leases in use and acquires refused, a second a character.

What it costs: every refresh is one status read (a strongly consistent read of the quota's
item, and of each shard of a split quota: 1 RCU per 4 KB each) and, unless --no-metrics,
a ListMetrics and a GetMetricData of the refusals (CloudWatch bills GetMetricData per
metric read). The screen says how many items a refresh read; --interval sets the pace."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table as RichTable
from rich.text import Text

from cli.app import (
    BAD_USAGE,
    CliError,
    Where,
    acting,
    answering,
    app,
    out,
)
from cli.render import groups_table, span, status_table, when
from domain import ConnleaseError, QuotaStatus, StoreUnavailable
from domain.lease_store import LeaseStore
from domain.ports import Clock, Metric

SPARKS = "▁▂▃▄▅▆▇█"
MIN_INTERVAL_S = 0.5
DEFAULT_INTERVAL_S = 2.0
DEFAULT_HISTORY_S = 60
MIN_HISTORY_S, MAX_HISTORY_S = 10, 3600
# How late a second's refusals may reach CloudWatch (EMF is extracted from the logs): a
# refresh reads this much again, the window's older seconds stay as first read.
LATE_S = 120
# What a sparkline row leaves for its label and figures.
ROW_OVERHEAD = 44


class History:
    """One figure over the last `seconds` seconds, a value per second.

    A sample (`add`) stands for its second and, as a level such as leases in use stays
    until it changes, for the seconds after it up to `hold_s`: sampled every 2 s, the
    line has no holes, and a missed read shows as one. Counts read for a span of seconds
    (`cover`) are each second's own, a second the read did not name being a 0."""

    def __init__(self, seconds: int, hold_s: int = 1) -> None:
        self.seconds = seconds
        self.hold_s = max(1, hold_s)
        self._points: dict[int, float] = {}

    def add(self, at_s: float, value: float) -> None:
        """A sample taken at `at_s` (epoch seconds); the highest of a second is kept."""
        second = math.floor(at_s)
        self._points[second] = max(value, self._points.get(second, value))
        self._forget(second)

    def cover(self, start_s: int, end_s: int, counts: Mapping[int, float]) -> None:
        """Each second in [start_s, end_s): its count, or 0 where `counts` has none."""
        for second in range(start_s, end_s):
            self._points[second] = counts.get(second, 0.0)
        self._forget(end_s - 1)

    def series(self, now_s: int) -> list[float | None]:
        """The window's values, oldest first and ending at `now_s`; None: no sample."""
        first = now_s - self.seconds + 1
        held = [s for s in self._points if first - self.hold_s < s < first]
        last = max(held, default=None)
        values: list[float | None] = []
        for second in range(first, now_s + 1):
            if second in self._points:
                last = second
                values.append(self._points[second])
            elif last is not None and second - last < self.hold_s:
                values.append(self._points[last])
            else:
                values.append(None)
        return values

    def current(self, now_s: int) -> float | None:
        return self.series(now_s)[-1]

    def peak(self, now_s: int) -> float | None:
        return max((v for v in self.series(now_s) if v is not None), default=None)

    def total(self, now_s: int) -> float:
        return sum(v for v in self.series(now_s) if v is not None)

    def _forget(self, newest_s: int) -> None:
        oldest = newest_s - self.seconds - self.hold_s
        for second in [s for s in self._points if s < oldest]:
            del self._points[second]


def squeeze(values: Sequence[float | None], columns: int) -> list[float | None]:
    """At most `columns` values, each the highest of as many seconds as it must stand
    for; the newest stays at the right edge, so the oldest group may be short."""
    if columns <= 0:
        return []
    width = math.ceil(len(values) / columns)
    if width <= 1:
        return list(values)
    groups: list[float | None] = []
    for end in range(len(values), 0, -width):
        known = [v for v in values[max(0, end - width) : end] if v is not None]
        groups.append(max(known) if known else None)
    return groups[::-1]


def sparkline(values: Sequence[float | None], top: float) -> str:
    """A character a value: a blank where there is none, the lowest bar for 0 (or less),
    the highest for `top` (or more); anything above 0 stands above the lowest bar."""
    line = []
    for value in values:
        if value is None:
            line.append(" ")
        elif value <= 0 or top <= 0:
            line.append(SPARKS[0])
        else:
            level = math.ceil(value / top * (len(SPARKS) - 1))
            line.append(SPARKS[min(len(SPARKS) - 1, max(1, level))])
    return "".join(line)


def axis(seconds: int, width: int) -> str:
    """The time axis under a sparkline `width` characters wide spanning `seconds`."""
    left, right = f"-{span(seconds * 1000)}", "now"
    if width < len(left) + len(right) + 1:
        return right.rjust(width)
    return left + right.rjust(width - len(left))


def figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


class ItemsRead:
    """Counts the items a DynamoDB client reads: what a refresh costs."""

    def __init__(self, client: Any) -> None:
        self.items = 0
        client.meta.events.register("after-call.dynamodb.GetItem", self._got)
        client.meta.events.register("after-call.dynamodb.BatchGetItem", self._got)

    def _got(self, parsed: Mapping[str, Any], **_: Any) -> None:
        if "Item" in parsed:
            self.items += 1
        for found in parsed.get("Responses", {}).values():
            self.items += len(found)


@dataclass
class Screen:
    """What the watch shows, kept between refreshes."""

    database: str
    where: str
    interval_s: float
    in_use: History
    refused: History
    status: QuotaStatus
    metrics: bool = True
    refused_problem: str | None = None  # why refusals are not shown
    refused_stopped: bool = False  # a failure that will not pass: no more reads
    refused_read: bool = False  # the whole window read once: later reads take its end
    read_problem: str | None = None  # the last status read's failure
    items_per_read: int = 0
    read_ms: float = 0.0
    reads: int = 0
    updated_ms: int = 0
    started_ms: int = 0
    peak_in_use: int = 0

    def render(self, now_ms: int, width: int) -> RenderableType:
        now_s = now_ms // 1000
        head = Text.assemble(
            ("connlease watch ", "bold"),
            (self.database, "bold cyan"),
            f"  {self.where}  every {self.interval_s:g} s, Ctrl-C stops",
        )
        parts: list[RenderableType] = [head, status_table([self.status], now_ms)]
        groups = groups_table(self.status)
        if groups is not None:
            parts.append(groups)
        parts.append(self._history(now_s, width))
        if self.read_problem:
            parts.append(Text(f"last read failed: {self.read_problem}", style="red"))
        items = f"{self.items_per_read} item{'s' if self.items_per_read != 1 else ''}"
        cost = f"reads: {items} per refresh (consistent)"
        if self.metrics and not self.refused_stopped:
            cost += " + CloudWatch ListMetrics, GetMetricData"
        parts.append(
            Text(f"{cost}; {self.read_ms:.0f} ms at {when(self.updated_ms)} UTC", style="dim")
        )
        return Group(*parts)

    def _history(self, now_s: int, width: int) -> RichTable:
        columns = max(10, min(self.in_use.seconds, width - ROW_OVERHEAD))
        grid = RichTable.grid(padding=(0, 2))
        grid.add_column(no_wrap=True)
        grid.add_column()
        grid.add_column()
        limit = self.status.limit
        used = squeeze(self.in_use.series(now_s), columns)
        current = self.in_use.current(now_s)
        grid.add_row(
            "in use",
            Text(sparkline(used, limit), style="green", no_wrap=True),
            f"{figure(current)} now, peak {figure(self.in_use.peak(now_s))} of {limit}",
        )
        grid.add_row("", Text(axis(self.in_use.seconds, len(used)), style="dim"), "")
        if not self.metrics:
            grid.add_row("refused/s", "not read (--no-metrics)", "")
        elif self.refused_problem is not None:
            again = "not read again" if self.refused_stopped else "trying again"
            grid.add_row("refused/s", f"not available ({self.refused_problem})", again)
        else:
            # No "now": CloudWatch has a second's refusals some time after it.
            refused = squeeze(self.refused.series(now_s), columns)
            peak = self.refused.peak(now_s) or 0
            grid.add_row(
                "refused/s",
                Text(sparkline(refused, peak), style="red", no_wrap=True),
                f"peak {figure(peak)}/s, {figure(self.refused.total(now_s))} in "
                f"{span(self.refused.seconds * 1000)}",
            )
            grid.add_row("", Text(axis(self.refused.seconds, len(refused)), style="dim"), "")
        return grid

    def summary(self, now_ms: int) -> str:
        said = (
            f"watched {self.database} for {span(now_ms - self.started_ms)}: {self.reads} "
            f"reads; in use {self.status.in_use} of {self.status.limit} at the end, "
            f"peak {self.peak_in_use}"
        )
        if self.metrics and not self.refused_stopped:
            refused = self.refused.total(now_ms // 1000)
            said += f"; {figure(refused)} refused in the last {span(self.refused.seconds * 1000)}"
        return said


@app.command()
@answering
@acting
def watch(
    database: Annotated[str, typer.Argument(help="The quota's database.")],
    interval: Annotated[
        float,
        typer.Option(
            help=f"Seconds between reads (at least {MIN_INTERVAL_S:g}): each is a status read."
        ),
    ] = DEFAULT_INTERVAL_S,
    history: Annotated[
        int, typer.Option(help="Seconds of history to show, a character a second.")
    ] = DEFAULT_HISTORY_S,
    metrics: Annotated[
        bool,
        typer.Option(help="Read the refusals per second from CloudWatch (NoConnectionsLeftError)."),
    ] = True,
    *,
    where: Where,
) -> None:
    """A live view of one quota until Ctrl-C: status, and leases in use and acquires
    refused a second at a time."""
    if not (math.isfinite(interval) and interval >= MIN_INTERVAL_S):
        raise CliError(
            f"--interval: must be at least {MIN_INTERVAL_S:g} seconds, got {interval:g}"
            " (each refresh is a read, and reads are billed)",
            BAD_USAGE,
        )
    if not MIN_HISTORY_S <= history <= MAX_HISTORY_S:
        raise CliError(
            f"--history: must be from {MIN_HISTORY_S} to {MAX_HISTORY_S} seconds, got {history}",
            BAD_USAGE,
        )
    console = where.console()
    counted = ItemsRead(console.dynamodb)  # what each refresh reads, and so costs
    store = console.store
    reader = console.metric_reader if metrics else None
    # The first read before the live view: an unknown database is one line and exit 1.
    started = time.monotonic()
    status = store.status(database)
    now_ms = console.clock.now_ms()
    screen = Screen(
        database=database,
        where=f"table {console.leases_table}"
        + (f" at {console.aws.endpoint_url}" if console.aws.endpoint_url else ""),
        interval_s=interval,
        in_use=History(history, hold_s=math.ceil(interval) + 1),
        refused=History(history),
        status=status,
        metrics=metrics,
        items_per_read=counted.items,
        read_ms=(time.monotonic() - started) * 1000,
        reads=1,
        updated_ms=now_ms,
        started_ms=now_ms,
        peak_in_use=status.in_use,
    )
    screen.in_use.add(now_ms / 1000, status.in_use)
    refresh_refused(screen, reader, now_ms)
    try:
        with Live(
            screen.render(now_ms, out.width), console=out, auto_refresh=False, transient=False
        ) as live:
            next_read = started + interval
            while True:
                time.sleep(max(0.0, next_read - time.monotonic()))
                next_read = max(next_read + interval, time.monotonic())
                refresh(screen, store, counted, console.clock)
                now_ms = console.clock.now_ms()
                refresh_refused(screen, reader, now_ms)
                live.update(screen.render(now_ms, out.width), refresh=True)
    except KeyboardInterrupt:
        pass
    out.print(screen.summary(console.clock.now_ms()), markup=False, highlight=False)


def refresh(screen: Screen, store: LeaseStore, counted: ItemsRead, clock: Clock) -> None:
    """One status read; a failed one is shown, and the watch goes on."""
    before, started = counted.items, time.monotonic()
    try:
        status = store.status(screen.database)
    except ConnleaseError as error:
        screen.read_problem = str(error)
        return
    screen.read_ms = (time.monotonic() - started) * 1000
    screen.items_per_read = counted.items - before
    screen.read_problem = None
    screen.status = status
    screen.reads += 1
    screen.updated_ms = clock.now_ms()
    screen.peak_in_use = max(screen.peak_in_use, status.in_use)
    screen.in_use.add(screen.updated_ms / 1000, status.in_use)


class PerSecond(Protocol):
    """A metric's sum per second (adapters.cloudwatch.MetricReader)."""

    def per_second(
        self, metric: Metric, database: str, start: datetime, end: datetime
    ) -> dict[int, float]: ...


def refresh_refused(screen: Screen, reader: PerSecond | None, now_ms: int) -> None:
    """The refusals per second: the whole window first, then its last LATE_S seconds, into
    which points CloudWatch gets late (EMF arrives seconds after it was logged) still
    fall. A failure that will not pass by itself (access denied) stops the reading;
    another is shown and retried."""
    if reader is None or screen.refused_stopped:
        return
    end_s = now_ms // 1000 + 1
    start_s = end_s - (
        min(LATE_S, screen.refused.seconds) if screen.refused_read else screen.refused.seconds
    )
    try:
        counts = reader.per_second(
            Metric.NO_CONNECTIONS_LEFT,
            screen.database,
            datetime.fromtimestamp(start_s, UTC),
            datetime.fromtimestamp(end_s, UTC),
        )
    except ConnleaseError as error:
        screen.refused_problem = str(error)
        screen.refused_stopped = isinstance(error, StoreUnavailable) and not error.retryable
        return
    screen.refused_problem = None
    screen.refused_read = True
    screen.refused.cover(start_s, end_s, counts)
