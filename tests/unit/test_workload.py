"""The test function's logic on the in-memory store, with a fake MySQL connector."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aws_lambda_powertools import Metrics
from pydantic import ValidationError

from adapters.memory import InMemoryLeaseStore
from adapters.mysql import DatabaseError
from adapters.secrets import SecretUnavailable
from domain import KeepWarm, Quota
from service.bootstrap import Workload, build_workload, keep_warm
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

    def reset_session(self) -> None:
        """The hook a warm connection of a driver other than pymysql is reset by."""

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


def without_leases(connect: Any) -> Workload:
    """The test function as LEASE_MODE none builds it: no lease client at all."""
    return Workload(
        WorkloadSettings(quota_database=DB, lease_mode="none"), None, connect, random.Random(4)
    )


def test_with_lease_mode_none_it_connects_straight_away_and_takes_no_lease() -> None:
    opened: list[FakeConnection] = []

    def connect() -> FakeConnection:
        opened.append(FakeConnection())
        return opened[-1]

    answer = run({"query_time_s": 0}, FakeContext(FakeClock()), without_leases(connect))

    assert (answer["outcome"], answer["rows"], answer["database"]) == ("succeeded", 2, DB)
    assert "lease_wait_ms" not in answer
    assert [connection.closed for connection in opened] == [True]


def test_with_lease_mode_none_too_many_connections_is_error_1040() -> None:
    def refuse() -> FakeConnection:
        raise DatabaseError(1040, "Too many connections")

    answer = run({}, FakeContext(FakeClock()), without_leases(refuse))

    assert (answer["outcome"], answer["db_error_code"]) == ("db_error", 1040)
    assert "lease_wait_ms" not in answer


def test_lease_mode_none_builds_no_lease_client() -> None:
    settings = WorkloadSettings(quota_database=DB, lease_mode="none")

    built = build_workload(settings, Metrics(namespace="connlease"))

    assert built.leases is None


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


# ------------------------------------------------------------------ bounded inputs


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The simulated query's sleeps, recorded instead of slept."""
    sleeps: list[float] = []
    monkeypatch.setattr("service.workload.time.sleep", sleeps.append)
    return sleeps


@pytest.mark.parametrize(
    "query_time_s",
    [
        -1,
        -0.001,
        float("nan"),
        float("inf"),
        901,
        10**400,
        "slow",
        "0.5",
        True,
        {"seconds": 1},
        [],
        [1],
        [1, 2, 3],
        [2, 1],
        [-1, 2],
        [0, float("nan")],
        [0, "2"],
    ],
    ids=lambda value: repr(value)[:24],
)
def test_a_bad_query_time_is_an_invalid_answer_naming_the_field_and_takes_no_lease(
    query_time_s: Any, slept: list[float]
) -> None:
    clock = FakeClock()
    app, store = make(clock, FakeConnection)

    answer = run({"query_time_s": query_time_s}, FakeContext(clock), app)

    assert answer["outcome"] == "invalid"
    assert answer["error"].startswith("query_time_s: must be seconds from 0 to 900")
    assert "\n" not in answer["error"]
    assert store.requests["add"] == 0
    assert slept == []


def test_a_json_event_with_nan_is_refused_too(slept: list[float]) -> None:
    clock = FakeClock()
    app, _ = make(clock, FakeConnection)

    answer = run('{"query_time_s": NaN}', FakeContext(clock), app)

    assert answer["outcome"] == "invalid"
    assert answer["error"].startswith("query_time_s: ")


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"wait_budget_ms": -5}, "wait_budget_ms: Input should be greater than or equal to 0"),
        ([1, 2], "Input should be a valid dictionary"),
    ],
)
def test_other_bad_events_are_answered_with_the_field_not_a_traceback(
    event: Any, error: str
) -> None:
    clock = FakeClock()
    app, _ = make(clock, FakeConnection)

    answer = run(event, FakeContext(clock), app)

    assert answer == {"outcome": "invalid", "error": answer["error"]}
    assert error in answer["error"]


def test_a_query_longer_than_the_invocation_has_left_is_refused(slept: list[float]) -> None:
    clock = FakeClock()
    app, store = make(clock, FakeConnection)  # safety margin 1 s
    context = FakeContext(clock, timeout_ms=5_000)

    too_long = run({"query_time_s": 4.5}, context, app)
    range_too_long = run({"query_time_s": [0, 4.5]}, context, app)
    fits = run({"query_time_s": [1, 3.9]}, context, app)

    assert too_long["outcome"] == range_too_long["outcome"] == "invalid"
    assert too_long["error"].startswith("query_time_s: 4.5 s is longer than this invocation")
    assert "(4.0 s:" in too_long["error"]
    assert fits["outcome"] == "succeeded"
    assert len(slept) == 1
    assert 1 <= slept[0] <= 3.9
    assert store.requests["add"] == 1


def test_a_query_longer_than_the_lease_is_refused(slept: list[float]) -> None:
    clock = FakeClock()
    app, _ = make(clock, FakeConnection, lease_ttl_ms=2_000)

    answer = run({"query_time_s": 2.5}, FakeContext(clock), app)

    assert answer["outcome"] == "invalid"
    assert "(2.0 s:" in answer["error"]
    assert run({"query_time_s": 2}, FakeContext(clock), app)["outcome"] == "succeeded"
    assert slept == [2.0]


def test_the_settings_query_time_is_cut_to_what_the_invocation_allows(
    slept: list[float],
) -> None:
    clock = FakeClock()
    app, _ = make(clock, FakeConnection, query_time_s=20)

    answer = run({}, FakeContext(clock, timeout_ms=5_000), app)

    assert answer["outcome"] == "succeeded"
    assert slept == [4.0]


def test_a_query_time_range_in_the_settings_must_run_upwards() -> None:
    with pytest.raises(ValidationError, match="QUERY_TIME_MAX_S must be at least QUERY_TIME_S"):
        WorkloadSettings(quota_database=DB, query_time_s=3, query_time_max_s=1)
    for bad in (-1, float("nan"), float("inf"), 901):
        with pytest.raises(ValidationError):
            WorkloadSettings(quota_database=DB, query_time_s=bad)


def test_an_unreadable_secret_is_its_own_outcome_and_gives_the_lease_back() -> None:
    clock = FakeClock()

    def unreadable() -> FakeConnection:
        raise SecretUnavailable("arn:aws:secretsmanager:x", "AccessDeniedException: no")

    app, store = make(clock, unreadable)

    answer = run({}, FakeContext(clock), app)

    assert answer["outcome"] == "secret_error"
    assert "AccessDeniedException" in answer["error"]
    assert store.status(DB).in_use == 0
