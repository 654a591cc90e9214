"""The helper's handler logic on the in-memory store: no network, no AWS."""

from __future__ import annotations

import random
from typing import Any

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import DecorrelatedJitter, Metric, Quota, StoreUnavailable
from domain.ports import NewLease, Write
from service.bootstrap import Helper
from service.helper import respond
from service.settings import HelperSettings
from tests.fakes import FakeClock, FakeContext, InMemoryIdempotencyStore, RecordingMetrics

DB = "orders-mysql"


class Broken(InMemoryLeaseStore):
    def _read(self, database: str) -> Any:
        raise RuntimeError("secret internals: password=hunter2")


class Unreachable(InMemoryLeaseStore):
    """A store whose writes to take a lease fail as DynamoDB's do when throttled or denied."""

    def __init__(self, clock: FakeClock, failure: StoreUnavailable) -> None:
        super().__init__(clock)
        self.failure = failure

    def _add(self, database: str, lease: NewLease, now_ms: int) -> Write:
        raise self.failure


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


def make_app(
    clock: FakeClock, metrics: RecordingMetrics, store: InMemoryLeaseStore | None = None
) -> Helper:
    store = store or InMemoryLeaseStore(clock)
    store.set_quota(DB, Quota(limit=2, default_ttl_ms=30_000))
    return Helper(
        settings=HelperSettings(leases_table_name="leases", idempotency_table_name="idem"),
        store=store,
        clock=clock,
        metrics=metrics,
        backoff=DecorrelatedJitter(base_ms=10, cap_ms=100),
        rng=random.Random(1),
        idempotency_store=InMemoryIdempotencyStore(),
    )


@pytest.fixture
def app(clock: FakeClock, metrics: RecordingMetrics) -> Helper:
    return make_app(clock, metrics)


def call(app: Helper, clock: FakeClock, **event: Any) -> dict[str, Any]:
    return respond(event, FakeContext(clock), app)


def test_acquire_grants_a_lease_and_reports_what_is_left(app: Helper, clock: FakeClock) -> None:
    answer = call(app, clock, action="acquire", database=DB, holder="orders-fn/1", ttl_ms=5_000)

    assert answer["ok"] is True
    assert answer["outcome"] == "granted"
    assert answer["remaining"] == 1
    assert answer["lease"]["holder"] == "orders-fn/1"
    assert answer["lease"]["expires_at_ms"] == clock.now_ms() + 5_000
    assert "retry_after_ms" not in answer


def test_a_full_quota_answers_no_capacity_with_a_retry_hint(app: Helper, clock: FakeClock) -> None:
    call(app, clock, action="acquire", database=DB)
    call(app, clock, action="acquire", database=DB)

    answer = call(app, clock, action="acquire", database=DB)

    assert answer == {
        "ok": True,
        "action": "acquire",
        "outcome": "no_capacity",
        "database": DB,
        "remaining": 0,
        "reclaimed": [],
        "waited_ms": 0,
        "limit": 2,
        "in_use": 2,
        "retry_after_ms": 30_000,
    }


def test_acquire_with_wait_ms_waits_for_an_expiring_lease(app: Helper, clock: FakeClock) -> None:
    call(app, clock, action="acquire", database=DB, ttl_ms=1_000)
    call(app, clock, action="acquire", database=DB, ttl_ms=60_000)

    answer = call(app, clock, action="acquire", database=DB, wait_ms=5_000)

    assert answer["outcome"] == "granted"
    assert 1_000 <= answer["waited_ms"] <= 5_000
    assert len(answer["reclaimed"]) == 1


def test_acquire_never_waits_past_the_invocation_deadline(app: Helper, clock: FakeClock) -> None:
    call(app, clock, action="acquire", database=DB)
    call(app, clock, action="acquire", database=DB)
    context = FakeContext(clock, timeout_ms=3_000)

    answer = respond({"action": "acquire", "database": DB, "wait_ms": 60_000}, context, app)

    assert answer["outcome"] == "no_capacity"
    assert context.get_remaining_time_in_millis() >= app.settings.timeout_margin_ms


def test_a_release_sent_twice_gets_the_first_answer_and_frees_one_lease(
    app: Helper, clock: FakeClock
) -> None:
    first = call(app, clock, action="acquire", database=DB)["lease"]["id"]
    call(app, clock, action="acquire", database=DB)

    answers = [call(app, clock, action="release", database=DB, lease_id=first) for _ in range(2)]

    assert answers[0] == answers[1]
    assert answers[0]["outcome"] == "released"
    assert call(app, clock, action="status", database=DB)["in_use"] == 1


def test_a_retried_renewal_is_answered_once_and_the_next_renewal_extends_again(
    app: Helper, clock: FakeClock
) -> None:
    lease_id = call(app, clock, action="acquire", database=DB)["lease"]["id"]
    renew = {"action": "renew", "database": DB, "lease_id": lease_id, "ttl_ms": 10_000}

    first = call(app, clock, **renew, renewal=1)
    clock.advance(1_000)
    retried = call(app, clock, **renew, renewal=1)
    second = call(app, clock, **renew, renewal=2)

    assert retried == first
    assert second["lease"]["expires_at_ms"] == first["lease"]["expires_at_ms"] + 1_000


