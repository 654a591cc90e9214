"""The README's example function, run on the local stack as `make example` runs it: the
example can never rot, and a user's own function runs there the same way."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from local.demo_setup import mysql_from_environment
from local.run import RunOptions, main, run_function
from local.watch import ConnectionWatcher

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders"


def example(tmp_path: Path, **changes: Any) -> RunOptions:
    """What `make example` runs: six at once on a quota of two, each holding 200 ms."""
    options = RunOptions(
        handler="handler.handler",
        code_dir=EXAMPLE,
        event={"hold_s": 0.2},
        invocations=12,
        concurrency=6,
        quota=2,
        log_dir=tmp_path,
    )
    return replace(options, **changes)


@pytest.mark.parametrize("mode", ["lambda", "direct"])
def test_the_example_function_answers_every_call_within_its_quota(
    tmp_path: Path, mode: str
) -> None:
    watcher = ConnectionWatcher(mysql_from_environment())
    with watcher.watching():
        report = run_function(example(tmp_path, mode=mode))

    assert report.function_errors == []
    assert [answer["statusCode"] for answer in report.answers] == [200] * 12
    # Six at once on a quota of two: some waited for a lease, none connected past it.
    assert max(answer["lease_wait_ms"] for answer in report.answers) > 0
    assert watcher.peak_above_baseline <= 2
    assert report.quota_after.in_use == 0


def test_the_example_answers_a_malformed_event_with_a_400_and_takes_no_lease(
    tmp_path: Path,
) -> None:
    report = run_function(example(tmp_path, event={"hold_s": "long"}, invocations=2))

    assert {answer["statusCode"] for answer in report.answers} == {400}
    assert report.quota_after.in_use == 0


def test_a_function_that_fails_to_import_is_reported_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["missing.handler", "--code-dir", str(EXAMPLE), "-n", "1", "--log-dir", str(tmp_path)]
    )

    assert code == 1
    assert "No module named 'missing'" in capsys.readouterr().out
