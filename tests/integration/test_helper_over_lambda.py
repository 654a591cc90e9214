"""The helper through real boto3 invokes: local Lambda endpoint + embedded DynamoDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.lambda_invoke import LambdaLeases
from domain import (
    Granted,
    HelperFailed,
    InvalidInput,
    LeaseLost,
    Quota,
    Rejected,
    ReleaseOutcome,
    Renewed,
    StoreUnavailable,
    UnknownDatabase,
)
from domain.model import SKEW_MARGIN_MS
from domain.tokens import label, new_secret
from local.context import LocalContext
from local.lambda_endpoint import FunctionSpec
from local.stack import HELPER, LocalStack, Tables, helper_function
from service.client import ConnectionLeases
from tests.fakes import Boom

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

pytestmark = pytest.mark.integration

DB = "orders-mysql"
OTHER = "billing-mysql"
NAMESPACE = "connlease-it"


def functions(url: str, tables: Tables) -> list[FunctionSpec]:
    return [
        helper_function(url, tables, concurrency=4, namespace=NAMESPACE),
        # The same handler without its tables configured.
        FunctionSpec("misconfigured-helper", "service.helper.handler"),
    ]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(functions, tables=Tables("it-leases", "it-idempotency")) as running:
        store = DynamoDBLeaseStore(running.dynamodb_client(), "it-leases", SystemClock())
        store.set_quota(DB, Quota(limit=3, default_ttl_ms=30_000))
        store.set_quota(OTHER, Quota(limit=3, default_ttl_ms=30_000))
        yield running


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> LambdaClient:
    return stack.lambda_client()


@pytest.fixture
def leases(client: LambdaClient) -> LambdaLeases:
    return LambdaLeases(client, HELPER)


@pytest.fixture(autouse=True)
def quota_starts_empty(stack: LocalStack) -> None:
    # The helper shows no caller what would release another's lease: the tests start over
    # as an operator would, on the table.
    store = DynamoDBLeaseStore(stack.dynamodb_client(), "it-leases", SystemClock())
    for database in (DB, OTHER):
        store.delete_quota(database)
        store.set_quota(database, Quota(limit=3, default_ttl_ms=30_000))


def raw_invoke(client: LambdaClient, payload: bytes) -> dict[str, Any]:
    response = client.invoke(FunctionName=HELPER, Payload=payload)
    assert response.get("FunctionError") is None
    document: dict[str, Any] = json.loads(response["Payload"].read())
    return document


def table_dump(stack: LocalStack) -> list[str]:
    dynamodb = stack.dynamodb_client()
    return [
        json.dumps(item, sort_keys=True)
        for table in ("it-leases", "it-idempotency")
        for item in dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    ]


def test_acquire_renew_status_and_release_round_trip(leases: LambdaLeases) -> None:
    granted = leases.acquire(DB, "orders-fn/req-1", ttl_ms=10_000)
    assert isinstance(granted, Granted)
    assert granted.remaining == 2
    assert granted.others_waiting is False  # said by the helper, not left to a guess

    renewed = leases.renew(DB, granted.token, ttl_ms=20_000)
    assert isinstance(renewed, Renewed)
    assert renewed.lease.expires_at_ms > granted.lease.expires_at_ms
    assert renewed.remaining == 2
    assert renewed.others_waiting is False

    status = leases.status(DB)
    assert (status.in_use, status.remaining) == (1, 2)
    assert status.leases[0].holder == "orders-fn/req-1"

    assert leases.release(DB, granted.token) is ReleaseOutcome.RELEASED
    assert leases.renew(DB, granted.token) == LeaseLost(granted.lease.id)
    assert leases.status(DB).in_use == 0


def test_a_full_quota_is_rejected_with_a_retry_hint(leases: LambdaLeases) -> None:
    for _ in range(3):
        leases.acquire(DB)

    rejected = leases.acquire(DB)

    assert isinstance(rejected, Rejected)
    assert (rejected.remaining, rejected.in_use, rejected.limit) == (0, 3, 3)
    assert 0 < rejected.retry_after_ms <= 30_000 + SKEW_MARGIN_MS  # reclaimable then


def test_a_release_sent_twice_returns_the_same_answer_and_frees_one_lease(
    client: LambdaClient, leases: LambdaLeases
) -> None:
    kept = leases.acquire(DB)
    gone = leases.acquire(DB)
    assert isinstance(kept, Granted)
    assert isinstance(gone, Granted)
    payload = json.dumps({"action": "release", "database": DB, "token": gone.token})

    first = raw_invoke(client, payload.encode())
    second = raw_invoke(client, payload.encode())

    assert first == second
    assert first["outcome"] == "released"
    assert [lease.id for lease in leases.status(DB).leases] == [label(kept.lease, shard=False)]


def test_an_acquire_retried_with_the_same_payload_takes_one_lease(
    client: LambdaClient, leases: LambdaLeases
) -> None:
    payload = json.dumps({"action": "acquire", "database": DB, "secret": new_secret()})

    first = raw_invoke(client, payload.encode())
    second = raw_invoke(client, payload.encode())

    assert (first["lease"], first["token"]) == (second["lease"], second["token"])
    assert leases.status(DB).in_use == 1


def emf_lines(stack: LocalStack) -> list[dict[str, Any]]:
    assert stack.lambdas is not None
    return [
        json.loads(line) for line in stack.lambdas.log_lines(HELPER) if line.startswith('{"_aws"')
    ]


def test_metrics_are_emitted_as_emf_with_the_database_dimension(
    stack: LocalStack, leases: LambdaLeases
) -> None:
    before = len(emf_lines(stack))
    held = [leases.acquire(DB) for _ in range(3)]
    leases.acquire(DB)  # refused
    first = held[0]
    assert isinstance(first, Granted)
    leases.release(DB, first.token)

    lines = emf_lines(stack)[before:]

    assert len(lines) == 5
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        assert directive["Dimensions"] == [["database", "service"]]
        assert line["database"] == DB
    remaining = [line["RemainingConnections"] for line in lines if "RemainingConnections" in line]
    assert remaining == [[2.0], [1.0], [0.0], [0.0]]
    assert [line.get("NoConnectionsLeftError") for line in lines] == [None] * 3 + [[1.0], None]
    assert lines[-1]["LeasesReleased"] == [1.0]
    units = {
        metric["Name"]: metric
        for line in lines
        for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert units["RemainingConnections"]["StorageResolution"] == 1
    assert units["AcquireWaitMs"]["Unit"] == "Milliseconds"


def test_concurrent_invocations_never_mix_their_metrics(
    stack: LocalStack, leases: LambdaLeases
) -> None:
    before = len(emf_lines(stack))

    def take_and_give_back(database: str) -> bool:
        result = leases.acquire(database)
        if isinstance(result, Granted):
            leases.release(database, result.token)
        return isinstance(result, Granted)

    with ThreadPoolExecutor(8) as pool:
        granted = sum(pool.map(take_and_give_back, [DB, OTHER] * 12))

    lines = emf_lines(stack)[before:]
    assert len(lines) == 24 + granted  # every acquire, and every release of a grant
    for line in lines:  # one invocation, one database, one value per metric
        names = [m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        assert all(len(line[name]) == 1 for name in names)
        assert line["database"] in (DB, OTHER)


MALFORMED: dict[str, bytes] = {
    "a json list": b"[1, 2]",
    "a json string": b'"acquire"',
    "a json number": b"42",
    "null": b"null",
    "empty object": b"{}",
    "no action": json.dumps({"database": DB}).encode(),
    "unknown action": json.dumps({"action": "evict", "database": DB}).encode(),
    "action not a string": json.dumps({"action": 1, "database": DB}).encode(),
    "no database": json.dumps({"action": "acquire"}).encode(),
    "empty database": json.dumps({"action": "acquire", "database": ""}).encode(),
    "oversized database": json.dumps({"action": "status", "database": "d" * 500}).encode(),
    "database with spaces": json.dumps({"action": "acquire", "database": "a b"}).encode(),
    "database a number": json.dumps({"action": "acquire", "database": 7}).encode(),
    "database an object": json.dumps({"action": "acquire", "database": {"x": 1}}).encode(),
    "oversized holder": json.dumps(
        {"action": "acquire", "database": DB, "holder": "h" * 99}
    ).encode(),
    "holder a number": json.dumps({"action": "acquire", "database": DB, "holder": 5}).encode(),
    "ttl a string": json.dumps({"action": "acquire", "database": DB, "ttl_ms": "10s"}).encode(),
    "ttl negative": json.dumps({"action": "acquire", "database": DB, "ttl_ms": -1}).encode(),
    "ttl a float": json.dumps({"action": "acquire", "database": DB, "ttl_ms": 1.5}).encode(),
    "ttl a bool": json.dumps({"action": "acquire", "database": DB, "ttl_ms": True}).encode(),
    "ttl too long": json.dumps({"action": "acquire", "database": DB, "ttl_ms": 10**12}).encode(),
    "wait negative": json.dumps({"action": "acquire", "database": DB, "wait_ms": -5}).encode(),
    "release without lease": json.dumps({"action": "release", "database": DB}).encode(),
    "oversized token": json.dumps(
        {"action": "release", "database": DB, "token": "x" * 65}
    ).encode(),
    "a lease id for a token": json.dumps(
        {"action": "release", "database": DB, "token": "AbCdEfGh"}
    ).encode(),
    "token with two dots in a row": json.dumps(
        {"action": "release", "database": DB, "token": "a" * 22 + "..1"}
    ).encode(),
    "renew without renewal": json.dumps(
        {"action": "renew", "database": DB, "token": "a" * 22 + ".1"}
    ).encode(),
    "renewal zero": json.dumps(
        {"action": "renew", "database": DB, "token": "a" * 22 + ".1", "renewal": 0}
    ).encode(),
    "short secret": json.dumps({"action": "acquire", "database": DB, "secret": "abc"}).encode(),
    "an unknown field": json.dumps({"action": "status", "database": DB, "admin": True}).encode(),
}


def test_malformed_events_get_structured_errors_and_leave_the_tables_as_they_were(
    stack: LocalStack, client: LambdaClient, leases: LambdaLeases
) -> None:
    leases.acquire(DB, "orders-fn/keep")
    before = table_dump(stack)

    answers = {case: raw_invoke(client, payload) for case, payload in MALFORMED.items()}

    assert len(answers) >= 20
    for case, answer in answers.items():
        assert answer["ok"] is False, case
        assert answer["error"]["type"] == "InvalidInput", case
        assert answer["error"]["details"], case
        assert answer["error"]["message"].startswith("malformed event"), case
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName=HELPER, Payload=b"{action: acquire")
    assert table_dump(stack) == before


def test_helper_errors_come_back_as_typed_exceptions(client: LambdaClient) -> None:
    with pytest.raises(UnknownDatabase, match="ghost-db"):
        LambdaLeases(client, HELPER).acquire("ghost-db")
    with pytest.raises(InvalidInput) as invalid:
        LambdaLeases(client, HELPER).release(DB, "not a token")
    assert invalid.value.field == "token"
    with pytest.raises(HelperFailed, match=r"ConfigurationError.*LEASES_TABLE_NAME"):
        LambdaLeases(client, "misconfigured-helper").status(DB)
    with pytest.raises(StoreUnavailable, match="ResourceNotFoundException"):
        LambdaLeases(client, "no-such-helper").status(DB)


def test_the_connection_context_gives_the_lease_back_when_the_body_raises(
    leases: LambdaLeases,
) -> None:
    connection_leases = ConnectionLeases(leases, DB)
    context = LocalContext("orders-fn", timeout_s=5)

    held_inside = []
    with pytest.raises(Boom), connection_leases.connect(object, context=context):  # noqa: PT012
        held_inside.append(leases.status(DB).in_use)
        raise Boom

    assert held_inside == [1]
    assert leases.status(DB).in_use == 0


def test_the_connection_context_gives_the_lease_back_when_connecting_fails(
    leases: LambdaLeases,
) -> None:
    def refuse() -> object:
        raise ConnectionRefusedError("MySQL is down")

    with (
        pytest.raises(ConnectionRefusedError),
        ConnectionLeases(leases, DB).connect(refuse, context=LocalContext("orders-fn")),
    ):
        pytest.fail("no connection, no body")

    assert leases.status(DB).in_use == 0


def test_a_store_outage_is_a_lambda_error_the_caller_still_reads_as_store_unavailable(
    stack: LocalStack, client: LambdaClient
) -> None:
    # The helper's own failure must show in Lambda's Errors metric: it is raised, and the
    # invoke adapter reads the error document back from the function error.
    response = client.invoke(
        FunctionName="misconfigured-helper",
        Payload=json.dumps({"action": "status", "database": DB}).encode(),
    )
    document = json.loads(response["Payload"].read())

    assert response.get("FunctionError") == "Unhandled"
    assert document["errorType"] == "HelperFault"
    assert json.loads(document["errorMessage"])["error"]["type"] == "ConfigurationError"
