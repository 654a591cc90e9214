"""The load harness (the original sample's LambdaRDS_TestHarness): invoke the test
function N times at concurrency C and say how it went.

The input keeps the sample's shape, `{"iterations": 1000, "operation": "load"}`, and adds
`concurrency`, `query_time_s`, `wait_budget_ms` and `invocation`: "sync" collects every
result (the default), "async" fires Event invokes like the sample and only counts them.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.bootstrap import Harness, build_harness
from service.observability import powertools
from service.settings import HarnessSettings

_powertools = powertools()
logger = _powertools.logger
tracer = _powertools.tracer


class HarnessEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(1000, ge=1, le=100_000)
    operation: Literal["load", "unit"] = "load"
    concurrency: int = Field(10, ge=1, le=1000)
    query_time_s: float | tuple[float, float] | None = None
    wait_budget_ms: int | None = Field(None, ge=0, le=900_000)
    invocation: Literal["sync", "async"] = "sync"

    def test_event(self) -> dict[str, Any]:
        return self.model_dump(include={"query_time_s", "wait_budget_ms"}, exclude_none=True)


@cache
def harness() -> Harness:
    return build_harness(HarnessSettings.from_environment())


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    return run(event, harness())


def run(event: Any, app: Harness) -> dict[str, Any]:
    try:
        request = parse(event=event or {}, model=HarnessEvent)
    except ValidationError as error:
        return {"ok": False, "error": str(error)}
    cap = app.settings.max_concurrency
    if request.concurrency > cap:
        return {"ok": False, "error": f"concurrency {request.concurrency} is above the cap {cap}"}
    runs = 1 if request.operation == "unit" else request.iterations
    invoke = invoke_sync if request.invocation == "sync" else invoke_async
    payload = json.dumps(request.test_event()).encode()
    with ThreadPoolExecutor(min(request.concurrency, runs)) as pool:
        results = list(pool.map(lambda _: invoke(app, payload), range(runs)))
    summary = summarize(results) | {"ok": True, "operation": request.operation}
    logger.info("harness done", extra={k: v for k, v in summary.items() if k != "results"})
    return summary


def invoke_sync(app: Harness, payload: bytes) -> dict[str, Any]:
    try:
        response = app.lambda_client.invoke(
            FunctionName=app.settings.test_function, Payload=payload
        )
        body = json.loads(response["Payload"].read() or b"null")
    except (ClientError, BotoCoreError, ValueError) as error:
        return {"outcome": "invoke_error", "error": str(error)}
    if response.get("FunctionError"):
        return {"outcome": "function_error", "error": body.get("errorType", "?")}
    return dict(body)


def invoke_async(app: Harness, payload: bytes) -> dict[str, Any]:
    try:
        app.lambda_client.invoke(
            FunctionName=app.settings.test_function, InvocationType="Event", Payload=payload
        )
    except (ClientError, BotoCoreError) as error:
        return {"outcome": "invoke_error", "error": str(error)}
    return {"outcome": "accepted"}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes = Counter(str(result.get("outcome")) for result in results)
    db_errors = Counter(
        str(result["db_error_code"]) for result in results if "db_error_code" in result
    )
    waits = sorted(float(r["lease_wait_ms"]) for r in results if "lease_wait_ms" in r)
    return {
        "invocations": len(results),
        "outcomes": dict(outcomes),
        "db_errors": dict(db_errors),
        "lease_wait_ms": {f"p{p}": percentile(waits, p) for p in (50, 95, 99)},
        "results": results,
    }


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None for no data."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]
