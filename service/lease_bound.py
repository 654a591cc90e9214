"""A connection that cannot outlive its lease, and a warm one that starts every invocation
clean (adapters.mysql_session does the MySQL side).

For a pymysql connection, on every use: each statement is bounded by what is left of the
lease (the server's statement timeout, and the socket's read and write timeouts), and a
guard shuts the socket down when the lease ends, whatever the body is doing. A kept
connection is reset after each invocation (COM_RESET_CONNECTION, one round trip): what the
invocation left behind (a transaction, variables, temporary tables, locks, prepared
statements) is gone before the next one, and a connection that cannot be reset is closed.

Other drivers are left as they are: connlease cannot reach into their sockets.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from domain import Clock

log = logging.getLogger(__name__)

# The holder stops using its connection this long before its lease ends by its own clock:
# time for the socket to close and the server to see it go, so that a holder whose clock
# is the whole skew margin behind is gone when a reclaimer takes its place.
CLOSE_LEAD_MS = 250


def _is_pymysql(connection: object) -> bool:
    # Only a program that imported pymysql can hold one of its connections.
    pymysql = sys.modules.get("pymysql")
    return pymysql is not None and isinstance(connection, pymysql.connections.Connection)


class LeaseBound:
    """One connection held under a lease ending at epoch ms `lease_end_ms` (the store's
    clock, read on this host's: the skew margin on reclaims covers the difference)."""

    def __init__(self, connection: Any, clock: Clock) -> None:
        self._connection = connection if _is_pymysql(connection) else None
        self._clock = clock
        self._guard: Any = None
        self._fired = False

    @property
    def bounded(self) -> bool:
        return self._connection is not None

    @property
    def fired(self) -> bool:
        """The lease ended while the connection was in use: the guard closed it."""
        return self._fired or (self._guard is not None and self._guard.fired)

    def start(self, lease_end_ms: int, idle_close_s: int | None = None) -> None:
        """A new connection: its session's bounds in one statement, then the guard. With
        no `idle_close_s`, the server closes the session once idle for as long as the lease
        had left: the guard cannot run in a frozen process, the server can."""
        if self._connection is None:
            return
        from adapters.mysql_session import SessionBounds, prepare  # noqa: PLC0415

        left_ms = self._left_ms(lease_end_ms)
        idle_s = idle_close_s if idle_close_s is not None else -(-left_ms // 1000)
        prepare(self._connection, SessionBounds(idle_s, left_ms))
        self._arm(lease_end_ms)

    def extend(self, lease_end_ms: int, *, renewed: bool) -> None:
        """The next invocation on a kept connection; `renewed`: the lease now ends later,
        and the session's statement bound follows it (one statement)."""
        if self._connection is None:
            return
        if renewed:
            from adapters.mysql_session import SessionBounds, prepare  # noqa: PLC0415

            prepare(self._connection, SessionBounds(None, self._left_ms(lease_end_ms)))
        self._arm(lease_end_ms)

    def clean(self, lease_end_ms: int, idle_close_s: int) -> bool:
        """After an invocation on a kept connection: reset its session, bounds restored,
        in one round trip; False if it cannot be made clean (close it, do not reuse it)."""
        self.stop()
        if self._connection is None:
            return True
        if self.fired:
            return False
        from adapters.mysql_session import SessionBounds, reset  # noqa: PLC0415

        clean = reset(self._connection, SessionBounds(idle_close_s, self._left_ms(lease_end_ms)))
        if not clean:
            log.warning("a kept connection could not be reset; it is closed, not reused")
        return clean

    def stop(self) -> None:
        """Between invocations (a frozen environment thaws past any deadline) or at the end."""
        guard, self._guard = self._guard, None
        if guard is None:
            return
        guard.cancel()
        self._fired = guard.fired
        if guard.fired:
            log.warning("the lease ended while its connection was in use: it was closed")

    def _left_ms(self, lease_end_ms: int) -> int:
        """How long the connection may still be used: the lease, less the close lead
        (a quarter of a short lease at most)."""
        left_ms = lease_end_ms - self._clock.now_ms()
        return max(1, left_ms - min(CLOSE_LEAD_MS, left_ms // 4))

    def _arm(self, lease_end_ms: int) -> None:
        from adapters.mysql_session import LeaseGuard, set_socket_timeouts  # noqa: PLC0415

        connection = self._connection
        assert connection is not None
        left_s = self._left_ms(lease_end_ms) / 1000
        set_socket_timeouts(connection, left_s)
        deadline = time.monotonic() + left_s
        if self._guard is None:
            self._guard = LeaseGuard(connection, deadline)
        else:
            self._guard.extend(deadline)
