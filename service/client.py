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
connection across invocations for up to `hold_ms` (see `domain.warm`).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import boto3

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from domain import (
    Backoff,
    Clock,
    ConnleaseError,
    Deadline,
    DecorrelatedJitter,
    Granted,
    InvalidInput,
    Lease,
    Leases,
    LeaseStore,
    MetricsSink,
    Renewed,
    acquire_within,
)
from domain.model import (
    MAX_HOLDER_LENGTH,
    check_database,
    check_ttl_ms,
    check_wait_ms,
)
from domain.services import release_within
from domain.warm import KeepWarm, Kept, WarmStep, after_turn, someone_waits
from service.invocation import InvocationContext

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient

    from adapters.lambda_invoke import LambdaLeases

log = logging.getLogger(__name__)

Connection = TypeVar("Connection")


@dataclass
class _WarmConnection:
    """A warm environment's lease and the connection it covers (None until opened)."""

    kept: Kept
    connection: Any = None
    session: object = None  # the server's id for the connection's session, where known


def lambda_leases(function: str, client: LambdaClient | None = None) -> LambdaLeases:
    """Leases through the helper function (name or ARN), invoked synchronously."""
    # Imported here: the invoke adapter brings pydantic and the wire contract, which
    # direct-mode callers never need on their cold start.
    from adapters.lambda_invoke import LambdaLeases  # noqa: PLC0415

    return LambdaLeases(client or boto3.client("lambda"), function)


def direct_leases(
    table_name: str, client: DynamoDBClient | None = None, clock: Clock | None = None
) -> LeaseStore:
    """Leases straight from the DynamoDB table, in-process."""
    return DynamoDBLeaseStore(
        client or boto3.client("dynamodb"), table_name, clock or SystemClock()
    )


def holder_of(context: InvocationContext) -> str:
    """`function/request-id-prefix`, cut to fit: who holds a lease, for `status` (the
    request id's first 8 characters find the invocation in the logs)."""
    name = context.function_name.encode("ascii", "replace").decode()
    return f"{name[: MAX_HOLDER_LENGTH - 9]}/{context.aws_request_id[:8]}"


