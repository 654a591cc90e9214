"""The helper function as a lease source, over a synchronous Lambda invoke.

The caller's view of the helper: the same `Leases` interface as a store in-process, with
the helper's error documents and function errors turned back into typed exceptions.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from adapters.aws import unavailable
from adapters.clock import SystemClock
from connlease_client.contract import (
    AcquireResponse,
    ErrorResponse,
    MalformedAnswer,
    ReleaseResponse,
    RenewResponse,
    StatusResponse,
)
from domain import (
    AcquireResult,
    ConnleaseError,
    CorruptQuota,
    Granted,
    HelperFailed,
    InvalidInput,
    LeaseLost,
    QuotaStatus,
    Rejected,
    ReleaseOutcome,
    Renewed,
    RenewResult,
    RequestInProgress,
    StoreUnavailable,
    UnknownDatabase,
)
from domain.groups import check_group
from domain.model import (
    check_database,
    check_holder,
    check_ttl_ms,
    check_wait_ms,
)
from domain.tokens import check_secret, lease_key, new_secret, parse_token

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

RENEWALS_KEPT = 4096  # leases remembered; far more than one environment holds in its life

Answer = TypeVar("Answer", AcquireResponse, ReleaseResponse, RenewResponse, StatusResponse)


class LambdaLeases:
    """Leases from the helper function, invoked by name or ARN (RequestResponse)."""

    def __init__(self, client: LambdaClient, function: str) -> None:
        self._client = client
        self._function = function
        # Numbers each renewal of a grant, so that a retried renew is answered once and a
        # later one never reuses a number (it would get an earlier, stale answer back).
        # Keyed by the token's hash: the tokens themselves are kept nowhere but by holders.
        self._renewals: OrderedDict[str, int] = OrderedDict()

    def acquire(
        self,
        database: str,
        holder: str = "",
        ttl_ms: int | None = None,
        secret: str | None = None,
        wait_ms: int = 0,
        *,
        group: str | None = None,
    ) -> AcquireResult:
        # Checked here as the store checks them, so that a bad argument is an InvalidInput
        # before any invoke, never a TypeError from encoding it (the helper still holds
        # wait_ms to its own ceiling).
        check_database(database)
        check_holder(holder)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        check_wait_ms(wait_ms)
        if group is not None:
            check_group(group)
        # The secret is proposed here, so that an invoke the SDK retries after losing its
        # answer finds the lease the first attempt took instead of taking a second one.
        request: dict[str, Any] = {
            "action": "acquire",
            "database": database,
            "secret": new_secret()
            if secret is None
            # Given what status will show of the lease, at this machine's time (the helper's
            # store checks it again with its own clock).
            else check_secret(
                secret,
                holder=holder,
                database=database,
                group=group,
                now_ms=SystemClock().now_ms(),
            ),
            "holder": holder,
        }
        if ttl_ms is not None:
            request["ttl_ms"] = ttl_ms
        if wait_ms:
            request["wait_ms"] = wait_ms
        if group is not None:
            request["group"] = group
        try:
            answer = self._call(request, AcquireResponse)
        except (StoreUnavailable, HelperFailed):
            # The helper may have taken the lease before the answer was lost: give the
            # proposed id back rather than leave it held until its TTL.
            with suppress(ConnleaseError):
                self.release(database, request["secret"])
            raise
        if answer.lease is not None:
            if answer.token is None:
                raise HelperFailed(self._function, "MalformedResponse", "a grant without a token")
            reclaimed = tuple(lease.to_domain() for lease in answer.reclaimed)
            return Granted(
                answer.lease.to_domain(),
                answer.remaining,
                reclaimed,
                answer.others_waiting,
                token=answer.token,
            )
        return Rejected(database, answer.limit or 0, answer.in_use or 0, answer.retry_after_ms or 0)

    def release(self, database: str, token: str) -> ReleaseOutcome:
        check_database(database)
        parse_token(token)
        request = {"action": "release", "database": database, "token": token}
        answer = self._call(request, ReleaseResponse)
        return ReleaseOutcome(answer.outcome)

    def renew(self, database: str, token: str, ttl_ms: int | None = None) -> RenewResult:
        check_database(database)
        grant = parse_token(token)
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        numbered = hashlib.sha256(token.encode()).hexdigest()
        renewal = self._renewals.get(numbered, 0) + 1
        request: dict[str, Any] = {
            "action": "renew",
            "database": database,
            "token": token,
            "renewal": renewal,
        }
        if ttl_ms is not None:
            request["ttl_ms"] = ttl_ms
        answer = self._call(request, RenewResponse)
        self._renewals[numbered] = renewal
        self._renewals.move_to_end(numbered)
        while len(self._renewals) > RENEWALS_KEPT:
            self._renewals.popitem(last=False)
        if answer.lease is None:
            return LeaseLost(lease_key(database, grant.secret))
        return Renewed(answer.lease.to_domain(), answer.remaining, answer.others_waiting)

    def status(self, database: str, group: str | None = None) -> QuotaStatus:
        check_database(database)
        request = {"action": "status", "database": database}
        if group is not None:
            request["group"] = check_group(group)
        answer = self._call(request, StatusResponse)
        return answer.to_domain()

    def _call(self, request: dict[str, Any], answer_type: type[Answer]) -> Answer:
        try:
            response = self._client.invoke(
                FunctionName=self._function,
                InvocationType="RequestResponse",
                Payload=json.dumps(request).encode(),
            )
            body = response["Payload"].read()
        except (ClientError, BotoCoreError) as error:
            raise unavailable(f"invoke {self._function}", error) from error
        try:
            document = json.loads(body)
        except ValueError as error:
            raise HelperFailed(self._function, "MalformedResponse", repr(body[:200])) from error
        if response.get("FunctionError"):
            document = document if isinstance(document, dict) else {}
            raised = _raised_error(document)
            if raised is not None:  # the helper's own failure, as its error document
                raise _error_from(self._function, raised)
            raise HelperFailed(
                self._function,
                str(document.get("errorType", response["FunctionError"])),
                str(document.get("errorMessage", "no message")),
            )
        try:
            if isinstance(document, dict) and document.get("ok") is False:
                raise _error_from(self._function, ErrorResponse.read(document))
            return answer_type.read(document)
        except MalformedAnswer as error:
            # Where, not what: the answer may hold a token.
            raise HelperFailed(self._function, "MalformedResponse", str(error)) from None


def _raised_error(document: dict[str, Any]) -> ErrorResponse | None:
    """The error document a helper raised (service.errors.HelperFault) as its message."""
    with suppress(ValueError):  # MalformedAnswer is one, as is a message that is no JSON
        return ErrorResponse.read(json.loads(str(document.get("errorMessage", ""))))
    return None


def _error_from(function: str, answer: ErrorResponse) -> ConnleaseError:
    """The exception the helper's error document stands for."""
    error = answer.error
    details = {detail.field: detail.message for detail in error.details}
    match error.type:
        case "InvalidInput":
            field, message = next(iter(details.items()), ("event", error.message))
            return InvalidInput(field, message if len(details) <= 1 else error.message)
        case "UnknownDatabase":
            return UnknownDatabase(details.get("database", "?"))
        case "CorruptQuota":
            return CorruptQuota(details.get("database", "?"), details.get("problem", error.message))
        case "StoreUnavailable":
            return StoreUnavailable(
                details.get("operation", "helper"),
                details.get("reason", error.message),
                retryable=details.get("retryable", "true") == "true",
            )
        case "RequestInProgress":
            return RequestInProgress(details.get("operation", "request"))
        case _:
            return HelperFailed(function, error.type, error.message)
