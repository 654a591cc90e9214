"""benchmarks/skew.py: the skew margin's safety table and what the margin costs, mostly on
clocks that move only when told to (one short run on the real clock, as the report's)."""

from __future__ import annotations

from adapters.clock import SystemClock
from benchmarks import skew
from domain import Granted, Lease
from domain.model import SKEW_MARGIN_MS
from tests.fakes import FakeClock


def test_without_a_margin_a_clock_two_seconds_ahead_takes_a_live_lease() -> None:
    # The bug the issue found: 1.5 s left, the reclaimer 2 s ahead, no margin.
    assert skew.early_reclaim(margin_ms=0, offset_ms=2_000, left_ms=1_500)


def test_with_the_margin_no_clock_up_to_the_margin_ahead_takes_a_live_lease() -> None:
    cells = skew.safety()
    within = [c for c in cells if c.margin_ms == SKEW_MARGIN_MS and c.offset_ms <= 2_000]
    assert within  # every offset up to +2000, at both times left
    assert not [c for c in within if c.taken]


def test_the_safety_table_reclaims_early_exactly_when_the_offset_passes_margin_and_time_left() -> (
    None
):
    for cell in skew.safety():
        assert cell.taken == (cell.offset_ms - cell.margin_ms >= cell.left_ms), cell


def test_a_crashed_lease_comes_back_about_the_margin_later() -> None:
    # The cost run's waiters one after another on a fake clock: no real time passes.
    rows = {
        margin: skew.reclaim_delays(margin, FakeClock(), cycles=3, threads=False)
        for margin in (0, SKEW_MARGIN_MS)
    }
    for margin, row in rows.items():
        assert len(row.delays_ms) == 3 * skew.COST_LIMIT
        assert row.gave_up == 0
        assert min(row.delays_ms) >= margin  # never before the margin has passed
    grown = rows[SKEW_MARGIN_MS].median_ms - rows[0].median_ms
    assert 1_500 <= grown <= 3_000


def test_a_reclaim_that_frees_several_slots_gives_the_others_to_later_grants() -> None:
    ttl = 300
    old, older = Lease("a", "", 1_000, 1), Lease("b", "", 900, 2)
    # Written in fence order, listed out of it: one reclaims both, a plain grant follows.
    plain = Granted(Lease("d", "", 1_100 + ttl, 4), 0)
    reclaimer = Granted(Lease("c", "", 1_050 + ttl, 3), 1, reclaimed=(old, older))
    assert skew.match_delays([plain, reclaimer], ttl) == [1_050 - 900, 1_100 - 1_000]


def test_the_section_names_the_margin_and_both_tables() -> None:
    run = skew.SkewRun(
        skew.safety(),
        [skew.reclaim_delays(m, FakeClock(), threads=False) for m in skew.COST_MARGINS_MS],
        cycles=1,
    )
    text = "\n".join(run.lines())
    assert text.startswith("## Skew: the reclaim margin")
    assert "| 0 ms | 1.5 s | held | held | held | held | **taken** | **taken** |" in text
    assert "| 2000 ms | 1.5 s | held | held | held | held | held | held |" in text
    assert "2 slots for G = 2000 ms" in text


def test_waiters_on_threads_and_the_real_clock_take_the_slots_after_the_margin() -> None:
    # The report's own mode, kept short: leases of 100 ms, a margin of 200 ms.
    row = skew.reclaim_delays(200, SystemClock(), threads=True, limit=2, ttl_ms=100)
    assert len(row.delays_ms) == 2
    assert row.gave_up == 0
    assert all(200 <= delay <= 1_000 for delay in row.delays_ms)
