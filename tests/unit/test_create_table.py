"""Tables are usable when the project's create_table returns: DynamoDB keeps a new table
CREATING for a while and refuses reads and writes to it until it is ACTIVE."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.stub import Stubber

from adapters.dynamodb import create_table
from local.dynamodb import create_idempotency_table


@pytest.fixture
def client() -> Any:
    session = botocore.session.get_session()
    return session.create_client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # a stub: nothing is sent
    )


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("botocore.waiter.time.sleep", slept.append)
    return slept


def table(status: str) -> dict[str, Any]:
    return {"Table": {"TableName": "leases", "TableStatus": status}}


def test_create_table_returns_only_once_the_new_table_is_active(
    client: Any, no_sleeping: list[float]
) -> None:
    with Stubber(client) as stub:
        stub.add_response("create_table", {"TableDescription": {"TableStatus": "CREATING"}})
        stub.add_response("describe_table", table("CREATING"))
        stub.add_response("describe_table", table("CREATING"))
        stub.add_response("describe_table", table("ACTIVE"))
        create_table(client, "leases")
        stub.assert_no_pending_responses()
    assert no_sleeping == [1, 1]


def test_create_table_waits_for_a_table_another_caller_is_still_creating(
    client: Any,
) -> None:
    with Stubber(client) as stub:
        stub.add_client_error("create_table", "ResourceInUseException")
        stub.add_response("describe_table", table("CREATING"))
        stub.add_response("describe_table", table("ACTIVE"))
        create_table(client, "leases")
        stub.assert_no_pending_responses()


def test_the_idempotency_tables_ttl_is_turned_on_once_the_table_is_active(
    client: Any,
) -> None:
    with Stubber(client) as stub:
        stub.add_response("create_table", {"TableDescription": {"TableStatus": "CREATING"}})
        stub.add_response("describe_table", table("CREATING"))
        stub.add_response("describe_table", table("ACTIVE"))
        stub.add_response(
            "update_time_to_live",
            {"TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expiration"}},
            {
                "TableName": "idempotency",
                "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expiration"},
            },
        )
        create_idempotency_table(client, "idempotency")
        stub.assert_no_pending_responses()
