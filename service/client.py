"""The client library: what a function that talks to MySQL uses to stay within its quota.

    leases = ConnectionLeases(lambda_leases("connlease-helper"), "orders-mysql")

    def handler(event, context):
        with leases.connect(open_mysql, context=context) as connection:
            ...  # the lease is held as long as the connection is open

One interface, two ways to reach the quota: `lambda_leases` invokes the helper function
(the original sample's architecture), `direct_leases` talks to DynamoDB in-process (one
network hop less). Either way a lease is taken before connecting, waiting with jittered
backoff until the invocation's deadline, and always given back after closing.

Under steady load, `keep_warm=KeepWarm()` lets an execution environment keep its lease and
connection across invocations for up to `hold_ms` (`domain.warm` decides, `service.warm_client`
does the calls).
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from adapters.aws import INVOKE_CONFIG, SDK_CONFIG, LazyClient
from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from domain import (
    Backoff,
    Clock,
    ConnleaseError,
    CorruptQuota,
    Deadline,
    DecorrelatedJitter,
    HelperFailed,
    InvalidInput,
    KeepWarm,
    Leases,
    LeaseStore,
    MetricsSink,
    NoCapacity,
    RequestInProgress,
    StoreUnavailable,
    UnknownDatabase,
)
from domain.groups import check_group
from domain.model import (
    MAX_HOLDER_LENGTH,
    MAX_WAIT_MS,
    SKEW_MARGIN_MS,
    check_database,
    check_ttl_ms,
    check_wait_ms,
)
from service.invocation import InvocationContext
from service.lease_bound import LeaseBound
from service.lease_calls import LeaseCalls, close_quietly
from service.warm_client import WarmClient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient

    from adapters.lambda_invoke import LambdaLeases

# One import line gives a caller what it builds and what it catches.
__all__ = [
    "ConnectionLeases",
    "ConnleaseError",
    "CorruptQuota",
    "HelperFailed",
    "InvalidInput",
    "KeepWarm",
    "NoCapacity",
    "RequestInProgress",
    "StoreUnavailable",
    "UnknownDatabase",
    "direct_leases",
    "lambda_leases",
]

Connection = TypeVar("Connection")

# How long a give-back the store does not answer is retried, by default (ConnectionLeases).
RELEASE_BUDGET_MS = 5_000

# What the client reads of Lambda's context (InvocationContext).
_CONTEXT_NEEDS = ("function_name", "aws_request_id", "get_remaining_time_in_millis")


def lambda_leases(function: str, client: LambdaClient | None = None) -> LambdaLeases:
    """Leases through the helper function (name or ARN), invoked synchronously. The default
    client is made on first use, with short timeouts."""
    # Imported here: the invoke adapter brings pydantic and the wire contract, which
    # direct-mode callers never need on their cold start.
    from adapters.lambda_invoke import LambdaLeases  # noqa: PLC0415

    return LambdaLeases(
        client or cast("LambdaClient", LazyClient("lambda", INVOKE_CONFIG)), function
    )


def direct_leases(
    table_name: str, client: DynamoDBClient | None = None, clock: Clock | None = None
) -> LeaseStore:
    """Leases straight from the DynamoDB table, in-process. The default client is made on
    first use, with short timeouts; `AWS_ENDPOINT_URL_DYNAMODB` points it elsewhere."""
    return DynamoDBLeaseStore(
        client or cast("DynamoDBClient", LazyClient("dynamodb", SDK_CONFIG)),
        table_name,
        clock or SystemClock(),
    )


# Names the caller's group when it is not the function's own name.
GROUP_ENV = "CONNLEASE_GROUP"


def default_group() -> str | None:
    """A caller's group when it names none (domain.groups): CONNLEASE_GROUP, else the
    function's own name; None (the pool) outside Lambda."""
    for name in (GROUP_ENV, "AWS_LAMBDA_FUNCTION_NAME"):
        value = os.environ.get(name)
        if value:
            return check_group(value, name)
    return None


def holder_of(context: InvocationContext) -> str:
    """`function/request-id-prefix`, cut to fit: who holds a lease, for `status` (the
    request id's first 8 characters find the invocation in the logs)."""
    name = context.function_name.encode("ascii", "replace").decode()
    return f"{name[: MAX_HOLDER_LENGTH - 9]}/{context.aws_request_id[:8]}"


def check_context(context: object) -> InvocationContext:
    """Lambda's context object, or a stand-in with what the client reads of it."""
    missing = [name for name in _CONTEXT_NEEDS if not hasattr(context, name)]
    if missing:
        raise _not_a_context(context, missing)
    return context  # type: ignore[return-value]


def _not_a_context(context: object, missing: list[str]) -> InvalidInput:
    return InvalidInput(
        "context",
        f"needs Lambda's context object, or one with {', '.join(_CONTEXT_NEEDS)}; "
        f"got {type(context).__name__} without {', '.join(missing)}",
    )


