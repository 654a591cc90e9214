"""The test function (the original sample's LambdaRDS_Test): take a lease, connect to
MySQL, read the Employees table, hold the connection for a simulated query time, close,
give the lease back. Its answer says how it went, so the harness can count outcomes.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.mysql import DatabaseError, select_employees
from domain import ConnleaseError, NoCapacity
from service.bootstrap import Workload, build_workload, built_at_init
from service.invocation import InvocationContext
from service.observability import powertools
from service.settings import WorkloadSettings

_powertools = powertools()
logger = _powertools.logger
tracer = _powertools.tracer
metrics = _powertools.metrics

QueryTime = float | tuple[float, float]


class WorkloadEvent(BaseModel):
    """Everything optional: the function's settings fill the gaps."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    query_time_s: QueryTime | None = None
    wait_budget_ms: int | None = Field(None, ge=0, le=900_000)


workload = built_at_init(lambda: build_workload(WorkloadSettings.from_environment(), metrics))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        app = workload()
    except ValidationError as error:  # the environment is wrong, not the event
        logger.exception("test function settings are invalid")
        return {"outcome": "configuration_error", "error": str(error)}
    return run(event, context, app)


def pick_query_time_s(asked: QueryTime | None, app: Workload) -> float:
    """The event's query time, else the settings': fixed, or uniform in a range."""
    if asked is None:
        low, high = app.settings.query_time_s, app.settings.query_time_max_s
        asked = (low, high) if high else low
    if isinstance(asked, tuple):
        return app.rng.uniform(*asked)
    return asked


def run(event: Any, context: InvocationContext, app: Workload) -> dict[str, Any]:
    try:
        request = parse(event=event or {}, model=WorkloadEvent)
    except ValidationError as error:
        return {"outcome": "invalid", "error": str(error)}
    query_time_s = pick_query_time_s(request.query_time_s, app)
    started = time.perf_counter()
    answer: dict[str, Any] = {"database": app.leases.database}
    try:
        with app.leases.connect(
            app.connect,
            context=context,
            wait_budget_ms=request.wait_budget_ms,
            ttl_ms=app.settings.lease_ttl_ms or None,
        ) as connection:
            answer["lease_wait_ms"] = app.leases.last_wait_ms
            answer["rows"] = select_employees(connection)
            time.sleep(query_time_s)
        answer["outcome"] = "succeeded"
    except NoCapacity as refused:
        answer |= {"outcome": "no_capacity", "lease_wait_ms": refused.waited_ms}
    except DatabaseError as failure:
        logger.warning("database error", extra={"code": failure.code, "error": failure.message})
        answer |= {"outcome": "db_error", "db_error_code": failure.code, "error": failure.message}
    except ConnleaseError as failure:
        logger.warning("lease error", extra={"error": str(failure)})
        answer |= {"outcome": "lease_error", "error_type": type(failure).__name__}
    answer["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    logger.info("workload done", extra=answer)
    return answer
