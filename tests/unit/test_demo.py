"""The demo's chart, measured in matplotlib's display coordinates rather than pixels; what
it draws and the report says for each run; and which message a failed MySQL probe earns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import BboxBase

from adapters.mysql import DatabaseError, MySqlEndpoint
from local.demo import (
    WITH,
    WITHOUT,
    Call,
    DemoOptions,
    DemoReport,
    RunReport,
    chart_figure,
    explanations,
    results_table,
)
from local.demo_setup import (
    DatabaseMissing,
    MySqlAccessDenied,
    MySqlUnreachable,
    MySqlUnusable,
)

COLD = DemoOptions(iterations=200, concurrency=20, quota=5)
# Wider numbers than any run so far, with the warm leases' part of the title.
WARM = DemoOptions(
    iterations=100_000, concurrency=1_000, quota=500, mode="direct", lease_hold_ms=15_000
)
BASELINE = 3  # the poller, the connection that set max_connections, one idle


def busy_report(options: DemoOptions, *, without_connlease: bool = True) -> DemoReport:
    """What run_demo returns for a burst that filled what it could: without connlease at
    max_connections (one past it: root) with errors 1040 every second; with connlease at
    the quota, the line the legend used to hide, with lease waits up to 12 s and many
    refused acquires."""
    quota = options.quota
    room = quota + 1
    bare = RunReport(
        name=WITHOUT,
        leased=False,
        invocations=options.iterations,
        outcomes={"succeeded": 40, "db_error": options.iterations - 40},
        db_errors={"1040": options.iterations - 40},
        lease_wait_ms={"p50": None, "p95": None, "p99": None},
        peak_connections=room + 1,
        connections=[(tick / 10, room + 1) for tick in range(40)],
        calls=[
            Call(ended_s=tick / 40, duration_s=0.001, outcome="db_error", db_error_code=1040)
            for tick in range(options.iterations - 40)
        ],
        refused_per_second={},
        seconds=4.0,
    )
    leased = RunReport(
        name=WITH,
        leased=True,
        invocations=options.iterations,
        outcomes={"succeeded": options.iterations},
        db_errors={},
        lease_wait_ms={"p50": 300.0, "p95": 9_000.0, "p99": 12_000.0},
        peak_connections=quota,
        connections=[(tick / 10, quota) for tick in range(150)],
        calls=[
            Call(
                ended_s=1 + tick / 10,
                duration_s=0.3 + tick / 12,
                outcome="succeeded",
                lease_wait_s=tick / 12,
            )
            for tick in range(145)
        ],
        refused_per_second={second: 60.0 + second for second in range(15)},
        seconds=15.0,
    )
    return DemoReport(
        options=options,
        runs=(bare, leased) if without_connlease else (leased,),
        baseline_connections=BASELINE,
        max_connections=BASELINE + room,
        max_connections_before=151,
        idle_connections=1,
        chart=Path("demo-chart.png"),
        seconds=40.0,
    )


# Both runs at the default numbers, both at wide ones; the run with connlease alone.
LAYOUTS = [(COLD, True), (WARM, True), (WARM, False)]
LAYOUT_IDS = ["cold", "warm", "warm-connlease-only"]


def drawn(options: DemoOptions, **kinds: bool) -> Figure:
    figure = chart_figure(busy_report(options, **kinds))
    figure.draw_without_rendering()  # lays the figure out as savefig does
    return figure


def legends(figure: Figure) -> list[Legend]:
    found = list(figure.legends) + [
        legend for axes in figure.axes if (legend := axes.get_legend()) is not None
    ]
    assert found, "the chart has no legend"
    return found


def limit_lines(figure: Figure) -> list[Line2D]:
    """Each column's quota and max_connections lines."""
    lines = [
        line
        for axes in figure.axes
        for line in axes.get_lines()
        if str(line.get_label()).startswith(("quota", "max_connections"))
    ]
    assert lines, "the chart draws no quota or max_connections line"
    return lines


def suptitle(figure: Figure) -> Text:
    (title,) = [text for text in figure.texts if text.get_text() == figure.get_suptitle()]
    return title


def within(inner: BboxBase, outer: BboxBase) -> bool:
    return bool(
        outer.x0 <= inner.x0 <= inner.x1 <= outer.x1
        and outer.y0 <= inner.y0 <= inner.y1 <= outer.y1
    )


