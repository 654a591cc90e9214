"""A connection that cannot outlive its lease, and a warm one that starts every invocation
clean (adapters.mysql_session does the MySQL side).

For a pymysql connection, on every use: each statement is bounded by what is left of the
lease (the server's statement and lock-wait timeouts, tightened before each statement in
the statement's own socket write, and the socket's read and write timeouts), and a guard
shuts the socket down when the lease ends, whatever the body is doing. A kept connection is
reset after each invocation (COM_RESET_CONNECTION, one round trip): what the invocation
left behind (a transaction, variables, temporary tables, locks, prepared statements) is
gone before the next one, and a connection that cannot be reset is closed.

Other drivers are not bounded (connlease cannot reach into their sockets), and a kept one
is reused only if it offers the reset hook `reset_session()` (mysql-connector-python's
name; any driver or wrapper may offer it): else it is closed after each invocation.
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

from domain import Clock

log = logging.getLogger(__name__)

# The holder stops using its connection this long before its lease ends by its own clock:
# time for the socket to close and the server to see it go, so that a holder whose clock
# is the whole skew margin behind is gone when a reclaimer takes its place.
CLOSE_LEAD_MS = 250
# A session's statement bound may exceed what is left of the lease by this much before a
# statement re-bounds it: re-bounding costs bytes, not a round trip, but not every time.
REBOUND_SLACK_MS = 100

_warned_no_reset: set[type] = set()  # driver types already reported as not resettable


def _is_pymysql(connection: object) -> bool:
    # Only a program that imported pymysql can hold one of its connections.
    pymysql = sys.modules.get("pymysql")
    return pymysql is not None and isinstance(connection, pymysql.connections.Connection)


def rebound_ms(held_ms: int | None, usable_ms: int) -> int | None:
    """The statement bound to set before the next statement, or None to keep the one the
    session holds (`held_ms`; None: unknown). `usable_ms` (more than 0) is what is left of
    the lease now, less the close lead: a statement that starts now must end by then, and
    a bound up to REBOUND_SLACK_MS longer is close enough."""
    if held_ms is not None and held_ms <= usable_ms + REBOUND_SLACK_MS:
        return None
    return usable_ms


class LeaseBound:
    """One connection held under a lease ending at epoch ms `lease_end_ms` (the store's
    clock, read on this host's: the skew margin on reclaims covers the difference)."""

    def __init__(self, connection: Any, clock: Clock) -> None:
        pymysql_connection = _is_pymysql(connection)
        self._connection = connection if pymysql_connection else None
        self._other: Any = None if pymysql_connection else connection
        self._clock = clock
        self._guard: Any = None
        self._fired = False
        self._use_until_ms: int | None = None  # epoch ms (the clock's): the guard's deadline
        self._held_ms: int | None = None  # the statement bound the session holds
        self._mariadb = False
        self._own_statement = False  # our own SETs pass the statement wrapper untouched

    @property
    def bounded(self) -> bool:
        return self._connection is not None

    @property
    def fired(self) -> bool:
        """The lease ended while the connection was in use: the guard closed it."""
        return self._fired or (self._guard is not None and self._guard.fired)

    def start(self, lease_end_ms: int, idle_close_s: int | None = None) -> None:
        """A new connection: its session's bounds in one statement, the guard, then the
        wrapper that bounds each statement by what is left when it starts. With no
        `idle_close_s`, the server closes the session once idle for as long as the lease
        had left: the guard cannot run in a frozen process, the server can."""
        if self._connection is None:
            return
        from adapters.mysql_session import SessionBounds, is_mariadb  # noqa: PLC0415

        self._mariadb = is_mariadb(self._connection)
        left_ms = self._left_ms(lease_end_ms)
        idle_s = idle_close_s if idle_close_s is not None else -(-left_ms // 1000)
        self._prepare(SessionBounds(idle_s, left_ms))
        self._arm(lease_end_ms)
        self._bound_each_statement()

    def extend(self, lease_end_ms: int, *, renewed: bool) -> None:
        """The next invocation on a kept connection; `renewed`: the lease now ends later,
        and the session's statement bound follows it (one statement)."""
        if self._connection is None:
            return
        if renewed:
            from adapters.mysql_session import SessionBounds  # noqa: PLC0415

            self._prepare(SessionBounds(None, self._left_ms(lease_end_ms)))
        self._arm(lease_end_ms)

    def clean(self, lease_end_ms: int, idle_close_s: int) -> bool:
        """After an invocation on a kept connection: reset its session, bounds restored,
        in one round trip; False if it cannot be made clean (close it, do not reuse it).
        Another driver's connection is clean only through its own `reset_session()`."""
        self.stop()
        if self._connection is None:
            return self._reset_other(idle_close_s)
        if self.fired:
            return False
        from adapters.mysql_session import SessionBounds, reset  # noqa: PLC0415

        left_ms = self._left_ms(lease_end_ms)
        clean = reset(self._connection, SessionBounds(idle_close_s, left_ms))
        if clean:
            self._held_ms = left_ms
        else:
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

    def _reset_other(self, idle_close_s: int) -> bool:
        """Another driver's kept connection: its `reset_session()` hook (mysql-connector's;
        a wrapper may offer one) must leave the session as a new connection has it. The
        reset puts session variables back to the server's, so the idle close is set again:
        a frozen environment's connection must still close before its lease ends. Without
        the hook, or if it or that fails, the connection cannot be made clean."""
        connection = self._other
        reset_session = getattr(connection, "reset_session", None)
        if not callable(reset_session):
            if type(connection) not in _warned_no_reset:
                _warned_no_reset.add(type(connection))
                log.warning(
                    "%s has no reset_session(): its kept connection is closed after each "
                    "invocation, not reused",
                    type(connection).__name__,
                )
            return False
        try:
            reset_session()
            cursor = connection.cursor()
            try:
                cursor.execute(f"SET SESSION wait_timeout = {int(idle_close_s)}")
            finally:
                cursor.close()
        except Exception:
            log.warning(
                "a kept connection could not be reset; it is closed, not reused", exc_info=True
            )
            return False
        return True

    def _prepare(self, bounds: Any) -> None:
        from adapters.mysql_session import prepare  # noqa: PLC0415

        connection = self._connection
        assert connection is not None
        self._own_statement = True
        try:
            prepare(connection, bounds)
        finally:
            self._own_statement = False
        if bounds.statement_ms is not None:
            self._held_ms = bounds.statement_ms

    def _bound_each_statement(self) -> None:
        """Wrap the connection's `query` (what every cursor's execute calls) on the
        instance, so that each statement is bounded by what is left of the lease when it
        starts (`_query`). The wrapper holds the connection and this bound weakly: no
        reference cycle keeps an unclosed connection's socket open."""
        import pymysql  # noqa: PLC0415

        connection = self._connection
        assert connection is not None
        previous: Callable[..., int] | None = vars(connection).get("query")  # someone's wrapper
        pipelines = (
            previous is None and type(connection).query is pymysql.connections.Connection.query
        )
        connection_ref = weakref.ref(connection)
        bound_ref = weakref.ref(self)

        def plain(sql: Any, unbuffered: bool = False) -> int:
            if previous is not None:
                return previous(sql, unbuffered)
            target = connection_ref()
            assert target is not None  # it is running this method
            return int(type(target).query(target, sql, unbuffered))

        def query(sql: Any, unbuffered: bool = False) -> int:
            bound = bound_ref()
            if bound is None:
                return plain(sql, unbuffered)
            return bound._query(plain, pipelines, sql, unbuffered)

        connection.query = query

    def _query(self, plain: Callable[..., int], pipelines: bool, sql: Any, unbuffered: bool) -> int:
        """One statement, bounded by what is left of the lease: when the session's bound is
        too long, a SET tightens it in the statement's own write (no extra round trip);
        with nothing left the statement is not sent. If the pipelined path does not fit
        (an unbuffered result still being read, an unusual `sql`), the SET and the
        statement go one after the other."""
        if self._own_statement or self._use_until_ms is None:
            return plain(sql, unbuffered)
        from adapters.mysql_session import (  # noqa: PLC0415
            LeaseEnded,
            SessionBounds,
            bound_assignments,
            send_pipelined,
        )

        connection = self._connection
        assert connection is not None
        usable_ms = self._use_until_ms - self._clock.now_ms()  # the guard fires then
        if usable_ms <= 0:
            raise LeaseEnded
        bound_ms = rebound_ms(self._held_ms, usable_ms)
        if bound_ms is None:
            return plain(sql, unbuffered)
        assignments = bound_assignments(SessionBounds(None, bound_ms), self._mariadb)
        rebound = "SET " + ", ".join(assignments)
        if pipelines and send_pipelined(connection, rebound, sql):
            self._held_ms = bound_ms
            return int(connection.next_result(unbuffered))  # as query() reads its answer
        plain(rebound)
        self._held_ms = bound_ms
        return plain(sql, unbuffered)

    def _left_ms(self, lease_end_ms: int) -> int:
        """How long the connection may still be used: the lease, less the close lead
        (a quarter of a short lease at most)."""
        left_ms = lease_end_ms - self._clock.now_ms()
        return max(1, left_ms - min(CLOSE_LEAD_MS, left_ms // 4))

    def _arm(self, lease_end_ms: int) -> None:
        from adapters.mysql_session import LeaseGuard, set_socket_timeouts  # noqa: PLC0415

        connection = self._connection
        assert connection is not None
        left_ms = self._left_ms(lease_end_ms)
        self._use_until_ms = self._clock.now_ms() + left_ms
        left_s = left_ms / 1000
        set_socket_timeouts(connection, left_s)
        deadline = time.monotonic() + left_s
        if self._guard is None:
            self._guard = LeaseGuard(connection, deadline)
        else:
            self._guard.extend(deadline)
