"""A small `make demo ARGS="--scenario hotspot"` end to end: MariaDB, embedded DynamoDB,
local Lambda; the API and the batch through the helper, without and with groups."""

from __future__ import annotations

from dataclasses import replace

import pytest

from local.demo_setup import mysql_from_environment
from local.hotspot import API_LOAD, BATCH_LOAD, HotspotOptions, HotspotReport, run_hotspot

pytestmark = pytest.mark.integration

# What a reserved lease may cost the API at most, whatever the shared run measured: a few
# helper invokes and DynamoDB requests queued behind the batch's on this machine.
SMALL_WAIT_MS = 500


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> HotspotReport:
    """Two runs of 4 s on a quota of 5: the API at 3 (2 reserved, borrowing past them), the
    batch at 8 with a cap of 2, one below the pool, so that the API's bursts find room."""
    options = HotspotOptions(
        seconds=4.0,
        quota=5,
        groups="api=2,batch=0:max=2",
        api=API_LOAD,
        batch=replace(BATCH_LOAD, concurrency=8, query_time_s=(0.3, 0.6)),
        helper_concurrency=4,
        output_dir=tmp_path_factory.mktemp("hotspot"),
        mysql=mysql_from_environment(),
        quota_database="it-hotspot",
        show_progress=False,
    )
    return run_hotspot(options)


def test_with_its_reservation_the_api_is_never_refused_and_its_median_wait_is_short(
    report: HotspotReport,
) -> None:
    """The median, not the p99: of some 20 invocations the p99 is the slowest one, a cold
    start or a stall of this busy machine (1,435 ms against 731 ms shared, once in CI's
    pre-check). The p99 side by side is `make bench`'s hotspot row, on the 4 ms store."""
    shared = report.shared.function(API_LOAD.name)
    reserved = report.reserved.function(API_LOAD.name)

    assert reserved.succeeded > 0
    assert reserved.refused == 0
    assert reserved.wait_p50_ms is not None
    assert shared.wait_p50_ms is not None
    assert reserved.wait_p50_ms <= max(shared.wait_p50_ms, SMALL_WAIT_MS)


def test_the_batch_never_holds_more_than_its_cap_and_no_run_more_than_the_quota(
    report: HotspotReport,
) -> None:
    cap = report.options.reservation(BATCH_LOAD.group)
    assert cap is not None
    assert cap.max is not None

    batch = report.reserved.function(BATCH_LOAD.name)

    assert batch.succeeded > 0
    assert batch.peak_held <= cap.max
    assert all(sample.held[BATCH_LOAD.name] <= cap.max for sample in report.reserved.samples)
    for run in report.runs:
        assert run.peak_total <= run.limit
        assert 0 < run.utilization <= 1


def test_every_invocation_is_accounted_for_and_the_quota_ends_empty(
    report: HotspotReport,
) -> None:
    for run in report.runs:
        for summary in run.functions:
            assert summary.failed == 0, (run.label, summary)
            assert summary.invocations == summary.succeeded + summary.refused
        assert run.missed_samples == 0
        assert len(run.samples) >= run.seconds / report.options.sample_interval_s / 2
    after = report.quota_after
    assert (after.in_use, after.limit) == (0, report.options.quota)
    assert report.chart.exists()
    assert report.chart.stat().st_size > 10_000