class ConnectionLeases:
    """Holds a lease for as long as a connection to one database is open: by default one
    lease per `connect()`, given back when the connection closes.

    A give-back the store does not answer is retried for up to `release_budget_ms` (and
    never past the lease's end): long enough to ride out throttling and lost answers,
    short enough that an outage does not hold the invocation until its timeout.

    With `keep_warm`, the lease and its connection outlive the invocation: the next one in
    the same execution environment reuses both (see `service.warm_client`).
    """

    def __init__(
        self,
        leases: Leases,
        database: str,
        *,
        safety_margin_ms: int = 1_000,
        release_budget_ms: int = RELEASE_BUDGET_MS,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: MetricsSink | None = None,
        keep_warm: KeepWarm | None = None,
        group: str | None = None,
    ) -> None:
        self.database = check_database(database)
        self.group = default_group() if group is None else check_group(group)
        self.safety_margin_ms = check_wait_ms(safety_margin_ms, "safety_margin_ms")
        check_wait_ms(release_budget_ms, "release_budget_ms")
        if keep_warm is not None and not isinstance(keep_warm, KeepWarm):
            raise InvalidInput("keep_warm", f"must be a KeepWarm, got {type(keep_warm).__name__}")
        self._keep_warm = keep_warm
        self._clock = clock or SystemClock()
        self._calls = LeaseCalls(
            leases,
            self.database,
            backoff=backoff or DecorrelatedJitter(base_ms=20, cap_ms=1_000),
            clock=self._clock,
            rng=rng or random.Random(),
            release_budget_ms=release_budget_ms,
            metrics=metrics,
            group=self.group,
        )
        self._warm = WarmClient(self._calls, keep_warm) if keep_warm else None
        self._last_wait_ms = 0

    # Read-only: the lease calls and the warm path were built with them.
    @property
    def leases(self) -> Leases:
        return self._calls.leases

    @property
    def keep_warm(self) -> KeepWarm | None:
        return self._keep_warm

    @property
    def release_budget_ms(self) -> int:
        return self._calls.release_budget_ms

    @property
    def last_wait_ms(self) -> int:
        """How long the last `connect()` waited for its lease, in milliseconds."""
        return self._warm.last_wait_ms if self._warm else self._last_wait_ms

    @contextmanager
    def connect(
        self,
        connect: Callable[[], Connection],
        *,
        context: InvocationContext | None = None,
        wait_budget_ms: int | None = None,
        ttl_ms: int | None = None,
    ) -> Iterator[Connection]:
        """Take a lease, open the connection, yield it; then close it and give the lease
        back, whether the body returned, raised, or the connect itself failed.

        Waits for a lease until `wait_budget_ms` from now, or else until the invocation's
        remaining time less the safety margin (no context: one attempt). The lease lasts
        `ttl_ms`, or else until the invocation's own deadline: a holder that is killed
        cannot keep it longer than it could have run. Raises NoCapacity when no lease came.
        A pymysql connection cannot outlive the lease (`service.lease_bound`): its
        statements are bounded by what is left of it, and it is closed when it ends.

        With `keep_warm` the connection and lease are kept after a body that returned,
        and the lease lasts the hold, then as long as an invocation may hold the
        connection (`ttl_ms`, else its remaining time), then the connection's idle close.
        That is also how long an environment frozen after its last invocation keeps its
        slot: a `ttl_ms` well under the function's timeout keeps it short.
        """
        started_ms = self._clock.now_ms()
        if context is not None:
            context = check_context(context)
        remaining_ms = context.get_remaining_time_in_millis() if context else None
        if wait_budget_ms is None:
            # No invocation outlives MAX_WAIT_MS; a stand-in context may say it has longer.
            budget_ms = min(max(0, (remaining_ms or 0) - self.safety_margin_ms), MAX_WAIT_MS)
        else:
            budget_ms = check_wait_ms(wait_budget_ms, "wait_budget_ms")
        deadline = Deadline(started_ms + budget_ms)
        holder = holder_of(context) if context else ""
        if ttl_ms is not None:
            check_ttl_ms(ttl_ms)
        if self._warm is not None:
            invocation_ms = ttl_ms if ttl_ms is not None else remaining_ms
            if invocation_ms is None:
                raise InvalidInput(
                    "ttl_ms", "a warm lease needs the invocation's context or a ttl_ms"
                )
            with self._warm.connect(
                connect,
                started_ms=started_ms,
                invocation_ms=invocation_ms,
                deadline=deadline,
                holder=holder,
            ) as connection:
                yield connection
            return
        # Without an explicit TTL a lease ends with the invocation, however long the wait:
        # a skew margin before its deadline, so that the connection is closed by the time
        # Lambda ends the invocation, and the lease may be reclaimed at that deadline.
        lease_until_ms = (
            started_ms + remaining_ms - SKEW_MARGIN_MS
            if ttl_ms is None and remaining_ms is not None
            else None
        )
        if lease_until_ms is not None and wait_budget_ms is None:
            # A lease granted later would end before the body could use it.
            usable_by_ms = max(started_ms, lease_until_ms - self.safety_margin_ms)
            deadline = Deadline(min(deadline.at_ms, usable_by_ms))
        grant = self._calls.acquire(deadline, holder, ttl_ms, lease_until_ms)
        self._last_wait_ms = self._clock.now_ms() - started_ms
        try:
            connection = connect()
            bound = LeaseBound(connection, self._clock)
            try:
                bound.start(grant.lease.expires_at_ms)
                yield connection
            finally:
                bound.stop()
                close_quietly(connection)
        finally:
            self._calls.give_back(grant.lease, grant.token, closed_at_ms=self._clock.now_ms())

    def handler(
        self, connect: Callable[[], Any], **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[[Any, Any], Any]]:
        """Decorate a Lambda handler `(event, context, connection)` so that it runs inside
        `connect(...)`; `options` are those of `connect`. The context must be Lambda's (or
        a stand-in with its `function_name`, `aws_request_id` and
        `get_remaining_time_in_millis`): the lease ends with the invocation."""

        def decorate(handler: Callable[..., Any]) -> Callable[[Any, Any], Any]:
            @functools.wraps(handler)
            def run(event: Any, context: Any) -> Any:
                if context is None:  # connect() checks any other context
                    raise _not_a_context(context, list(_CONTEXT_NEEDS))
                with self.connect(connect, context=context, **options) as connection:
                    return handler(event, context, connection)

            return run

        return decorate

    def close(self) -> None:
        """Close a kept connection and give its lease back (warm mode; else a no-op)."""
        if self._warm is not None:
            self._warm.close()
