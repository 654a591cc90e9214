"""The local Lambda endpoint speaks the Invoke API the way boto3 expects."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from local.lambda_endpoint import FunctionSpec, LocalLambda

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

pytestmark = pytest.mark.integration

HANDLERS = "tests.integration.lambda_handlers"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[LocalLambda]:
    functions = [
        FunctionSpec("clock", f"{HANDLERS}.remaining_time", timeout_s=3, concurrency=1),
        FunctionSpec("slow", f"{HANDLERS}.slow", timeout_s=1, concurrency=2),
        FunctionSpec("crash", f"{HANDLERS}.crash"),
        FunctionSpec("missing", f"{HANDLERS}.no_such_handler"),
        FunctionSpec("busy", f"{HANDLERS}.slow", concurrency=1, throttle=True, provisioned=1),
    ]
    with LocalLambda(functions) as local:
        yield local


@pytest.fixture(scope="module")
def client(endpoint: LocalLambda) -> LambdaClient:
    return endpoint.client(max_pool_connections=16)


def invoke(client: LambdaClient, name: str, event: Any = None, **extra: Any) -> dict[str, Any]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}), **extra)
    body = response["Payload"].read()
    return {
        "status": response["StatusCode"],
        "error": response.get("FunctionError"),
        "body": json.loads(body) if body else None,
    }


def test_a_handler_sees_a_lambda_context_that_honours_the_timeout(client: LambdaClient) -> None:
    first = invoke(client, "clock", {"n": 1})
    second = invoke(client, "clock", {"n": 2})

    assert first["status"] == 200
    assert first["error"] is None
    assert 0 < first["body"]["remaining_ms"] <= 3_000
    assert first["body"]["function_name"] == "clock"
    assert first["body"]["event"] == {"n": 1}
    assert first["body"]["request_id"] != second["body"]["request_id"]
    assert first["body"]["pid"] == second["body"]["pid"]  # a warm environment is reused


def test_a_function_is_found_by_its_arn_too(client: LambdaClient) -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:clock"

    assert invoke(client, arn)["body"]["function_name"] == "clock"


def test_a_handler_exception_is_a_function_error_with_its_type(client: LambdaClient) -> None:
    answer = invoke(client, "crash")

    assert answer["error"] == "Unhandled"
    assert answer["body"]["errorType"] == "ValueError"
    assert answer["body"]["errorMessage"] == "the handler broke on purpose"


def test_an_import_error_is_reported_on_invoke(client: LambdaClient) -> None:
    answer = invoke(client, "missing")

    assert answer["error"] == "Unhandled"
    assert answer["body"]["errorType"].startswith("Runtime.ImportModuleError")


def test_a_handler_past_its_timeout_is_stopped_and_reported(
    client: LambdaClient, endpoint: LocalLambda
) -> None:
    answer = invoke(client, "slow", {"seconds": 60})

    assert answer["error"] == "Unhandled"
    assert answer["body"]["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in answer["body"]["errorMessage"]
    assert invoke(client, "slow", {"seconds": 0})["error"] is None  # a new environment


def test_concurrent_invokes_use_at_most_the_function_concurrency(
    client: LambdaClient, endpoint: LocalLambda
) -> None:
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: invoke(client, "slow", {"seconds": 0.2}), range(6)))

    assert all(answer["error"] is None for answer in answers)
    assert len({answer["body"]["pid"] for answer in answers}) <= 2


def test_past_its_concurrency_a_throttling_function_answers_429(
    client: LambdaClient, endpoint: LocalLambda
) -> None:
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(invoke, client, "busy", {"seconds": 2})
        deadline = time.monotonic() + 10
        while endpoint.busy("busy") < 1:  # its one environment has taken the first call
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(client.exceptions.TooManyRequestsException):
            invoke(client, "busy", {"seconds": 0})
        assert slow.result()["error"] is None


def test_an_event_invoke_is_accepted_at_once_and_runs(
    client: LambdaClient, endpoint: LocalLambda
) -> None:
    started = time.monotonic()
    answer = invoke(client, "slow", {"seconds": 0.9, "tag": "async-42"}, InvocationType="Event")

    assert answer["status"] == 202
    assert time.monotonic() - started < 0.9  # answered before the handler could finish
    deadline = time.monotonic() + 10
    while "slow handler done: async-42" not in endpoint.log_lines("slow"):
        assert time.monotonic() < deadline, "the event invoke never ran"
        time.sleep(0.05)


def test_an_unknown_function_is_resource_not_found(client: LambdaClient) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        invoke(client, "nope")


def test_a_body_nested_past_the_parsers_depth_is_answered_400_and_the_endpoint_serves_on(
    endpoint: LocalLambda, client: LambdaClient
) -> None:
    """Issue 23: a 20,000-deep JSON body raised RecursionError in the handler thread, which
    died without an answer."""
    host, port = endpoint.endpoint_url.removeprefix("http://").split(":")
    for body in (b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("POST", "/2015-03-31/functions/clock/invocations", body)
        answer = connection.getresponse()

        assert answer.status == 400
        assert answer.getheader("x-amzn-ErrorType") == "InvalidRequestContentException"
        connection.close()

    assert invoke(client, "clock", {"n": 3})["body"]["event"] == {"n": 3}
