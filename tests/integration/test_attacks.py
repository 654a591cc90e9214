"""The short version of the attack campaign (`make reliability` plays it in full): no
attack on a lease, a connection or a warm session succeeds, through the helper or direct,
with quotas in one item and split; MariaDB never counts the application user's
connections past the quota, and refuses those past it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.demo import mysql_from_environment
from local.dynamodb import EmbeddedDynamoDB
from reliability import attacks
from reliability.common import Lab, lab

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["one item", "split"])
def here(embedded_dynamodb: EmbeddedDynamoDB, request: pytest.FixtureRequest) -> Iterator[Lab]:
    split = request.param == "split"
    with lab(mysql_from_environment(), dynamodb=embedded_dynamodb, split=split) as attack_lab:
        yield attack_lab


def test_no_attack_succeeds_and_mariadb_refuses_connections_past_the_quota(here: Lab) -> None:
    campaign = attacks.run(here, attacks.SHORT)

    assert not campaign.failed, "\n".join(
        f"{figure.name}: {figure.value} (target {figure.target})" for figure in campaign.failed
    )
    attacked = [figure for figure in campaign.figures if "successes" in figure.name]
    # Every attack of the issue was played: the helper's four, skew, overrun, killed
    # runtimes, and each kind of session state on a warm connection.
    assert len(attacked) == 11 + len(attacks.SESSION_STATE)
    assert (
        campaign.figure("connections past MAX_USER_CONNECTIONS = 1 refused by MariaDB (1226)").value
        == 2
    )
