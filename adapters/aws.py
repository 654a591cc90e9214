"""What the AWS adapters share: the SDK settings and session their clients are made with,
and turning an SDK failure into StoreUnavailable, telling a passing failure (worth another
try) from one that will not pass by itself."""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoRegionError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as SdkConnectionError,
)

from domain.errors import ConnleaseError, StoreUnavailable

# Lease calls sit on the caller's critical path: fail over quickly rather than hang on
# botocore's defaults (60 s to connect and 60 s to read).
SDK_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=10,
)

# The helper may queue behind a burst: a short read timeout would only resend the call.
INVOKE_CONFIG = Config(
    connect_timeout=2,
    read_timeout=60,
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=10,
)


@cache
def sdk_session() -> botocore.session.Session:
    """The one SDK session the clients share (credentials, region and service models are
    resolved and loaded once), as boto3's default session would be.

    The clients are botocore's: `boto3.client()` makes the same low-level client, but
    importing boto3 also imports its resource layer and s3transfer, which no function
    here uses (`python -X importtime -c 'import boto3'` shows what they cost)."""
    return botocore.session.get_session()


# botocore's session is not safe for clients made from several threads at once, as lazy
# clients may be.
_CREATING = threading.Lock()


def sdk_client(service: str, config: Config, endpoint_url: str | None = None) -> Any:
    """A client of the shared session. Off AWS, the SDK's own `AWS_ENDPOINT_URL_<SERVICE>`
    variables point it elsewhere (the local stack sets them)."""
    with _CREATING:
        return sdk_session().create_client(service, endpoint_url=endpoint_url, config=config)


class LazyClient:
    """An SDK client made on its first use, not when it is declared: a module that declares
    its leases at import time (as a handler module does) stays importable where no region
    is configured, such as the function's own unit tests. A missing region then surfaces
    on the first call, as the typed error that call raises."""

    def __init__(self, service: str, config: Config) -> None:
        self._service, self._config = service, config
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        # Only the client's own API is passed on: private and special names (what copy,
        # pickle and hasattr probe) are this object's, and never make the client.
        if name.startswith("_"):
            raise AttributeError(name)
        client = self.__dict__.get("_client")
        if client is None:
            with _CREATING:
                client = self.__dict__.get("_client")
                if client is None:
                    client = self._client = _new_client(self._service, self._config)
        return getattr(client, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (LazyClient, (self._service, self._config))


def _new_client(service: str, config: Config) -> Any:
    # Already under _CREATING.
    return sdk_session().create_client(service, config=config)


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


class AwsSetupError(ConnleaseError):
    """The AWS configuration cannot make a client: an unknown profile, no region, no
    credentials. The message says what to pass or set."""


# An operator waits at a terminal: a call that hangs is worse than one that fails.
OPERATOR_CONFIG = Config(
    connect_timeout=3,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 3},
)


class AwsAccess:
    """Clients as an operator's shell would make them: the named profile or the standard
    environment variables and files, the region given or configured, and one endpoint for
    every service when one is given (the local stack serves them all at one address)."""

    def __init__(
        self,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        *,
        local_credentials: tuple[str, str] | None = None,
    ) -> None:
        """`local_credentials`: the key pair to sign with, whatever is configured (a local
        stack accepts any)."""
        self.endpoint_url = endpoint_url
        self._session = botocore.session.Session(profile=profile)
        # AWS_REGION as well as botocore's AWS_DEFAULT_REGION: Lambda and the newer SDKs set it.
        self._region = region or os.environ.get("AWS_REGION") or None
        self._keys = local_credentials
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            try:
                key_id, secret = self._keys or (None, None)
                return self._session.create_client(
                    service,
                    region_name=self._region,
                    endpoint_url=self.endpoint_url,
                    config=OPERATOR_CONFIG,
                    aws_access_key_id=key_id,
                    aws_secret_access_key=secret,
                )
            except ProfileNotFound as error:
                raise AwsSetupError(f"{error}: pass --profile with a configured one") from error
            except NoRegionError as error:
                raise AwsSetupError("no AWS region: pass --region or set AWS_REGION") from error
            except BotoCoreError as error:
                raise AwsSetupError(str(error)) from error
