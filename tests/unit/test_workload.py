"""The test function's logic on the in-memory store, with a fake MySQL connector."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.memory import InMemoryLeaseStore
from adapters.mysql import DatabaseError
from domain import KeepWarm, Quota
from service.bootstrap import Workload, keep_warm
from service.client import ConnectionLeases
from service.harness import percentile, summarize
from service.settings import WorkloadSettings
from service.workload import pick_query_time_s, run
from tests.fakes import FakeClock, FakeContext

DB = "demo-mysql"


class FakeCursor:
    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def execute(self, sql: str) -> None:
        assert sql.startswith(("SELECT", "SET SESSION wait_timeout"))

    def close(self) -> None:
        pass

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [(1, "Ada"), (2, "Grace")]


class FakeConnection:
    closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor()

    def close(self) -> None:
        self.closed = True


def make(clock: FakeClock, connect: Any, **options: Any) -> tuple[Workload, InMemoryLeaseStore]:
    store = InMemoryLeaseStore(clock)
    store.set_quota(DB, Quota(limit=1, default_ttl_ms=30_000))
    settings = WorkloadSettings(quota_database=DB, **options)
    leases = ConnectionLeases(
        store, DB, clock=clock, rng=random.Random(2), keep_warm=keep_warm(settings)
    )
    return Workload(settings, leases, connect, random.Random(4)), store


def test_with_a_lease_hold_the_environments_runs_share_one_lease_and_connection() -> None:
    clock = FakeClock()
    opened: list[FakeConnection] = []

    def connect() -> FakeConnection:
        opened.append(FakeConnection())
        return opened[-1]

    app, store = make(clock, connect, lease_hold_ms=500)

    answers = [run({"query_time_s": 0}, FakeContext(clock), app) for _ in range(3)]

    assert [a["outcome"] for a in answers] == ["succeeded"] * 3
    assert len(opened) == 1
    assert store.requests["add"] == 1
    assert store.status(DB).in_use == 1  # kept for the environment's next invocation


def test_the_lease_hold_setting_turns_warm_leases_on_and_is_checked() -> None:
    assert keep_warm(WorkloadSettings(quota_database=DB)) is None
    warm = WorkloadSettings(quota_database=DB, lease_hold_ms=750, connection_idle_close_s=3)
    assert keep_warm(warm) == KeepWarm(hold_ms=750, idle_close_s=3)
    with pytest.raises(ValidationError, match="LEASE_HOLD_MS must be 0"):
        WorkloadSettings(quota_database=DB, lease_hold_ms=50)


def test_a_successful_run_reads_the_rows_and_gives_the_lease_back() -> None:
    clock = FakeClock()
    app, store = make(clock, FakeConnection)

    answer = run({"query_time_s": 0}, FakeContext(clock), app)

    assert answer["outcome"] == "succeeded"
    assert answer["rows"] == 2
    assert answer["lease_wait_ms"] == 0
    assert store.status(DB).in_use == 0


def test_no_lease_in_time_is_a_no_capacity_outcome() -> None:
    clock = FakeClock()
    app, store = make(clock, FakeConnection)
    store.acquire(DB, "someone/else", ttl_ms=60_000)

    answer = run({"wait_budget_ms": 2_000}, FakeContext(clock), app)

    assert answer["outcome"] == "no_capacity"
    assert answer["lease_wait_ms"] == 2_000
    assert store.status(DB).in_use == 1


def test_a_mysql_error_is_reported_with_its_code_and_the_lease_is_given_back() -> None:
    clock = FakeClock()

    def refuse() -> FakeConnection:
        raise DatabaseError(1040, "Too many connections")

    app, store = make(clock, refuse)

    answer = run({}, FakeContext(clock), app)

    assert (answer["outcome"], answer["db_error_code"]) == ("db_error", 1040)
    assert store.status(DB).in_use == 0


def test_a_malformed_event_is_answered_not_raised() -> None:
    clock = FakeClock()
    app, _ = make(clock, FakeConnection)

    assert run({"query_time_s": "slow"}, FakeContext(clock), app)["outcome"] == "invalid"


@pytest.mark.parametrize(
    ("asked", "low", "high"), [(0.25, 0.25, 0.25), ((1.0, 3.0), 1.0, 3.0), (None, 0.0, 0.0)]
)
def test_query_time_is_fixed_or_drawn_from_a_range(
    asked: float | tuple[float, float] | None, low: float, high: float
) -> None:
    app, _ = make(FakeClock(), FakeConnection)

    assert all(low <= pick_query_time_s(asked, app) <= high for _ in range(50))


def test_the_harness_summary_counts_outcomes_errors_and_wait_percentiles() -> None:
    results = [{"outcome": "succeeded", "lease_wait_ms": float(ms)} for ms in range(1, 101)]
    results += [{"outcome": "db_error", "db_error_code": 1040}, {"outcome": "no_capacity"}]

    summary = summarize(results)

    assert summary["invocations"] == 102
    assert summary["outcomes"] == {"succeeded": 100, "db_error": 1, "no_capacity": 1}
    assert summary["db_errors"] == {"1040": 1}
    assert summary["lease_wait_ms"] == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentile([], 50) is None
