"""The helper's client checks its arguments as the store does, before any invoke."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from adapters.lambda_invoke import LambdaLeases
from domain import HelperFailed, InvalidInput, RequestInProgress, StoreUnavailable
from domain.tokens import lease_key
from service.errors import known_error

# A well-formed grant token (secret.fence), as an acquire's answer gives one.
TOKEN = "s3cr3t-s3cr3t_s3cr3t-A.3"


class NoInvokes:
    """A Lambda client that must not be called."""

    def __init__(self) -> None:
        self.calls = 0

    def invoke(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise AssertionError("invoked with a bad argument")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda leases: leases.acquire("orders", ttl_ms=Decimal(5)), "ttl_ms"),
        (lambda leases: leases.acquire("orders", holder=b"fn"), "holder"),
        (lambda leases: leases.acquire("orders", secret=""), "secret"),
        (lambda leases: leases.acquire("orders", secret="too-short"), "secret"),
        (lambda leases: leases.acquire("orders", secret="x" * 15 + "."), "secret"),
        # Made of what status will show and the time (F7): refused before any invoke.
        (
            lambda leases: leases.acquire(
                "orders",
                "reporting-job/8f14e45f",
                secret=f"reporting-job-{time.time_ns() // 10**6}",
            ),
            "secret",
        ),
        (lambda leases: leases.acquire("orders", wait_ms=-1), "wait_ms"),
        (lambda leases: leases.acquire(frozenset()), "database"),
        (lambda leases: leases.release("orders", 7), "token"),
        # A lease id is public (status shows it): it is no token.
        (lambda leases: leases.release("orders", lease_key("orders", TOKEN[:-2])), "token"),
        (lambda leases: leases.renew("orders", ["abc"]), "token"),
        (lambda leases: leases.renew("orders", "abc"), "token"),
        (lambda leases: leases.renew("orders", TOKEN, ttl_ms=1j), "ttl_ms"),
        (lambda leases: leases.status(None), "database"),
    ],
)
def test_a_bad_argument_is_invalid_input_and_invokes_nothing(call: Any, field: str) -> None:
    client = NoInvokes()

    with pytest.raises(InvalidInput) as refused:
        call(LambdaLeases(client, "connlease-helper"))  # type: ignore[arg-type]

    assert refused.value.field == field
    assert client.calls == 0


class Answers:
    """A Lambda client whose helper answers with `document`."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def invoke(self, **_: Any) -> dict[str, Any]:
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.document).encode())}


@pytest.mark.parametrize("retryable", [True, False])
def test_the_helper_says_whether_a_store_failure_may_pass(retryable: bool) -> None:
    error = StoreUnavailable("release", "AccessDeniedException: no", retryable)
    client = Answers(known_error(error).document())

    with pytest.raises(StoreUnavailable) as raised:
        LambdaLeases(client, "connlease-helper").release("orders", TOKEN)  # type: ignore[arg-type]

    assert (raised.value.operation, raised.value.retryable) == ("release", retryable)


def test_a_release_still_in_progress_is_raised_as_such_to_be_retried() -> None:
    client = Answers(known_error(RequestInProgress("release")).document())

    with pytest.raises(RequestInProgress):
        LambdaLeases(client, "connlease-helper").release("orders", TOKEN)  # type: ignore[arg-type]


class RaisedByTheHelper:
    """A helper that raised its error document (service.errors.HelperFault), as Lambda's
    Python runtime reports an unhandled exception."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.calls = 0

    def invoke(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        body = {
            "errorMessage": json.dumps(self.document),
            "errorType": "HelperFault",
            "stackTrace": ['  File "/var/task/service/helper.py", line 1, in handler\n'],
        }
        return {
            "StatusCode": 200,
            "FunctionError": "Unhandled",
            "Payload": io.BytesIO(json.dumps(body).encode()),
        }


@pytest.mark.parametrize("retryable", [True, False])
def test_a_store_failure_the_helper_raised_is_read_back_as_the_same_typed_error(
    retryable: bool,
) -> None:
    error = StoreUnavailable("acquire", "ThrottlingException: slow down", retryable)
    client = RaisedByTheHelper(known_error(error).document())

    with pytest.raises(StoreUnavailable) as raised:
        LambdaLeases(client, "connlease-helper").status("orders")  # type: ignore[arg-type]

    assert (raised.value.operation, raised.value.retryable) == ("acquire", retryable)


def test_a_function_error_that_is_no_error_document_is_a_helper_failure() -> None:
    client = RaisedByTheHelper({"not": "a document"})

    with pytest.raises(HelperFailed, match="HelperFault"):
        LambdaLeases(client, "connlease-helper").status("orders")  # type: ignore[arg-type]
