"""The test function (the original sample's LambdaRDS_Test): take a lease, connect to
MySQL, read the Employees table, hold the connection for a simulated query time, close,
give the lease back. Its answer says how it went, so the harness can count outcomes.
With LEASE_MODE none it takes no lease and connects straight away, as the sample's
functions did before connlease: the problem `make demo` shows first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from adapters.mysql import DatabaseError, select_employees
from adapters.secrets import SecretUnavailable
from domain import ConnleaseError, NoCapacity
from service.bootstrap import Workload, build_workload, built_at_init
from service.invocation import InvocationContext
from service.lease_calls import close_quietly
from service.observability import powertools
from service.settings import WorkloadSettings

_powertools = powertools()
logger = _powertools.logger
tracer = _powertools.tracer
metrics = _powertools.metrics

QueryTime = float | tuple[float, float]
C = TypeVar("C")
MAX_QUERY_TIME_S = 900.0  # Lambda's longest timeout
MAX_SHOWN_INPUT = 40


def check_query_time(value: object) -> QueryTime | None:
    """Seconds from 0 to 900, or a range [low, high] of them with low <= high; anything
    else (a string, a boolean, NaN, infinity, a negative number) is refused with one
    message rather than pydantic's guesses at each type of the union."""
    if value is None:
        return None
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = (_seconds(part) for part in value)
        if low is not None and high is not None and low <= high:
            return (low, high)
    else:
        seconds = _seconds(value)
        if seconds is not None:
            return seconds
    shown = repr(value)
    if len(shown) > MAX_SHOWN_INPUT:
        shown = shown[:MAX_SHOWN_INPUT] + "..."
    raise PydanticCustomError(
        "query_time",
        "must be seconds from 0 to {most}, or a range [low, high] of them with low <= high;"
        " got {shown}",
        {"most": f"{MAX_QUERY_TIME_S:g}", "shown": shown},
    )


def _seconds(value: object) -> float | None:
    # bool is an int to Python, and a mistake here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # NaN fails both comparisons; a huge int is compared, never converted (OverflowError).
    if not 0 <= value <= MAX_QUERY_TIME_S:
        return None
    return float(value)


class WorkloadEvent(BaseModel):
    """Everything optional: the function's settings fill the gaps."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    query_time_s: Annotated[QueryTime | None, BeforeValidator(check_query_time)] = None
    wait_budget_ms: int | None = Field(None, ge=0, le=900_000)


workload = built_at_init(lambda: build_workload(WorkloadSettings.from_environment(), metrics))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        app = workload()
    except ValidationError as error:  # the environment is wrong, not the event
        # Named, never echoed: a setting's value may be a password.
        names = sorted({str(issue["loc"][0]).upper() for issue in error.errors() if issue["loc"]})
        logger.error("test function settings are invalid", extra={"variables": names})
        return {
            "outcome": "configuration_error",
            "error": f"check the environment variables {', '.join(names) or 'of the function'}",
        }
    return run(event, context, app)


def pick_query_time_s(asked: QueryTime | None, app: Workload) -> float:
    """The event's query time, else the settings': fixed, or uniform in a range."""
    if asked is None:
        low, high = app.settings.query_time_s, app.settings.query_time_max_s
        asked = (low, high) if high else low
    if isinstance(asked, tuple):
        return app.rng.uniform(*asked)
    return asked


def query_time_limit_s(context: InvocationContext, app: Workload) -> float:
    """The longest a query may hold its connection: what remains of the invocation less
    the safety margin, and never past the lease (LEASE_TTL_MS, when set). A longer one
    would be cut by the timeout with its lease held, or hold a connection no lease
    counts."""
    limit_ms = context.get_remaining_time_in_millis() - app.settings.safety_margin_ms
    if app.settings.lease_ttl_ms:
        limit_ms = min(limit_ms, app.settings.lease_ttl_ms)
    return max(0.0, min(limit_ms / 1000, MAX_QUERY_TIME_S))


def invalid(error: ValidationError) -> dict[str, Any]:
    """The answer to a bad event: each problem as `field: what is wrong`."""
    problems = []
    for issue in error.errors(include_url=False):
        field = ".".join(str(part) for part in issue["loc"])
        problems.append(f"{field}: {issue['msg']}" if field else issue["msg"])
    return {"outcome": "invalid", "error": "; ".join(problems)}


@contextmanager
def straight_away(connect: Callable[[], C]) -> Iterator[C]:
    """LEASE_MODE none: a connection with no lease, as the original sample's functions
    opened theirs; past MySQL's max_connections it is refused with error 1040."""
    connection = connect()
    try:
        yield connection
    finally:
        close_quietly(connection)


def run(event: Any, context: InvocationContext, app: Workload) -> dict[str, Any]:
    try:
        request = parse(event=event or {}, model=WorkloadEvent)
    except ValidationError as error:
        return invalid(error)
    asked = request.query_time_s
    longest_s = max(asked) if isinstance(asked, tuple) else asked
    limit_s = query_time_limit_s(context, app)
    if longest_s is not None and longest_s > limit_s:
        within = ", within LEASE_TTL_MS" if app.settings.lease_ttl_ms else ""
        return {
            "outcome": "invalid",
            "error": f"query_time_s: {longest_s:g} s is longer than this invocation may hold "
            f"a connection ({limit_s:.1f} s: its remaining time less SAFETY_MARGIN_MS{within})",
        }
    # The settings' query time (0-900 s) is cut to what this invocation allows.
    query_time_s = min(pick_query_time_s(asked, app), limit_s)
    started = time.perf_counter()
    answer: dict[str, Any] = {"database": app.settings.quota_database}
    leases = app.leases
    try:
        opened = (
            leases.connect(
                app.connect,
                context=context,
                wait_budget_ms=request.wait_budget_ms,
                ttl_ms=app.settings.lease_ttl_ms or None,
            )
            if leases is not None
            else straight_away(app.connect)
        )
        with opened as connection:
            if leases is not None:
                answer["lease_wait_ms"] = leases.last_wait_ms
            answer["rows"] = select_employees(connection)
            time.sleep(query_time_s)
        answer["outcome"] = "succeeded"
    except NoCapacity as refused:
        answer |= {"outcome": "no_capacity", "lease_wait_ms": refused.waited_ms}
    except DatabaseError as failure:
        logger.warning("database error", extra={"code": failure.code, "error": failure.message})
        answer |= {"outcome": "db_error", "db_error_code": failure.code, "error": failure.message}
    except SecretUnavailable as failure:  # the login's secret, not the database, failed
        logger.warning("database secret unusable", extra={"error": str(failure)})
        answer |= {"outcome": "secret_error", "error": str(failure)}
    except ConnleaseError as failure:
        logger.warning("lease error", extra={"error": str(failure)})
        answer |= {"outcome": "lease_error", "error_type": type(failure).__name__}
    answer["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    logger.info("workload done", extra=answer)
    return answer
