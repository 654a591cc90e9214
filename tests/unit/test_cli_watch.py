"""`connlease watch`'s own parts: the per-second history, the sparklines and what the
screen says when CloudWatch cannot be read; and its options' one-line errors."""

from __future__ import annotations

import io
import re
from datetime import datetime

import pytest
from rich.console import Console
from typer.testing import CliRunner

from adapters.memory import InMemoryLeaseStore
from cli.commands import app
from cli.watch import SPARKS, History, Screen, axis, refresh_refused, sparkline, squeeze
from domain import ConnleaseError, Quota, QuotaStatus, StoreUnavailable
from domain.groups import Reservation
from domain.ports import Metric
from tests.fakes import FakeClock

NOW_S = 1_800_000_000
NOWHERE = ["--table", "x", "--endpoint-url", "http://127.0.0.1:9"]  # never reached


def test_samples_within_one_second_count_once_at_their_highest() -> None:
    history = History(seconds=5)
    history.add(NOW_S + 0.1, 2)
    history.add(NOW_S + 0.6, 4)
    history.add(NOW_S + 0.9, 3)

    assert history.series(NOW_S) == [None, None, None, None, 4]
    assert history.current(NOW_S) == 4


def test_a_sample_holds_until_the_next_but_a_missed_read_shows_as_a_gap() -> None:
    # Read every 2 s: a sample stands for the 2 s after it, and a second longer for slack.
    history = History(seconds=10, hold_s=3)
    history.add(NOW_S - 9, 1)
    history.add(NOW_S - 7, 2)
    history.add(NOW_S, 5)  # the reads at -5 and -3 failed

    series = history.series(NOW_S)

    assert series == [1, 1, 2, 2, 2, None, None, None, None, 5]
    assert history.peak(NOW_S) == 5


def test_a_sample_older_than_the_window_still_holds_into_it() -> None:
    history = History(seconds=5, hold_s=3)
    history.add(NOW_S - 5, 2)  # one second before the window

    assert history.series(NOW_S) == [2, 2, None, None, None]


def test_counts_read_for_a_span_are_zero_where_the_read_named_no_second() -> None:
    history = History(seconds=5)
    history.cover(NOW_S - 4, NOW_S + 1, {NOW_S - 2: 3.0, NOW_S: 1.0})

    assert history.series(NOW_S) == [0, 0, 3, 0, 1]
    assert history.total(NOW_S) == 4
    assert history.peak(NOW_S) == 3


def test_a_later_read_corrects_seconds_that_arrived_late() -> None:
    history = History(seconds=3)
    history.cover(NOW_S - 2, NOW_S + 1, {})
    history.cover(NOW_S - 2, NOW_S + 1, {NOW_S - 1: 7.0})  # CloudWatch had it late

    assert history.series(NOW_S) == [0, 7, 0]


def test_history_forgets_what_left_the_window() -> None:
    history = History(seconds=3)
    history.add(NOW_S - 100, 9)
    history.add(NOW_S, 1)

    assert history.series(NOW_S) == [None, None, 1]
    assert history.peak(NOW_S) == 1


def test_sparkline_scales_to_the_top_and_keeps_gaps_blank() -> None:
    line = sparkline([0, None, 5, 10, 20, 0.1], top=10)

    assert line[0] == SPARKS[0]  # nothing is the lowest bar
    assert line[1] == " "  # no sample is no bar at all
    assert line[2] == SPARKS[4]  # half way up
    assert line[3] == line[4] == SPARKS[-1]  # the top, and above it
    assert line[5] == SPARKS[1]  # a little is more than nothing


def test_sparkline_of_nothing_but_zeros_is_flat() -> None:
    assert sparkline([0, 0, 0], top=0) == SPARKS[0] * 3


def test_squeeze_keeps_the_highest_of_each_group_and_now_at_the_right() -> None:
    values: list[float | None] = [1, 5, None, None, 2, 0, 3, 4]

    assert squeeze(values, 8) == values
    assert squeeze(values, 4) == [5, None, 2, 4]  # a gap stays a gap
    # Pairs from the right, [0, 3], [None, 2], [5, None]: the oldest second is alone.
    assert squeeze(values[:-1], 4) == [1, 5, 2, 3]