class ConnectionLeases:
    """Holds a lease for as long as a connection to one database is open: by default one
    lease per `connect()`, given back when the connection closes.

    A give-back the store does not answer is retried for up to `release_budget_ms` (and
    never past the lease's end): long enough to ride out throttling and lost answers,
    short enough that an outage does not hold the invocation until its timeout.

    With `keep_warm`, the lease and its connection outlive the invocation: the next one in
    the same execution environment reuses both, until the hold is over (and others wait)
    or a body raises. Such an instance serves one invocation at a time (it refuses nested
    or concurrent use) and needs a DB-API connection to MySQL; the body must neither close
    nor reconnect it (a reconnected session would lose the idle timeout; a new connection
    is opened if it finds one closed or replaced).
    """

    def __init__(
        self,
        leases: Leases,
        database: str,
        *,
        safety_margin_ms: int = 1_000,
        release_budget_ms: int = 5_000,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: MetricsSink | None = None,
        keep_warm: KeepWarm | None = None,
    ) -> None:
        self.leases = leases
        self.database = check_database(database)
        self.safety_margin_ms = check_wait_ms(safety_margin_ms, "safety_margin_ms")
        self.release_budget_ms = check_wait_ms(release_budget_ms, "release_budget_ms")
        if keep_warm is not None and not isinstance(keep_warm, KeepWarm):
            raise InvalidInput("keep_warm", f"must be a KeepWarm, got {type(keep_warm).__name__}")
        self.keep_warm = keep_warm
        self._backoff = backoff or DecorrelatedJitter(base_ms=20, cap_ms=1_000)
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._metrics = metrics
        self._warm: _WarmConnection | None = None
        self._serving = threading.Lock()
        self._turn_until_ms: int | None = None  # after giving back for a waiter: stay away
        self.last_wait_ms = 0

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

        With `keep_warm` the connection and lease are kept after a body that returned,
        and the lease lasts the hold, then as long as an invocation may hold the
        connection (`ttl_ms`, else its remaining time), then the connection's idle close.
        That is also how long an environment frozen after its last invocation keeps its
        slot: a `ttl_ms` well under the function's timeout keeps it short.
        """
        started_ms = self._clock.now_ms()
        remaining_ms = context.get_remaining_time_in_millis() if context else None
        if wait_budget_ms is None:
            wait_budget_ms = max(0, (remaining_ms or 0) - self.safety_margin_ms)
        check_wait_ms(wait_budget_ms, "wait_budget_ms")
        deadline = Deadline(started_ms + wait_budget_ms)
        holder = holder_of(context) if context else ""
        if self.keep_warm is not None:
            if ttl_ms is not None:
                check_ttl_ms(ttl_ms)
            invocation_ms = ttl_ms if ttl_ms is not None else remaining_ms
            if invocation_ms is None:
                raise InvalidInput(
                    "ttl_ms", "a warm lease needs the invocation's context or a ttl_ms"
                )
            with self._connect_warm(
                connect,
                self.keep_warm,
                started_ms=started_ms,
                invocation_ms=invocation_ms,
                deadline=deadline,
                holder=holder,
            ) as connection:
                yield connection
            return
        # Without an explicit TTL a lease ends with the invocation, however long the wait.
        lease_until_ms = (
            started_ms + remaining_ms if ttl_ms is None and remaining_ms is not None else None
        )
        grant = self._acquire(deadline, holder, ttl_ms, lease_until_ms)
        self.last_wait_ms = self._clock.now_ms() - started_ms
        try:
            connection = connect()
            try:
                yield connection
            finally:
                _close(connection)
        finally:
            self._give_back(grant.lease, closed_at_ms=self._clock.now_ms())

    def handler(
        self, connect: Callable[[], Any], **options: Any
    ) -> Callable[[Callable[..., Any]], Callable[[Any, Any], Any]]:
        """Decorate a Lambda handler `(event, context, connection)` so that it runs inside
        `connect(...)`; `options` are those of `connect`."""

        def decorate(handler: Callable[..., Any]) -> Callable[[Any, Any], Any]:
            @functools.wraps(handler)
            def run(event: Any, context: Any) -> Any:
                with self.connect(connect, context=context, **options) as connection:
                    return handler(event, context, connection)

            return run

        return decorate

    def close(self) -> None:
        """Close a kept connection and give its lease back (warm mode; else a no-op)."""
        warm, self._warm = self._warm, None
        if warm is None:
            return
        _close(warm.connection)
        after_ms = self.keep_warm.after_last_use_ms if self.keep_warm else 0
        # Idle since its last use, the connection was gone by then at the latest: the server
        # closes it itself (on the paths that close it just after a use, the two agree).
        closed_at_ms = min(self._clock.now_ms(), warm.kept.last_used_ms + after_ms)
        self._give_back(warm.kept.lease, closed_at_ms=closed_at_ms)

    @contextmanager
    def _connect_warm(
        self,
        connect: Callable[[], Connection],
        warm: KeepWarm,
        *,
        started_ms: int,
        invocation_ms: int,
        deadline: Deadline,
        holder: str,
    ) -> Iterator[Connection]:
        if not self._serving.acquire(blocking=False):
            raise InvalidInput(
                "keep_warm",
                "a warm ConnectionLeases serves one invocation at a time: nested or "
                "concurrent connect() calls need their own instance",
            )
        try:
            kept = self._warm_entry(warm, started_ms, invocation_ms, deadline, holder)
            try:
                if kept.connection is None:
                    kept.connection = connect()
                    kept.session = _close_when_idle(kept.connection, warm.idle_close_s)
                yield kept.connection
            except BaseException:
                # The connection's state is unknown after a failure: start afresh next time.
                self._used(kept)
                self.close()
                raise
            now_ms = self._used(kept)
            if not warm.covers(kept.kept.lease, now_ms):
                # The body ran past what the lease covers: an idle connection left open now
                # could outlive it. Close it while the lease still counts, if it does.
                self.close()
            elif warm.give_back_after(kept.kept, now_ms):
                self.close()
                self._start_turn(now_ms)
        finally:
            self._serving.release()

    def _warm_entry(
        self,
        warm: KeepWarm,
        started_ms: int,
        invocation_ms: int,
        deadline: Deadline,
        holder: str,
    ) -> _WarmConnection:
        """The kept lease, renewed if it must be, or a new one; its connection kept only
        while the server still has it."""
        kept = self._warm
        if kept is not None:
            step = warm.on_entry(kept.kept, started_ms, started_ms + invocation_ms)
            if step is WarmStep.RENEW:
                ttl_ms = warm.renewal_ttl_ms(kept.kept, started_ms, invocation_ms)
                kept = self._renew(kept, ttl_ms, new_hold=False)
            elif step is WarmStep.NEW_HOLD:
                kept = self._renew(kept, warm.ttl_ms(invocation_ms), new_hold=True)
            elif step is WarmStep.REPLACE:
                self.close()
                self._start_turn(started_ms)
                kept = None
        if kept is None:
            backoff = self._backoff
            if self._turn_until_ms is not None:
                # It gave its lease back for a waiter: stay away a turn, then poll steadily.
                backoff = after_turn(self._backoff)
                now_ms = self._clock.now_ms()
                if self._turn_until_ms > now_ms:
                    self._clock.sleep_ms(deadline.clip(self._turn_until_ms - now_ms, now_ms))
                self._turn_until_ms = None
            grant = self._acquire(deadline, holder, warm.ttl_ms(invocation_ms), None, backoff)
            now_ms = self._clock.now_ms()
            contended = someone_waits(grant.others_waiting, grant.remaining)
            kept = _WarmConnection(Kept(grant.lease, now_ms, now_ms, contended))
            self._warm = kept
        elif warm.connection_stale(kept.kept, self._clock.now_ms()) or not _same_session(kept):
            _close(kept.connection)
            kept.connection = None
        elif kept.session is None:
            # A driver that does not tell its session may have reconnected unseen: a new
            # session would have the server's default idle timeout (hours), so set it again.
            _close_when_idle(kept.connection, warm.idle_close_s)
        self.last_wait_ms = self._clock.now_ms() - started_ms
        return kept

    def _start_turn(self, gave_back_at_ms: int) -> None:
        """It gave its lease back for a waiter: it stays away about as long as one sleeps."""
        self._turn_until_ms = gave_back_at_ms + next(after_turn(self._backoff).delays(self._rng))

    def _used(self, kept: _WarmConnection) -> int:
        now_ms = self._clock.now_ms()
        kept.kept = replace(kept.kept, last_used_ms=now_ms)
        return now_ms

    def _renew(
        self, kept: _WarmConnection, ttl_ms: int, *, new_hold: bool
    ) -> _WarmConnection | None:
        """Extend the kept lease; if that fails, drop it (the caller takes a new one)."""
        try:
            result = self.leases.renew(self.database, kept.kept.lease.id, ttl_ms)
        except ConnleaseError:
            log.warning("could not renew warm lease %s", kept.kept.lease.id, exc_info=True)
            result = None
        if not isinstance(result, Renewed):
            self.close()
            return None
        contended = someone_waits(result.others_waiting, result.remaining)
        kept.kept = replace(
            kept.kept,
            lease=result.lease,
            # Hearing of a waiter, it keeps its hold over: it gives back after this invocation.
            granted_at_ms=(
                self._clock.now_ms() if new_hold and not contended else kept.kept.granted_at_ms
            ),
            contended=contended,
        )
        return kept

    def _acquire(
        self,
        deadline: Deadline,
        holder: str,
        ttl_ms: int | None,
        lease_until_ms: int | None,
        backoff: Backoff | None = None,
    ) -> Granted:
        return acquire_within(
            self.leases,
            self.database,
            deadline=deadline,
            clock=self._clock,
            backoff=backoff or self._backoff,
            rng=self._rng,
            holder=holder,
            ttl_ms=ttl_ms,
            metrics=self._metrics,
            lease_until_ms=lease_until_ms,
        )

    def _give_back(self, lease: Lease, *, closed_at_ms: int) -> None:
        # Retried while the lease lives (within a budget): a release that fails for good
        # leaves its slot unusable until the TTL.
        now_ms = self._clock.now_ms()
        deadline = Deadline(min(lease.expires_at_ms, now_ms + self.release_budget_ms))
        try:
            outcome = release_within(
                self.leases,
                self.database,
                lease.id,
                deadline=deadline,
                clock=self._clock,
                backoff=self._backoff,
                rng=self._rng,
            )
        except ConnleaseError:
            # Never hide the body's own outcome: the lease expires with its TTL anyway.
            log.warning(
                "could not give lease %s back; it expires at %d",
                lease.id,
                lease.expires_at_ms,
                exc_info=True,
            )
            return
        if closed_at_ms >= lease.expires_at_ms:
            # The lease expired while the connection was open, and its slot may have been
            # granted again (if it was, this give-back found it ALREADY_RELEASED): the
            # database may have seen one connection more than the quota.
            log.warning(
                "lease %s expired before its connection closed (%s); raise its TTL",
                lease.id,
                outcome,
            )


def _close_when_idle(connection: Any, seconds: int) -> object:
    """Have the server close the connection after `seconds` idle (MySQL's wait_timeout): a
    frozen environment cannot close it, and its lease ends soon after. Returns the session
    it was set on, where the driver tells (pymysql's server_thread_id)."""
    if not callable(getattr(connection, "cursor", None)):
        raise InvalidInput(
            "connect",
            f"warm leases need a DB-API connection to MySQL, to set its wait_timeout; "
            f"got {type(connection).__name__}",
        )
    cursor = connection.cursor()
    try:
        cursor.execute(f"SET SESSION wait_timeout = {int(seconds)}")
    finally:
        cursor.close()
    return getattr(connection, "server_thread_id", None)


def _same_session(kept: _WarmConnection) -> bool:
    """False if the connection was closed or reconnected (pymysql's ping(reconnect=True)
    opens a new session, without the idle timeout) since it was opened."""
    connection = kept.connection
    if connection is None or not getattr(connection, "open", True):
        return False
    return getattr(connection, "server_thread_id", None) == kept.session


def _close(connection: object) -> None:
    close = getattr(connection, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.warning("closing the connection failed", exc_info=True)
