"""Every failure the helper can meet, turned into one structured error document.

Known errors say what to do; anything else is logged with its stack by the handler and
answered without internals.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import ValidationError

from connlease_client.contract import ErrorBody, ErrorDetail, ErrorResponse
from domain import (
    ConnleaseError,
    CorruptQuota,
    InvalidInput,
    RequestInProgress,
    StoreUnavailable,
    UnknownDatabase,
)

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

INTERNAL = "InternalError"
CONFIGURATION = "ConfigurationError"
# Failures of the helper itself or of what it depends on, not of the caller's request:
# raised out of the handler (Lambda's Errors metric), as well as counted.
FAULTS = frozenset({INTERNAL, CONFIGURATION, "StoreUnavailable", "CorruptQuota"})
# The helper's own failures, with the service as the only dimension, so that one alarm
# watches every database the helper serves; no caller can set it off by asking badly.
HELPER_ERRORS = "HelperErrors"


class HelperFault(Exception):
    """The error document of a failure that is the helper's, raised so that Lambda counts
    it; the invoke adapter reads the document back from the error message."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__(json.dumps(document))
        self.document = document


def record_helper_error(metrics: Metrics) -> None:
    with single_metric(
        name=HELPER_ERRORS,
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.namespace,
        default_dimensions={"service": metrics.service or "connlease"},
    ):
        pass


ACTIONS = frozenset({"acquire", "release", "renew", "status"})


def invalid_event(error: ValidationError) -> ErrorResponse:
    details = []
    for issue in error.errors(include_url=False, include_input=False, include_context=True):
        loc = [str(part) for part in issue["loc"]]
        if loc and loc[0] in ACTIONS:  # pydantic puts the union's tag first
            loc = loc[1:]
        cause = issue.get("ctx", {}).get("error")
        message = cause.message if isinstance(cause, InvalidInput) else issue["msg"]
        details.append(ErrorDetail(field=".".join(loc) or "event", message=message))
    summary = "; ".join(f"{d.field}: {d.message}" for d in details)
    return _error("InvalidInput", f"malformed event: {summary}", details)


def configuration_error(error: ValidationError) -> ErrorResponse:
    names = ", ".join(str(issue["loc"][0]).upper() for issue in error.errors()) or "settings"
    return _error(
        CONFIGURATION,
        f"the helper is misconfigured: check the environment variables {names}",
    )


def known_error(
    error: ConnleaseError,
) -> ErrorResponse:
    match error:
        case InvalidInput(field=field, message=message):
            return _error("InvalidInput", str(error), [ErrorDetail(field=field, message=message)])
        case UnknownDatabase():
            return _error("UnknownDatabase", str(error), [_database(error.database)])
        case CorruptQuota():
            return _error(
                "CorruptQuota",
                str(error),
                [_database(error.database), ErrorDetail(field="problem", message=error.problem)],
            )
        case StoreUnavailable():
            return _error(
                "StoreUnavailable",
                str(error),
                [
                    ErrorDetail(field="operation", message=error.operation),
                    ErrorDetail(field="reason", message=error.reason),
                    ErrorDetail(field="retryable", message=str(error.retryable).lower()),
                ],
            )
        case RequestInProgress():
            return _error(
                "RequestInProgress",
                str(error),
                [ErrorDetail(field="operation", message=error.operation)],
            )
        case _:
            return _error(type(error).__name__, str(error))


def internal_error(request_id: str) -> ErrorResponse:
    return _error(
        INTERNAL, f"the helper failed unexpectedly; see its logs for request {request_id}"
    )


def _database(database: str) -> ErrorDetail:
    return ErrorDetail(field="database", message=database)


def _error(kind: str, message: str, details: list[ErrorDetail] | None = None) -> ErrorResponse:
    return ErrorResponse(error=ErrorBody(type=kind, message=message, details=details or []))
