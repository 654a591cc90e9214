"""Which SDK failures a caller with time left should try again."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from connlease.adapters.aws import unavailable


def client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": "..."},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "UpdateItem")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (client_error("ProvisionedThroughputExceededException", 400), True),
        (client_error("ThrottlingException", 400), True),
        (client_error("TooManyRequestsException", 429), True),
        (client_error("InternalServerError", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("AccessDeniedException", 400), False),
        (client_error("ResourceNotFoundException", 400), False),
        (client_error("ValidationException", 400), False),
        (client_error("UnrecognizedClientException", 400), False),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1"), True),
        (ConnectionClosedError(endpoint_url="http://127.0.0.1"), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1"), True),
        (NoCredentialsError(), False),
        (ParamValidationError(report="bad"), False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_a_failure_is_retryable_only_if_it_may_pass_by_itself(
    error: Exception, retryable: bool
) -> None:
    assert isinstance(
        error,
        ClientError
        | ReadTimeoutError
        | ConnectionClosedError
        | EndpointConnectionError
        | NoCredentialsError
        | ParamValidationError,
    )
    result = unavailable("acquire", error)

    assert result.retryable is retryable
    assert result.operation == "acquire"
