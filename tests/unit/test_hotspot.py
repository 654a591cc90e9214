"""The hotspot scenario's summary maths (local/hotspot.py), its options, its chart, and the
benchmark's run on the in-memory store (benchmarks/hotspot.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import pytest
from rich.console import Console
from rich.table import Table

from benchmarks import hotspot as bench
from domain import InvalidInput, Lease, QuotaStatus
from local import demo
from local.hotspot import (
    API,
    BATCH,
    REFUSED,
    SUCCEEDED,
    FunctionLoad,
    FunctionSummary,
    HotspotOptions,
    HotspotReport,
    RunReport,
    Sample,
    chart_figure,
    held_by_function,
    hotspot_functions,
    peak,
    quota_table,
    results_table,
    span_steps,
    step_mean,
    utilization,
    waits_ms,
)
from local.stack import HELPER, SEEDER, Tables

# --- the maths ------------------------------------------------------------------------


def test_a_step_mean_weighs_each_value_by_how_long_it_held() -> None:
    # 0 until 1 s, then 2 until 3 s, then 4 to the end (5 s): (0*1 + 2*2 + 4*2) / 5.
    steps = [(1.0, 2.0), (3.0, 4.0)]

    assert step_mean(steps, 0.0, 5.0) == pytest.approx(12 / 5)


def test_a_step_mean_counts_only_the_window() -> None:
    steps = [(0.0, 10.0), (2.0, 1.0), (6.0, 10.0)]

    # Within [2, 6] only the 1 held; what came before and after is left out.
    assert step_mean(steps, 2.0, 6.0) == pytest.approx(1.0)
    # [1, 3]: 10 for a second, 1 for a second.
    assert step_mean(steps, 1.0, 3.0) == pytest.approx(5.5)


def test_a_step_mean_takes_its_steps_in_time_order_and_refuses_an_empty_window() -> None:
    assert step_mean([(3.0, 4.0), (1.0, 2.0)], 0.0, 5.0) == pytest.approx(12 / 5)
    assert step_mean([], 0.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="empty window"):
        step_mean([(0.0, 1.0)], 2.0, 2.0)


def test_spans_become_the_count_of_leases_held_over_time() -> None:
    spans = [(0.0, 2.0), (1.0, 3.0), (1.5, 2.5)]

    steps = span_steps(spans)

    assert steps == [(0.0, 1.0), (1.0, 2.0), (1.5, 3.0), (2.0, 2.0), (2.5, 1.0), (3.0, 0.0)]
    assert peak(steps) == 3
    # Lease-seconds: 2 + 2 + 1 = 5 over [0, 5].
    assert step_mean(steps, 0.0, 5.0) == pytest.approx(1.0)


def test_a_lease_handed_over_at_the_instant_another_ends_is_not_two_at_once() -> None:
    steps = span_steps([(0.0, 1.0), (1.0, 2.0)])

    assert peak(steps) == 1
    assert step_mean(steps, 0.0, 2.0) == pytest.approx(1.0)


def test_a_span_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before"):
        span_steps([(2.0, 1.0)])


def answers(*pairs: tuple[str, float | None]) -> list[dict[str, Any]]:
    return [
        {"outcome": outcome} | ({} if wait is None else {"lease_wait_ms": wait})
        for outcome, wait in pairs
    ]


def test_waits_count_refusals_too_and_skip_answers_without_one() -> None:
    got = answers((SUCCEEDED, 30), (REFUSED, 1_000), ("invoke_error", None), (SUCCEEDED, 5))

    assert waits_ms(got) == [5.0, 30.0, 1_000.0]


def test_a_function_summary_takes_nearest_rank_percentiles_and_counts_outcomes() -> None:
    # 100 waits of 1..100 ms, two of them refusals; and one invoke error without a wait.
    got = answers(*((SUCCEEDED, float(ms)) for ms in range(1, 99)))
    got += answers((REFUSED, 99.0), (REFUSED, 100.0), ("invoke_error", None))

    summary = FunctionSummary.of(API, got, [(0.0, 2.0), (5.0, 0.0)], seconds=10.0)

    assert (summary.invocations, summary.succeeded, summary.refused, summary.failed) == (
        101,
        98,
        2,
        1,
    )
    assert summary.wait_p50_ms == 50.0
    assert summary.wait_p95_ms == 95.0
    assert summary.wait_p99_ms == 99.0
    assert summary.mean_held == pytest.approx(1.0)  # 2 held for half the window
    assert summary.peak_held == 2
    assert summary.per_second == pytest.approx(9.8)


def test_a_function_that_got_no_answer_with_a_wait_has_no_percentiles() -> None:
    summary = FunctionSummary.of(BATCH, answers(("invoke_error", None)), [], seconds=1.0)

    assert (summary.wait_p50_ms, summary.wait_p95_ms, summary.wait_p99_ms) == (None, None, None)
    assert (summary.mean_held, summary.peak_held, summary.failed) == (0.0, 0, 1)


def summary(
    function: str, mean_held: float, *, p99: float = 0.0, peak_held: int = 0
) -> FunctionSummary:
    return FunctionSummary(
        function,
        invocations=10,
        succeeded=10,
        refused=0,
        wait_p50_ms=p99 / 2,
        wait_p95_ms=p99,
        wait_p99_ms=p99,
        mean_held=mean_held,
        peak_held=peak_held,
        seconds=1.0,
    )


def test_utilization_is_all_leases_held_on_average_over_the_limit() -> None:
    assert utilization([summary(API, 1.5), summary(BATCH, 6.0)], 10) == pytest.approx(0.75)


def test_leases_are_counted_by_the_function_their_holder_names_and_only_while_live() -> None:
    now_ms = 1_000_000
    leases = (
        Lease("a", f"{API}/1234abcd", now_ms + 5_000, group="api"),
        Lease("b", f"{BATCH}/5678abcd", now_ms + 5_000, tag=2, group="batch", borrowed=True),
        Lease("c", f"{BATCH}/9abcdef0", now_ms + 5_000),
        Lease("d", f"{BATCH}/expired0", now_ms - 1),
        Lease("e", "someone-else/00000000", now_ms + 5_000),
    )
    status = QuotaStatus("db", 10, 60_000, 4, 6, 1, leases)

    assert held_by_function(status, [API, BATCH], now_ms) == {API: 1, BATCH: 2}


# --- the options ----------------------------------------------------------------------


def test_the_default_groups_reserve_for_the_api_and_cap_the_batch_below_the_pool() -> None:
    options = HotspotOptions()
    api, batch = options.reservation("api"), options.reservation("batch")

    assert api is not None
    assert batch is not None
    assert batch.max is not None
    assert api.reserved > 0
    assert api.borrow
    pool = options.quota - api.reserved
    # The cap leaves the API's bursts beyond its reservation room in the pool.
    assert batch.max <= pool - (options.api.concurrency - api.reserved)


def test_groups_that_reserve_more_than_the_quota_are_refused() -> None:
    with pytest.raises(InvalidInput, match="above the quota's limit of 10"):
        HotspotOptions(groups="api=8,batch=3")


def test_the_two_functions_need_names_of_their_own() -> None:
    load = FunctionLoad(API, "batch", concurrency=4, query_time_s=1.0)
    with pytest.raises(InvalidInput, match="names of their own"):
        HotspotOptions(batch=load)


@pytest.mark.parametrize("mode", ["lambda", "direct"])
def test_the_api_and_the_batch_are_the_test_function_under_their_own_names_and_groups(
    mode: Literal["lambda", "direct"],
) -> None:
    options = HotspotOptions(mode=mode, helper_concurrency=5)

    specs = {spec.name: spec for spec in hotspot_functions("http://127.0.0.1:1", Tables(), options)}

    assert set(specs) == {API, BATCH, SEEDER} | ({HELPER} if mode == "lambda" else set())
    for load in options.loads:
        spec = specs[load.name]
        assert spec.handler == "service.workload.handler"
        assert spec.environment["CONNLEASE_GROUP"] == load.group
        assert spec.environment["LEASE_MODE"] == mode
        assert spec.environment["QUOTA_DATABASE"] == options.quota_database
        assert spec.concurrency == spec.provisioned == load.concurrency
    if mode == "lambda":
        assert specs[HELPER].concurrency == specs[HELPER].provisioned == 5


def test_an_invocation_event_carries_the_query_time_and_the_wait_budget_if_any() -> None:
    assert HotspotOptions().api.event() == {"query_time_s": 0.05, "wait_budget_ms": 1_000}
    assert HotspotOptions().batch.event() == {"query_time_s": (0.5, 1.0)}


def test_the_demo_hands_the_hotspot_scenario_its_own_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Refused by the hotspot's own checks before anything starts.
    with pytest.raises(SystemExit) as exited:
        demo.main(["--scenario", "hotspot", "--seconds", "2", "--groups", "api=11"])

    assert exited.value.code == 2
    assert "reservations sum to 11, above the quota's limit of 10" in capsys.readouterr().err


# --- the report -----------------------------------------------------------------------


def run_report(label: str, groups: str | None, api_p99: float, batch_held: float) -> RunReport:
    samples = tuple(
        Sample(at, {API: api, BATCH: batch})
        for at, api, batch in ((0.0, 0, 0), (0.5, 1, 7), (1.0, 3, 7), (2.0, 0, 0))
    )
    return RunReport(
        label=label,
        groups=groups,
        limit=10,
        seconds=2.0,
        functions=(
            summary(API, 1.0, p99=api_p99, peak_held=3),
            summary(BATCH, batch_held, p99=900, peak_held=7),
        ),
        samples=samples,
    )


def report(tmp_path: Path) -> HotspotReport:
    options = HotspotOptions(output_dir=tmp_path)
    return HotspotReport(
        options=options,
        shared=run_report("(a) shared", None, 1_000, 8.9),
        reserved=run_report("(b) groups", options.groups, 20, 6.0),
        quota_after=QuotaStatus("hotspot-mysql", 10, 60_000, 0, 10, 0, ()),
        chart=tmp_path / "hotspot.png",
        log_dir=tmp_path / "logs",
        seconds=30.0,
    )


def test_the_run_report_adds_up_the_functions_and_finds_the_peak_of_all_leases(
    tmp_path: Path,
) -> None:
    shared = report(tmp_path).shared

    assert shared.utilization == pytest.approx((1.0 + 8.9) / 10)
    assert shared.peak_total == 10


def test_the_chart_draws_both_runs_side_by_side_with_the_reservation_and_the_cap(
    tmp_path: Path,
) -> None:
    done = report(tmp_path)

    figure = chart_figure(done.shared, done.reserved, done.options)
    figure.draw_without_rendering()

    shared_axes, groups_axes = figure.axes
    assert "utilization 99%" in shared_axes.get_title()
    assert "api=2,batch=0:max=7" in groups_axes.get_title()
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == [
        f"api ({API})",
        f"batch ({BATCH})",
        "all leases",
        "quota (10)",
        "api's reservation",
        "batch's cap",
    ]
    assert not any(legend.get_window_extent().overlaps(a.get_window_extent()) for a in figure.axes)


def rendered(table: Table) -> list[str]:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().splitlines()


def test_the_tables_show_each_function_and_run_side_by_side(tmp_path: Path) -> None:
    done = report(tmp_path)

    lines = rendered(results_table(done))
    quota = rendered(quota_table(done))

    header = " ".join(lines[1:4])
    assert header.index("api") < header.index("batch")
    assert header.count("(a) shared") == header.count("(b) groups") == 2
    (p99,) = [line for line in lines if "lease wait p99" in line]
    assert [cell.strip() for cell in p99.split("│")[2:6]] == [
        "1000 ms",
        "20 ms",
        "900 ms",
        "900 ms",
    ]
    (used,) = [line for line in quota if "utilization" in line]
    assert "99% (9.9 / 10)" in used
    assert "70% (7.0 / 10)" in used


# --- the benchmark --------------------------------------------------------------------


def test_samples_from_spans_count_each_function_at_every_change() -> None:
    samples = bench.samples_of({API: [(0.0, 1.0)], BATCH: [(0.5, 2.0), (0.5, 1.5)]})

    assert [(s.at_s, dict(s.held)) for s in samples] == [
        (0.0, {API: 1, BATCH: 0}),
        (0.5, {API: 1, BATCH: 2}),
        (1.0, {API: 0, BATCH: 2}),
        (1.5, {API: 0, BATCH: 1}),
        (2.0, {API: 0, BATCH: 0}),
    ]


def test_on_the_in_memory_store_the_reserved_api_is_never_refused_and_the_batch_keeps_its_cap() -> (
    None
):
    # A second of each run, at the scenario's own figures, without store latency.
    shared = bench.run_once(None, 1.0, latency_s=0.0, seed=1)
    reserved = bench.run_once(bench.SCENARIO.groups, 1.0, latency_s=0.0, seed=1)
    cap = bench.SCENARIO.reservation("batch")

    assert cap is not None
    assert cap.max is not None
    api, batch = reserved.function(API), reserved.function(BATCH)
    assert api.succeeded > 0
    assert api.refused == 0
    assert batch.succeeded > 0
    assert batch.peak_held <= cap.max
    for run in (shared, reserved):
        assert run.peak_total <= run.limit
        assert 0 < run.utilization <= 1
    lines = bench.HotspotRun(shared, reserved).lines()
    assert lines[0] == "## Hotspot: a reservation and a cap (groups)"
    assert any(line.startswith("| api | (b) groups `api=2,batch=0:max=7` |") for line in lines)