@pytest.mark.parametrize(("options", "without_connlease"), LAYOUTS, ids=LAYOUT_IDS)
def test_the_chart_title_lies_inside_the_figure_and_above_the_axes(
    options: DemoOptions, without_connlease: bool
) -> None:
    figure = drawn(options, without_connlease=without_connlease)

    title = suptitle(figure).get_window_extent()

    assert within(title, figure.bbox), f"the title {title} leaves the figure {figure.bbox}"
    assert not any(title.overlaps(axes.get_window_extent()) for axes in figure.axes)


@pytest.mark.parametrize(("options", "without_connlease"), LAYOUTS, ids=LAYOUT_IDS)
def test_no_legend_covers_a_limit_line_or_any_axes(
    options: DemoOptions, without_connlease: bool
) -> None:
    figure = drawn(options, without_connlease=without_connlease)

    for line in limit_lines(figure):
        # The dashed line's two ends, and the points between them, in display coordinates.
        (x0, y0), (x1, y1) = line.get_transform().transform(line.get_xydata())
        along = np.column_stack([np.linspace(x0, x1, 500), np.linspace(y0, y1, 500)])
        for legend in legends(figure):
            assert legend.get_window_extent().count_contains(along) == 0
    for legend in legends(figure):
        box = legend.get_window_extent()
        assert not any(box.overlaps(axes.get_window_extent()) for axes in figure.axes)
        assert within(box, figure.bbox), f"a legend {box} leaves the figure {figure.bbox}"


def test_the_limit_lines_and_the_peak_have_headroom_below_the_top_of_their_axes() -> None:
    report = busy_report(COLD)
    figure = drawn(COLD)

    for line in limit_lines(figure):
        assert line.axes is not None
        top = line.axes.get_ylim()[1]
        assert top > max(report.room, COLD.quota, *(run.peak_connections for run in report.runs))


def test_the_chart_has_a_column_for_each_run_with_its_connections_errors_and_waits() -> None:
    figure = drawn(COLD)

    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    labels = {label for axes in figure.axes for label in axes.get_legend_handles_labels()[1]}

    assert len(figure.axes) == 6  # three rows, two columns
    assert [title.split(":")[0] for title in titles] == [WITHOUT, WITH]
    assert "160 of 200 failed with error 1040" in titles[0]
    assert "0 of 200 failed with error 1040" in titles[1]
    assert {f"MySQL connections {WITHOUT}", f"MySQL connections {WITH}"} <= {
        label.split(" (")[0] for label in labels
    }
    assert any(label.startswith("errors 1040") for label in labels)
    assert any(label.startswith("lease wait") for label in labels)


def test_with_the_connlease_run_alone_the_chart_has_one_column() -> None:
    figure = drawn(COLD, without_connlease=False)

    assert [axes.get_title().split(":")[0] for axes in figure.axes if axes.get_title()] == [WITH]


def test_each_figure_of_the_report_is_explained_in_a_line() -> None:
    said = explanations(busy_report(COLD))

    assert len(said) == 5
    limit, bare, leased, refusals, waits = said
    assert "max_connections 9 for both runs (the server's 151 put back after)" in limit
    assert "room for 6: the quota of 5 and 1 more" in limit
    assert "Without connlease 160 of 200 invocations failed with error 1040" in bare
    assert "Threads_connected goes past it" in bare  # the peak, 7, is over the room
    assert "With connlease 0 of 200 failed with error 1040" in leased
    assert "Refused acquires (1,005" in refusals
    assert "a retry, not a failed invocation" in refusals
    assert "Lease wait p99 12.0 s: 200 invocations shared 5 leases" in waits
    assert "the last waited for the earlier ones" in waits


def test_in_direct_mode_refused_acquires_are_said_to_count_only_waits_that_ran_out() -> None:
    (refusals,) = [line for line in explanations(busy_report(WARM)) if "Refused" in line]

    assert "only an acquire that gave up" in refusals


def test_the_table_has_a_column_per_run() -> None:
    table = results_table(busy_report(COLD))

    assert [str(column.header) for column in table.columns] == ["", WITHOUT, WITH]


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (1049, DatabaseMissing),
        (1045, MySqlAccessDenied),
        (1044, MySqlAccessDenied),
        (1698, MySqlAccessDenied),
        (2003, MySqlUnreachable),
        (2013, MySqlUnreachable),
    ],
)
def test_a_failed_probe_is_told_apart_by_its_mysql_error_code_not_its_text(
    code: int, kind: type[MySqlUnusable]
) -> None:
    # The same text for every code: only the code may decide.
    error = MySqlUnusable.of(MySqlEndpoint(), DatabaseError(code, "Unknown database 'x'"))

    assert type(error) is kind
