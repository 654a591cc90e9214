"""The client's warm path: an execution environment keeps its lease and MySQL connection
across invocations, for a hold (`domain.warm` decides when to renew, replace or give back;
this module does the calls and looks after the connection).

A frozen environment cannot close its connection, so the server must: each kept connection
gets MySQL's `wait_timeout` set to the idle close, and its lease outlasts that. A kept
connection is reused only once reset (`LeaseBound.clean`: pymysql's session reset, another
driver's `reset_session()`); one that cannot be is closed, and the next invocation opens a
new one under the same lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from domain import ConnleaseError, Deadline, InvalidInput, KeepWarm, Renewed
from domain.warm import Kept, WarmStep, after_turn, someone_waits
from service.lease_bound import LeaseBound
from service.lease_calls import LeaseCalls, close_quietly

log = logging.getLogger(__name__)

Connection = TypeVar("Connection")


@dataclass
class _KeptConnection:
    """The environment's lease and the connection it covers (None until opened)."""

    kept: Kept
    token: str = field(repr=False)  # the grant's: renewals keep it; never shown
    connection: Any = None
    session: object = None  # the server's id for the connection's session, where known
    bound: LeaseBound | None = None  # its bounds by the lease (pymysql), and its reset
    bound_until_ms: int = 0  # the lease end the bounds were set for


class WarmClient:
    """One execution environment's kept lease and connection. Serves one invocation at a
    time: nested or concurrent use is refused."""

    def __init__(self, calls: LeaseCalls, warm: KeepWarm) -> None:
        self._calls = calls
        self._warm = warm
        self._kept: _KeptConnection | None = None
        self._serving = threading.Lock()
        self._turn_until_ms: int | None = None  # after giving back for a waiter: stay away
        self.last_wait_ms = 0

    @contextmanager
    def connect(
        self,
        connect: Callable[[], Connection],
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
            kept = self._entry(started_ms, invocation_ms, deadline, holder)
            try:
                self._open_or_bound(kept, connect)
                yield kept.connection
            except BaseException:
                # The connection's state is unknown after a failure: start afresh next time.
                self._used(kept)
                self.close()
                raise
            now_ms = self._used(kept)
            if not self._warm.covers(kept.kept.lease, now_ms):
                # The body ran past what the lease covers: an idle connection left open now
                # could outlive it. Close it while the lease still counts, if it does.
                self.close()
            elif self._warm.give_back_after(kept.kept, now_ms):
                self.close()
                self._start_turn(now_ms)
            elif kept.bound is not None and not kept.bound.clean(
                kept.kept.lease.expires_at_ms, self._warm.idle_close_s
            ):
                # Whatever this invocation left in its session cannot be cleared (or the
                # driver offers no reset): the next one gets a new connection under the
                # same lease.
                close_quietly(kept.connection)
                kept.connection = None
        finally:
            self._serving.release()

    def close(self) -> None:
        """Close the kept connection and give its lease back."""
        kept, self._kept = self._kept, None
        if kept is None:
            return
        if kept.bound is not None:
            kept.bound.stop()
        close_quietly(kept.connection)
        # Idle since its last use, the connection was gone by then at the latest: the server
        # closes it itself (on the paths that close it just after a use, the two agree).
        closed_at_ms = min(
            self._calls.clock.now_ms(), kept.kept.last_used_ms + self._warm.after_last_use_ms
        )
        self._calls.give_back(kept.kept.lease, kept.token, closed_at_ms=closed_at_ms)

    def _entry(
        self, started_ms: int, invocation_ms: int, deadline: Deadline, holder: str
    ) -> _KeptConnection:
        """The kept lease, renewed if it must be, or a new one; its connection kept only
        while the server still has it."""
        warm, clock = self._warm, self._calls.clock
        kept = self._kept
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
            backoff = self._calls.backoff
            if self._turn_until_ms is not None:
                # It gave its lease back for a waiter: stay away a turn, then poll steadily.
                backoff = after_turn(backoff)
                now_ms = clock.now_ms()
                if self._turn_until_ms > now_ms:
                    clock.sleep_ms(deadline.clip(self._turn_until_ms - now_ms, now_ms))
                self._turn_until_ms = None
            grant = self._calls.acquire(
                deadline, holder, warm.ttl_ms(invocation_ms), backoff=backoff
            )
            now_ms = clock.now_ms()
            contended = someone_waits(grant.others_waiting, grant.remaining)
            kept = _KeptConnection(Kept(grant.lease, now_ms, now_ms, contended), grant.token)
            self._kept = kept
        elif warm.connection_stale(kept.kept, clock.now_ms()) or not _same_session(kept):
            close_quietly(kept.connection)
            kept.connection = None
        elif kept.session is None:
            # A driver that does not tell its session may have reconnected unseen: a new
            # session would have the server's default idle timeout (hours), so set it again.
            _close_when_idle(kept.connection, warm.idle_close_s)
        if kept.connection is None and kept.bound is not None:
            kept.bound.stop()
            kept.bound = None
        self.last_wait_ms = clock.now_ms() - started_ms
        return kept

    def _open_or_bound(self, kept: _KeptConnection, connect: Callable[[], Any]) -> None:
        """A new connection, bounded by the lease; or the kept one, its bounds following a
        renewed lease."""
        lease_end_ms = kept.kept.lease.expires_at_ms
        if kept.connection is None:
            kept.connection = connect()
            kept.bound = LeaseBound(kept.connection, self._calls.clock)
            if kept.bound.bounded:  # its idle close is among its bounds
                kept.bound.start(lease_end_ms, self._warm.idle_close_s)
                kept.session = kept.connection.server_thread_id
            else:
                kept.session = _close_when_idle(kept.connection, self._warm.idle_close_s)
        elif kept.bound is not None:
            kept.bound.extend(lease_end_ms, renewed=lease_end_ms != kept.bound_until_ms)
        kept.bound_until_ms = lease_end_ms

    def _start_turn(self, gave_back_at_ms: int) -> None:
        """It gave its lease back for a waiter: it stays away about as long as one sleeps."""
        first_sleep_ms = next(after_turn(self._calls.backoff).delays(self._calls.rng))
        self._turn_until_ms = gave_back_at_ms + first_sleep_ms

    def _used(self, kept: _KeptConnection) -> int:
        now_ms = self._calls.clock.now_ms()
        kept.kept = replace(kept.kept, last_used_ms=now_ms)
        return now_ms

    def _renew(
        self, kept: _KeptConnection, ttl_ms: int, *, new_hold: bool
    ) -> _KeptConnection | None:
        """Extend the kept lease; if that fails, drop it (the caller takes a new one)."""
        try:
            result = self._calls.renew(kept.token, ttl_ms)
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
                self._calls.clock.now_ms()
                if new_hold and not contended
                else kept.kept.granted_at_ms
            ),
            contended=contended,
        )
        return kept


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


def _same_session(kept: _KeptConnection) -> bool:
    """False if the connection was closed or reconnected (pymysql's ping(reconnect=True)
    opens a new session, without the idle timeout) since it was opened."""
    connection = kept.connection
    if connection is None or not getattr(connection, "open", True):
        return False
    return getattr(connection, "server_thread_id", None) == kept.session
