"""The helper function: other Lambdas invoke it synchronously to take and give back leases.

The handler only parses, dispatches and maps errors; the work is the domain's, wired in
the composition root.

The cyclic garbage collector is off while the module initializes (Lambda's init phase)
and the objects init made are then frozen (`gc.freeze()`, the pattern the gc docs give for
a process that prepares long-lived state once). Everything init makes lives as long as
the execution environment: modules, classes, the pydantic schemas, the SDK's service
model, so collecting during init scans them again and again and frees next to nothing;
frozen, they are also left out of every later collection. `make bench` measures the
cold start this belongs to.
"""

# ruff: noqa: E402 - the imports below are what runs with the collector off

from __future__ import annotations

import gc
import os

_collecting = gc.isenabled()
gc.disable()

# The helper uses no pydantic plugins: without this (pydantic's documented switch), building
# the first validator scans every installed distribution's entry points for some (about
# 4 ms of each cold start here). Set to an empty value, the variable turns the scan back on.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from collections.abc import Callable
from functools import cache
from typing import Any, cast

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter, ValidationError

from connlease_client.contract import (
    AcquireResponse,
    LeaseDoc,
    ReleaseResponse,
    RenewResponse,
    StatusResponse,
)
from domain import (
    ConnleaseError,
    Deadline,
    Granted,
    InvalidInput,
    LeaseLost,
    Metric,
    NoCapacity,
    ReleaseOutcome,
    acquire_within,
)
from domain.services import record_acquire
from domain.tokens import label, parse_token, token_label
from service import errors
from service.bootstrap import Helper, build_helper, built_at_init
from service.helper_requests import (
    AcquireRequest,
    HelperAction,
    HelperRequest,
    ReleaseRequest,
    RenewRequest,
    StatusRequest,
)
from service.invocation import InvocationContext
from service.observability import powertools
from service.settings import HelperSettings

# The helper's only outside calls are DynamoDB's, through botocore: X-Ray patches it alone.
_powertools = powertools(patch_modules=("botocore",))
logger = _powertools.logger
tracer = _powertools.tracer
metrics = _powertools.metrics

# Requests are validated against their union directly, as Powertools' parse() does
# with this model (through a TypeAdapter too), without importing Powertools Parser for it.
REQUEST: TypeAdapter[HelperAction] = TypeAdapter(HelperRequest)


def parse_request(event: Any) -> HelperAction:
    """The event as a request: a string is read as a JSON document, anything else as the
    decoded document the runtime hands over (how Powertools' parse() treats events)."""
    if isinstance(event, str):
        return REQUEST.validate_json(event)
    return REQUEST.validate_python(event)


helper = built_at_init(lambda: build_helper(HelperSettings.from_environment(), metrics))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    try:
        app = helper()
    except ValidationError as error:  # the environment is wrong, not the event
        logger.exception("helper settings are invalid")
        document = errors.configuration_error(error).document()
    else:
        document = respond(event, context, app)
    return settle(document, metrics)


def settle(document: dict[str, Any], metrics: Metrics) -> dict[str, Any]:
    """An error answer that is the helper's own failure (a bug, its settings, its store) is
    counted (HelperErrors) and raised instead of returned, so that Lambda's Errors metric
    and the alarms see it; a caller's mistake is answered, and alarms no one. Callers read
    the document back either way."""
    if document.get("ok") is False and document["error"]["type"] in errors.FAULTS:
        errors.record_helper_error(metrics)
        raise errors.HelperFault(document)
    return document


def respond(event: Any, context: InvocationContext, app: Helper) -> dict[str, Any]:
    """Parse, act and answer; every failure becomes an error document."""
    try:
        request = parse_request(event)
    except ValidationError as error:
        issues = error.errors(include_url=False, include_input=False)
        logger.warning("rejected a malformed event", extra={"errors": issues})
        return errors.invalid_event(error).document()
    # Logs name a lease by its label: never a token, nor anything derived from its secret.
    token = getattr(request, "token", None)
    logger.append_keys(
        database=request.database, lease=token_label(parse_token(token)) if token else None
    )
    tracer.put_annotation("database", request.database)
    try:
        check_policy(request, app.settings)
        document = dispatch(request, app, context)
    except ConnleaseError as error:
        logger.warning("request refused", extra={"error": str(error)})
        tracer.put_annotation("outcome", type(error).__name__)
        return errors.known_error(error).document()
    except Exception:
        logger.exception("unexpected failure")
        tracer.put_annotation("outcome", errors.INTERNAL)
        return errors.internal_error(context.aws_request_id).document()
    tracer.put_annotation("outcome", document.get("outcome", "ok"))
    logger.info("handled", extra={"action": request.action, "outcome": document.get("outcome")})
    return document