def test_axis_spans_the_sparkline_from_the_oldest_second_to_now() -> None:
    label = axis(60, 40)

    assert len(label) == 40
    assert label.startswith("-1m00s")
    assert label.endswith("now")


def screen(status: QuotaStatus | None = None, metrics: bool = True) -> Screen:
    return Screen(
        database="orders-mysql",
        where="table t",
        interval_s=2,
        in_use=History(60, hold_s=3),
        refused=History(60),
        status=status or QuotaStatus("orders-mysql", 5, 60_000, 2, 3, 0, ()),
        metrics=metrics,
    )


def shown(watch: Screen) -> str:
    terminal = Console(width=120, record=True, file=io.StringIO())
    terminal.print(watch.render(NOW_S * 1000, 120))
    return terminal.export_text()


class Reader:
    def __init__(self, answer: dict[int, float] | ConnleaseError) -> None:
        self.answer = answer
        self.calls = 0

    def per_second(
        self, metric: Metric, database: str, start: datetime, end: datetime
    ) -> dict[int, float]:
        self.calls += 1
        assert metric is Metric.NO_CONNECTIONS_LEFT
        assert database == "orders-mysql"
        assert int(end.timestamp()) - int(start.timestamp()) == 60
        if isinstance(self.answer, ConnleaseError):
            raise self.answer
        return self.answer


def test_refusals_read_from_cloudwatch_show_their_peak_and_total() -> None:
    watch = screen()
    watch.in_use.add(NOW_S, 2)

    refresh_refused(watch, Reader({NOW_S - 3: 4.0, NOW_S - 1: 2.0}), NOW_S * 1000)

    text = shown(watch)
    assert "in use" in text
    assert "2 now, peak 2 of 5" in text
    assert "peak 4/s, 6 in 1m00s" in text
    assert "-1m00s" in text


@pytest.mark.parametrize(
    ("failure", "then"),
    [
        (StoreUnavailable("read metrics", "Throttling: slow down", True), "trying again"),
        (StoreUnavailable("read metrics", "AccessDenied: no", False), "not read again"),
    ],
)
def test_when_cloudwatch_cannot_be_read_the_watch_says_so_and_goes_on(
    failure: StoreUnavailable, then: str
) -> None:
    watch = screen()
    reader = Reader(failure)

    refresh_refused(watch, reader, NOW_S * 1000)
    refresh_refused(watch, reader, NOW_S * 1000 + 2000)

    text = shown(watch)
    assert "refused/s  not available (lease store unavailable during read metrics:" in text
    assert then in text
    assert reader.calls == (2 if failure.retryable else 1)
    assert "in use" in text  # the rest of the screen is still there


def test_a_quota_with_groups_shows_each_group_under_its_status() -> None:
    store = InMemoryLeaseStore(FakeClock())
    store.set_quota(
        "orders-mysql", Quota(limit=5, default_ttl_ms=60_000), [Reservation("orders-api", 2)]
    )
    store.acquire("orders-mysql", holder="api/1", group="orders-api")

    text = shown(screen(status=store.status("orders-mysql")))

    assert "orders-mysql: groups" in text
    assert re.search(r"orders-api\s+│\s+2\s+│\s+1\s+│", text)  # reserved 2, 1 in use


def test_no_metrics_says_refusals_are_not_read() -> None:
    text = shown(screen(metrics=False))

    assert "refused/s  not read (--no-metrics)" in text
    assert "CloudWatch" not in text  # and costs nothing there


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--interval", "0.1"], "--interval: must be at least 0.5 seconds, got 0.1"),
        (["--interval", "nan"], "--interval: must be at least 0.5 seconds, got nan"),
        (["--history", "5"], "--history: must be from 10 to 3600 seconds, got 5"),
    ],
)
def test_a_bad_pace_is_one_line_and_exit_2_before_anything_is_read(
    option: list[str], said: str
) -> None:
    result = CliRunner().invoke(app, ["watch", "orders-mysql", *option, *NOWHERE])

    assert result.exit_code == 2
    assert result.stderr.startswith(f"connlease: error: {said}")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