def test_renewing_a_released_lease_reports_it_lost(app: Helper, clock: FakeClock) -> None:
    lease_id = call(app, clock, action="acquire", database=DB)["lease"]["id"]
    call(app, clock, action="release", database=DB, lease_id=lease_id)

    answer = call(app, clock, action="renew", database=DB, lease_id=lease_id, renewal=1)

    assert (answer["outcome"], "lease" in answer) == ("lost", False)


def test_status_lists_leases(app: Helper, clock: FakeClock) -> None:
    call(app, clock, action="acquire", database=DB, holder="fn/a")

    answer = call(app, clock, action="status", database=DB)

    assert (answer["limit"], answer["in_use"], answer["remaining"]) == (2, 1, 1)
    assert [lease["holder"] for lease in answer["leases"]] == ["fn/a"]


def test_metrics_follow_each_outcome(
    app: Helper, clock: FakeClock, metrics: RecordingMetrics
) -> None:
    lease_id = call(app, clock, action="acquire", database=DB)["lease"]["id"]
    call(app, clock, action="acquire", database=DB)
    call(app, clock, action="acquire", database=DB)
    call(app, clock, action="release", database=DB, lease_id=lease_id)
    call(app, clock, action="release", database=DB, lease_id=lease_id)

    recorded = {metric: values for (metric, _), values in metrics.values.items()}
    assert recorded[Metric.REMAINING_CONNECTIONS] == [1, 0, 0]
    assert recorded[Metric.LEASES_ACQUIRED] == [1, 1]
    assert recorded[Metric.NO_CONNECTIONS_LEFT] == [1]
    assert recorded[Metric.LEASES_RELEASED] == [1]


def test_a_renewal_reports_what_is_left_as_the_remaining_connections_gauge(
    app: Helper, clock: FakeClock, metrics: RecordingMetrics
) -> None:
    kept = call(app, clock, action="acquire", database=DB)["lease"]["id"]
    other = call(app, clock, action="acquire", database=DB)["lease"]["id"]
    call(app, clock, action="release", database=DB, lease_id=other)
    before = list(metrics.values[Metric.REMAINING_CONNECTIONS, DB])

    answer = call(app, clock, action="renew", database=DB, lease_id=kept, renewal=1)

    assert (answer["outcome"], answer["remaining"]) == ("renewed", 1)
    assert before == [1, 0]
    assert metrics.values[Metric.REMAINING_CONNECTIONS, DB] == [*before, answer["remaining"]]


@pytest.mark.parametrize("retryable", [True, False])
@pytest.mark.parametrize("wait_ms", [0, 2_000])
def test_an_acquire_the_store_could_not_answer_is_a_store_error_not_a_full_quota(
    clock: FakeClock, metrics: RecordingMetrics, retryable: bool, wait_ms: int
) -> None:
    failure = StoreUnavailable("acquire", "ThrottlingException: slow down", retryable)
    app = make_app(clock, metrics, store=Unreachable(clock, failure))

    answer = call(app, clock, action="acquire", database=DB, wait_ms=wait_ms)

    assert answer == {
        "ok": False,
        "error": {
            "type": "StoreUnavailable",
            "message": "lease store unavailable during acquire: ThrottlingException: slow down",
            "details": [
                {"field": "operation", "message": "acquire"},
                {"field": "reason", "message": "ThrottlingException: slow down"},
                {"field": "retryable", "message": str(retryable).lower()},
            ],
        },
    }
    assert Metric.NO_CONNECTIONS_LEFT not in {metric for metric, _ in metrics.values}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"action": "acquire"}, "database"),
        ({"action": "evict", "database": DB}, "event"),
        ({"database": DB}, "event"),
        ({"action": "acquire", "database": "a b"}, "database"),
        ({"action": "release", "database": DB}, "lease_id"),
        ({"action": "renew", "database": DB, "lease_id": "abc"}, "renewal"),
        ({"action": "acquire", "database": DB, "ttl_ms": "soon"}, "ttl_ms"),
        ({"action": "acquire", "database": DB, "surprise": 1}, "surprise"),
    ],
)
def test_a_malformed_event_is_a_structured_error_naming_the_field(
    app: Helper, clock: FakeClock, event: dict[str, Any], field: str
) -> None:
    before = app.store.status(DB)

    answer = respond(event, FakeContext(clock), app)

    assert answer["ok"] is False
    assert answer["error"]["type"] == "InvalidInput"
    assert field in [detail["field"] for detail in answer["error"]["details"]]
    assert app.store.status(DB) == before


def test_an_unknown_database_is_a_structured_error(app: Helper, clock: FakeClock) -> None:
    answer = call(app, clock, action="acquire", database="ghost-db")

    assert answer["error"]["type"] == "UnknownDatabase"
    assert answer["error"]["details"] == [{"field": "database", "message": "ghost-db"}]


def test_an_unexpected_failure_answers_without_internals(
    clock: FakeClock, metrics: RecordingMetrics
) -> None:
    app = make_app(clock, metrics, store=Broken(clock))

    answer = call(app, clock, action="status", database=DB)

    assert answer["error"]["type"] == "InternalError"
    assert "hunter2" not in str(answer)
    assert FakeContext(clock).aws_request_id in answer["error"]["message"]