def check_policy(request: HelperAction, settings: HelperSettings) -> None:
    """What this helper lets its callers ask for: its databases, and leases and waits no
    longer than its settings allow (a caller cannot take every slot for a day)."""
    if not settings.serves(request.database):
        raise InvalidInput(
            "database", f"{request.database!r} is not served by this helper (SERVED_DATABASES)"
        )
    ttl_ms = getattr(request, "ttl_ms", None)
    if ttl_ms is not None and ttl_ms > settings.max_lease_ttl_ms:
        raise InvalidInput(
            "ttl_ms", f"is {ttl_ms}; this helper grants at most {settings.max_lease_ttl_ms}"
        )
    wait_ms = getattr(request, "wait_ms", 0)
    if wait_ms > settings.max_wait_ms:
        raise InvalidInput(
            "wait_ms", f"is {wait_ms}; this helper waits at most {settings.max_wait_ms}"
        )


def dispatch(
    request: HelperAction,
    app: Helper,
    context: InvocationContext,
) -> dict[str, Any]:
    match request:
        case AcquireRequest():
            return acquire(request, app, context).document()
        case ReleaseRequest() if parse_token(request.token).fence is None:
            # A secret alone names no grant: a proposer giving back the grant whose answer
            # it lost. Keyed on it, a later grant of the same secret would get this answer.
            return release(request, app).document()
        case ReleaseRequest() | RenewRequest():
            document: dict[str, Any] = idempotent_action(app)(
                cast("LambdaContext", context), request=request
            )
            return document
        case StatusRequest():
            status = app.store.status(request.database, request.group)
            return StatusResponse.of(status).document()


@tracer.capture_method(capture_response=False)
def acquire(request: AcquireRequest, app: Helper, context: InvocationContext) -> AcquireResponse:
    ttl_ms = request.ttl_ms or app.settings.default_lease_ttl_ms
    started_ms = app.clock.now_ms()
    budget_ms = min(
        request.wait_ms,
        context.get_remaining_time_in_millis() - app.settings.timeout_margin_ms,
    )
    if budget_ms <= 0:
        result = app.store.acquire(
            request.database, request.holder, ttl_ms, request.secret, group=request.group
        )
        record_acquire(app.metrics, request.database, result, 0, request.group)
    else:
        try:
            result = acquire_within(
                app.store,
                request.database,
                holder=request.holder,
                ttl_ms=ttl_ms,
                deadline=Deadline(started_ms + budget_ms),
                clock=app.clock,
                backoff=app.backoff,
                rng=app.rng,
                metrics=app.metrics,
                secret=request.secret,
                group=request.group,
            )
        except NoCapacity as refused:
            if refused.last is None:
                raise
            result = refused.last
    waited_ms = app.clock.now_ms() - started_ms
    if isinstance(result, Granted):
        logger.append_keys(lease=label(result.lease), fence=result.lease.fence)
        return AcquireResponse(
            outcome="granted",
            database=request.database,
            lease=LeaseDoc.of(result.lease),
            token=result.token,
            remaining=result.remaining,
            reclaimed=[LeaseDoc.of(lease, labelled=True) for lease in result.reclaimed],
            waited_ms=waited_ms,
            others_waiting=result.others_waiting,
        )
    return AcquireResponse(
        outcome="no_capacity",
        database=request.database,
        remaining=0,
        waited_ms=waited_ms,
        limit=result.limit,
        in_use=result.in_use,
        retry_after_ms=result.retry_after_ms,
    )


@cache
def idempotent_action(app: Helper) -> Callable[..., dict[str, Any]]:
    """Release and renew, answered once per key (database, grant token, renewal number):
    the token holds the grant's fence, so no grant is answered with another's answer."""
    from service.idempotency import Once  # noqa: PLC0415 - not on the cold start

    return Once(app.settings, app.dynamodb, app.idempotency_store).wrap(
        lambda request: give_back_or_renew(request, app)
    )


def give_back_or_renew(request: ReleaseRequest | RenewRequest, app: Helper) -> dict[str, Any]:
    if isinstance(request, ReleaseRequest):
        return release(request, app).document()
    return renew(request, app).document()


@tracer.capture_method(capture_response=False)
def release(request: ReleaseRequest, app: Helper) -> ReleaseResponse:
    outcome = app.store.release(request.database, request.token)
    if outcome is ReleaseOutcome.RELEASED:
        app.metrics.record(Metric.LEASES_RELEASED, 1, request.database)
    return ReleaseResponse(outcome=outcome.value, database=request.database)


@tracer.capture_method(capture_response=False)
def renew(request: RenewRequest, app: Helper) -> RenewResponse:
    result = app.store.renew(request.database, request.token, request.ttl_ms)
    if isinstance(result, LeaseLost):
        return RenewResponse(outcome="lost", database=request.database)
    if result.remaining is not None:
        # Warm holders renew instead of acquiring: the gauge would go stale without this.
        app.metrics.record(Metric.REMAINING_CONNECTIONS, result.remaining, request.database)
    return RenewResponse(
        outcome="renewed",
        database=request.database,
        lease=LeaseDoc.of(result.lease),
        remaining=result.remaining,
        others_waiting=result.others_waiting,
    )


# The init phase ends here: what it made stays for the execution environment's life.
gc.freeze()
if _collecting:
    gc.enable()
