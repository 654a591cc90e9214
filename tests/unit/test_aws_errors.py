"""Which SDK failures a caller with time left should try again."""

from __future__ import annotations

import pytest
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyPersistenceLayerError,
)
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from adapters.aws import unavailable
from domain import StoreUnavailable
from service.idempotency import idempotency_unavailable


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
        (client_error("KMSAccessDeniedException", 502), False),  # Lambda: its configuration
        (client_error("InvalidSubnetIDException", 502), False),
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


@pytest.mark.parametrize(
    ("cause", "retryable"),
    [
        (client_error("AccessDeniedException", 400), False),
        (client_error("ResourceNotFoundException", 400), False),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1"), True),
        (StoreUnavailable("release", "AccessDeniedException: no", retryable=False), False),
        (ValueError("no SDK error behind it"), True),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_an_idempotency_table_failure_may_pass_only_if_its_cause_may(
    cause: Exception, retryable: bool
) -> None:
    try:
        raise IdempotencyPersistenceLayerError("Failed to update record state") from cause
    except IdempotencyPersistenceLayerError as error:
        result = idempotency_unavailable(error)

    assert (result.operation, result.retryable) == ("idempotency", retryable)
