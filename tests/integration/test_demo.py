"""A small `make demo` end to end: MariaDB, embedded DynamoDB, local Lambda, all four
functions."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.mysql import TOO_MANY_CONNECTIONS
from domain import KeepWarm
from local.demo import (
    DemoOptions,
    lease_ttl_ms,
    main,
    quota_after,
    run_demo,
)
from local.demo_setup import mysql_from_environment

pytestmark = pytest.mark.integration


def burst_of_36(tmp_path: Path, **options: Any) -> DemoOptions:
    """36 invocations at concurrency 12 on a quota of 4, each holding its connection 50 ms:
    three callers for every lease (each environment is a process that imports the function
    cold, so a wider burst costs `make test` seconds and tests nothing more)."""
    return DemoOptions(
        iterations=36,
        concurrency=12,
        quota=4,
        query_time_s=0.05,
        output_dir=tmp_path,
        mysql=mysql_from_environment(),
        show_progress=False,
        **options,
    )


@pytest.mark.parametrize("mode", ["lambda", "direct"])
def test_a_burst_of_36_at_concurrency_12_stays_within_a_quota_of_4(
    tmp_path: Path, mode: str
) -> None:
    options = burst_of_36(tmp_path, mode=mode, quota_database=f"it-demo-{mode}")

    report = run_demo(options)

    assert str(TOO_MANY_CONNECTIONS) not in report.db_errors
    assert report.db_errors == {}
    assert 1 <= report.peak_connections <= 4
    assert report.accounted == report.invocations == 36
    assert report.outcomes.get("succeeded", 0) > 0
    assert (report.quota_after.in_use, report.quota_after.remaining) == (0, 4)
    assert report.chart.exists()
    assert report.chart.stat().st_size > 10_000


def test_with_warm_leases_the_burst_stays_within_the_quota_and_kept_leases_are_in_it(
    tmp_path: Path,
) -> None:
    options = burst_of_36(tmp_path, mode="direct", lease_hold_ms=300, quota_database="it-demo-warm")

    report = run_demo(options)

    assert report.db_errors == {}
    assert 1 <= report.peak_connections <= 4
    assert report.accounted == report.invocations == 36
    assert report.outcomes.get("succeeded", 0) > 0
    # Environments frozen after their last invocation keep their leases, but not for
    # longer than a hold, one invocation's TTL and the idle close.
    warm = KeepWarm(hold_ms=300)
    latest_end_ms = time.time() * 1000 + warm.ttl_ms(lease_ttl_ms(options))
    assert all(lease.expires_at_ms <= latest_end_ms for lease in report.quota_after.leases)
    if report.quota_after.in_use:
        assert "kept by warm environments" in quota_after(report)


def test_without_a_reachable_mysql_the_demo_says_how_to_point_it_at_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DB_PORT", "3999")

    code = main(["--output-dir", str(tmp_path)])

    out = capsys.readouterr().out
    assert code == 2
    assert "not reachable at root@127.0.0.1:3999/test" in out
    assert "DB_HOST" in out
    assert "Traceback" not in out


def test_with_a_database_that_does_not_exist_the_demo_says_so_and_how_to_create_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = f"no_such_db_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DB_NAME", missing)

    code = main(["--output-dir", str(tmp_path)])

    said = " ".join(capsys.readouterr().out.split())  # the console wraps its lines
    assert code == 2
    assert f"The database '{missing}' does not exist" in said
    assert f"CREATE DATABASE `{missing}`" in said
    assert "DB_NAME" in said
    assert "not reachable" not in said
    assert "Traceback" not in said


def test_with_a_wrong_password_the_demo_says_access_was_denied_not_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    endpoint = mysql_from_environment()
    monkeypatch.setenv("DB_PASSWORD", f"{endpoint.password}-wrong-{uuid.uuid4().hex[:6]}")

    code = main(["--output-dir", str(tmp_path)])

    said = " ".join(capsys.readouterr().out.split())
    assert code == 2
    assert f"denied access to user '{endpoint.user}'" in said
    assert "DB_USER and DB_PASSWORD" in said
    assert "not reachable" not in said
    assert "Traceback" not in said
