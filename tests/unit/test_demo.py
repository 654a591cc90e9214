"""The demo's chart, measured in matplotlib's display coordinates rather than pixels, and
which message a failed MySQL probe earns."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import BboxBase

from adapters.mysql import DatabaseError, MySqlEndpoint
from local.demo import DemoOptions, chart_figure
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


def busy_points(quota: int) -> dict[str, dict[int, list[float]]]:
    """What emf_points returns for a load that filled the quota: the max remaining at
    the quota line, where a legend in the top right corner used to sit, and many refusals."""
    return {
        "RemainingConnections": {s: [0.0, float(quota)] for s in range(30)},
        "NoConnectionsLeftError": {s: [1.0] * (10 + s) for s in range(30)},
    }


def drawn(options: DemoOptions) -> Figure:
    figure = chart_figure(busy_points(options.quota), options)
    figure.draw_without_rendering()  # lays the figure out as savefig does
    return figure


def legends(figure: Figure) -> list[Legend]:
    found = list(figure.legends) + [
        legend for axes in figure.axes if (legend := axes.get_legend()) is not None
    ]
    assert found, "the chart has no legend"
    return found


def quota_line(figure: Figure) -> Line2D:
    (line,) = [
        line
        for axes in figure.axes
        for line in axes.get_lines()
        if str(line.get_label()).startswith("quota")
    ]
    return line


def suptitle(figure: Figure) -> Text:
    (title,) = [text for text in figure.texts if text.get_text() == figure.get_suptitle()]
    return title


def within(inner: BboxBase, outer: BboxBase) -> bool:
    return bool(
        outer.x0 <= inner.x0 <= inner.x1 <= outer.x1
        and outer.y0 <= inner.y0 <= inner.y1 <= outer.y1
    )


@pytest.mark.parametrize("options", [COLD, WARM], ids=["cold", "warm"])
def test_the_chart_title_lies_inside_the_figure_and_above_the_axes(options: DemoOptions) -> None:
    figure = drawn(options)

    title = suptitle(figure).get_window_extent()

    assert within(title, figure.bbox), f"the title {title} leaves the figure {figure.bbox}"
    assert not any(title.overlaps(axes.get_window_extent()) for axes in figure.axes)


@pytest.mark.parametrize("options", [COLD, WARM], ids=["cold", "warm"])
def test_no_legend_covers_the_quota_line_or_any_axes(options: DemoOptions) -> None:
    figure = drawn(options)
    line = quota_line(figure)
    # The dashed line's two ends, and the points between them, in display coordinates.
    (x0, y0), (x1, y1) = line.get_transform().transform(line.get_xydata())
    along = np.column_stack([np.linspace(x0, x1, 500), np.linspace(y0, y1, 500)])

    for legend in legends(figure):
        box = legend.get_window_extent()
        assert box.count_contains(along) == 0
        assert not any(box.overlaps(axes.get_window_extent()) for axes in figure.axes)
        assert within(box, figure.bbox), f"a legend {box} leaves the figure {figure.bbox}"


def test_the_quota_line_has_headroom_below_the_top_of_its_axes() -> None:
    figure = drawn(COLD)
    line = quota_line(figure)

    assert line.axes is not None
    assert line.axes.get_ylim()[1] > COLD.quota


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
