"""What the AWS adapters share: turning an SDK failure into StoreUnavailable, and telling
a passing failure (worth another try) from one that will not pass by itself."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import (
    ConnectionError as SdkConnectionError,
)

from domain.errors import StoreUnavailable

# Error codes that say "not now" rather than "not like this" (botocore's standard retry
# mode treats the same codes as throttling or transient).
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "ResourceConflictException",  # Lambda: the function is being updated
    }
)


# Lambda answers these with a 5xx, but they are the function's configuration: they stay.
PERMANENT_CODES = frozenset(
    {
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "EC2AccessDeniedException",
        "InvalidSubnetIDException",
        "InvalidSecurityGroupIDException",
        "InvalidRuntimeException",
        "InvalidZipFileException",
    }
)


def unavailable(operation: str, error: ClientError | BotoCoreError) -> StoreUnavailable:
    """A throttle, a 5xx, a timeout or a lost connection is retryable; an access denial, a
    missing table or function, bad credentials or a malformed request is not."""
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = info.get("Code", "error")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        retryable = code not in PERMANENT_CODES and (code in TRANSIENT_CODES or status >= 500)
        return StoreUnavailable(operation, f"{code}: {info.get('Message', '')}", retryable)
    retryable = isinstance(error, SdkConnectionError | HTTPClientError)
    return StoreUnavailable(operation, str(error), retryable)
