"""Groups through the helper: a caller names its group, status shows each group's use,
and a bad or unknown group is an InvalidInput answer that changes nothing."""

from __future__ import annotations

import random
from typing import Any

import pytest

from adapters.memory import InMemoryLeaseStore
from domain import Metric, Quota
from domain.backoff import DecorrelatedJitter
from domain.groups import Reservation
from service.bootstrap import Helper
from service.helper import respond
from service.settings import HelperSettings
from tests.fakes import FakeClock, FakeContext, InMemoryIdempotencyStore, RecordingMetrics
from tests.stores import memory_store

DB = "orders-mysql"


@pytest.fixture
def store(clock: FakeClock) -> InMemoryLeaseStore:
    store = memory_store(clock)
    store.set_quota(
        DB,
        Quota(limit=4, default_ttl_ms=30_000),
        [Reservation("api", 1), Reservation("batch", 0, max=2)],
    )
    return store


@pytest.fixture
def app(clock: FakeClock, metrics: RecordingMetrics, store: InMemoryLeaseStore) -> Helper:
    return Helper(
        settings=HelperSettings(leases_table_name="leases", idempotency_table_name="idem"),
        store=store,
        clock=clock,
        metrics=metrics,
        backoff=DecorrelatedJitter(base_ms=10, cap_ms=100),
        rng=random.Random(1),
        idempotency_store=InMemoryIdempotencyStore(),
    )


def call(app: Helper, clock: FakeClock, **event: Any) -> dict[str, Any]:
    return respond(event, FakeContext(clock), app)


def test_a_groups_first_lease_is_its_reserved_one_and_status_says_so(
    app: Helper, clock: FakeClock, metrics: RecordingMetrics
) -> None:
    answer = call(app, clock, action="acquire", database=DB, holder="api/1", group="api")

    assert answer["outcome"] == "granted"
    assert (answer["lease"]["group"], answer["lease"]["borrowed"]) == ("api", False)
    status = call(app, clock, action="status", database=DB)
    api = next(group for group in status["groups"] if group["group"] == "api")
    assert (api["reserved"], api["reserved_in_use"], api["borrowed"]) == (1, 1, 0)
    assert (status["limit"], status["in_use"], status["pool_limit"]) == (4, 1, 3)
    assert metrics.by_group[Metric.REMAINING_RESERVED, DB, "api"] == [0]


def test_a_capped_group_is_refused_at_its_max_while_the_pool_has_room(
    app: Helper, clock: FakeClock, metrics: RecordingMetrics
) -> None:
    for n in range(2):
        granted = call(app, clock, action="acquire", database=DB, group="batch", holder=f"b/{n}")
        assert granted["lease"]["borrowed"] is True

    refused = call(app, clock, action="acquire", database=DB, group="batch")

    assert refused["outcome"] == "no_capacity"
    assert call(app, clock, action="acquire", database=DB)["outcome"] == "granted"  # the pool
    assert metrics.by_group[Metric.NO_CONNECTIONS_LEFT, DB, "batch"] == [1]
    assert metrics.by_group[Metric.LEASES_BORROWED, DB, "batch"] == [1, 1]


def test_a_borrowed_lease_with_a_ticket_is_released_and_frees_its_groups_cap(
    app: Helper, clock: FakeClock
) -> None:
    tokens = [
        call(app, clock, action="acquire", database=DB, group="batch")["token"] for _ in range(2)
    ]

    released = call(app, clock, action="release", database=DB, token=tokens[0])

    assert released["outcome"] == "released"
    again = call(app, clock, action="acquire", database=DB, group="batch")
    assert again["outcome"] == "granted"


def test_status_of_one_group_and_an_unknown_group(app: Helper, clock: FakeClock) -> None:
    call(app, clock, action="acquire", database=DB, group="api", holder="api/1")
    call(app, clock, action="acquire", database=DB, holder="other/1")

    mine = call(app, clock, action="status", database=DB, group="api")
    unknown = call(app, clock, action="status", database=DB, group="billing")

    assert [lease["holder"] for lease in mine["leases"]] == ["api/1"]
    assert [group["group"] for group in mine["groups"]] == ["api"]
    assert unknown["error"]["type"] == "InvalidInput"
    assert "api, batch" in unknown["error"]["message"]


@pytest.mark.parametrize("group", ["", "a" * 65, "api batch", 7, "api~r"])
def test_a_malformed_group_is_invalid_input_and_takes_nothing(
    app: Helper, clock: FakeClock, store: InMemoryLeaseStore, group: object
) -> None:
    answer = call(app, clock, action="acquire", database=DB, group=group)

    assert answer["error"]["type"] == "InvalidInput"
    assert store.status(DB).in_use == 0
