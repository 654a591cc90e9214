"""Campaign 5 (bad input), short: a couple of hundred malformed helper events and client
calls on the embedded DynamoDB, and proof that its counting sees a leak when there is one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from domain import Quota
from local.demo_setup import mysql_from_environment
from local.dynamodb import EmbeddedDynamoDB
from reliability import bad_input
from reliability.bad_input import Handler
from reliability.common import Campaign, Lab, lab
from service.bootstrap import Helper

pytestmark = pytest.mark.integration

EXAMPLES = bad_input.SHORT["examples"]


@pytest.fixture(scope="module")
def reliability_lab(embedded_dynamodb: EmbeddedDynamoDB) -> Iterator[Lab]:
    with lab(mysql_from_environment(), dynamodb=embedded_dynamodb) as running:
        yield running


@pytest.fixture(scope="module")
def campaign(reliability_lab: Lab) -> Campaign:
    return bad_input.run(reliability_lab, **bad_input.SHORT)


def problems(campaign: Campaign) -> str:
    failed = [f"{figure.name} = {figure.value}" for figure in campaign.failed]
    shown = [f"{row['kind']}: {row['first problem']}" for row in campaign.table]
    return "\n".join(failed + [row for row in shown if not row.endswith(": ")])


def test_every_malformed_helper_event_is_refused_as_invalid_and_writes_nothing(
    campaign: Campaign,
) -> None:
    helper = [figure for figure in campaign.figures if figure.name.startswith("helper events")]

    assert campaign.figure("helper events: examples run").met
    assert int(campaign.figure("helper events: malformed").value) >= EXAMPLES // 2
    assert all(figure.met is not False for figure in helper), problems(campaign)


def test_every_target_is_met(campaign: Campaign) -> None:
    assert campaign.figure("client calls: examples run").met
    assert not campaign.failed, problems(campaign)


def leaky(handler: Handler, app: Helper) -> Handler:
    """The helper, but the first event that is not a JSON object writes a quota."""
    leaked = False

    def handle(event: Any, context: Any) -> Any:
        nonlocal leaked
        if not leaked and not isinstance(event, dict):
            app.store.set_quota("leaked-quota", Quota(limit=1, default_ttl_ms=1_000))
            leaked = True
        return handler(event, context)

    return handle


def crashing(handler: Handler, app: Helper) -> Handler:
    """The helper, but it raises on anything that is not a JSON object and answers 'ok'
    to every fifth event."""
    calls = 0

    def handle(event: Any, context: Any) -> Any:
        nonlocal calls
        calls += 1
        if not isinstance(event, dict):
            raise RuntimeError("not an object")
        if calls % 5 == 0:
            return {"ok": True}
        return handler(event, context)

    return handle


def test_a_handler_that_writes_is_caught(reliability_lab: Lab) -> None:
    campaign = bad_input.run(reliability_lab, examples=60, seed=1, client_calls=0, wrap=leaky)

    assert campaign.figure("helper events: write requests sent for malformed ones").value == 1
    assert campaign.figure("writes applied to the leases table").value == 1
    assert campaign.figure("items differing in the two tables, after vs before").value == 1
    assert campaign.figure("helper events: unhandled exceptions").met


def test_a_handler_that_raises_or_accepts_is_caught(reliability_lab: Lab) -> None:
    campaign = bad_input.run(reliability_lab, examples=60, seed=2, client_calls=0, wrap=crashing)

    assert campaign.figure("helper events: unhandled exceptions").met is False
    assert campaign.figure("helper events: malformed ones accepted").met is False
    assert campaign.figure("items differing in the two tables, after vs before").met
