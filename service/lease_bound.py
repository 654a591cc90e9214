"""A connection that cannot outlive its lease, and a warm one that starts every invocation
clean (adapters.mysql_session does the MySQL side).

For a pymysql connection, on every use: each statement is bounded by what is left of the
lease (the server's statement timeout and idle close, and on MySQL its lock waits, set
again before every statement in the statement's own socket write, and the socket's read
and write timeouts), and a guard shuts the socket down when the lease ends, whatever the
body is doing. A statement that would set those bounds itself is refused unsent; one that
changed them out of sight (dynamic SQL, a routine) has them set again before the next
statement runs. A reconnect inside the lease (`connect()`, `ping(reconnect=True)`) is
bounded as the first connection was, and refused once the lease has ended or the
connection was given back (a body that kept the connection object past its `with`): its
statements and reconnects then raise `LeaseEnded`, before anything is sent or any socket
opens. A kept connection is reset after each invocation (COM_RESET_CONNECTION, one round
trip): what the invocation left behind (a transaction, variables, temporary tables, locks,
prepared statements, and what it changed through pymysql's own calls) is gone before the
next one, and a connection that cannot be reset is closed.

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
_warned_no_reset: set[type] = set()  # driver types already reported as not resettable


def _is_pymysql(connection: object) -> bool:
    # Only a program that imported pymysql can hold one of its connections.
    pymysql = sys.modules.get("pymysql")
    return pymysql is not None and isinstance(connection, pymysql.connections.Connection)


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
        # Epoch ms (the clock's): the guard's deadline while armed (start, extend) and not
        # stopped since; None when the body may not use the connection.
        self._use_until_ms: int | None = None
        self._idle_close_s: int | None = None  # None: what is left of the lease
        self._opened: Any = None  # what the connection was opened with (mysql_session.Opened)
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
        """A new connection: what it was opened with (a warm reset restores it), its
        session's bounds in one statement, the guard, then the wrappers that bound each
        statement by what is left when it starts, and a reconnect as this connection. With
        no `idle_close_s`, the server closes the session once idle for as long as the lease
        has left: the guard cannot run in a frozen process, the server can."""
        if self._connection is None:
            return
        from adapters.mysql_session import SessionBounds, is_mariadb, opened_with  # noqa: PLC0415

        self._opened = opened_with(self._connection)
        self._mariadb = is_mariadb(self._connection)
        self._idle_close_s = idle_close_s
        left_ms = self._left_ms(lease_end_ms)
        self._prepare(SessionBounds(self._idle_s(left_ms), left_ms))
        self._arm(lease_end_ms)
        self._bound_each_statement()
        self._bound_reconnects()

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
        clean = reset(self._connection, SessionBounds(idle_close_s, left_ms), self._opened)
        if not clean:
            log.warning("a kept connection could not be reset; it is closed, not reused")
        return clean

    def stop(self) -> None:
        """Between invocations (a frozen environment thaws past any deadline) or at the end.
        From here until the next `extend`, a statement or a reconnect through the connection
        is refused (`LeaseEnded`): a body that kept the connection object past its `with`
        holds no lease, or none that bounds it."""
        self._use_until_ms = None
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
            if bound is None:  # its lease was given back and the bound collected
                from adapters.mysql_session import LeaseEnded  # noqa: PLC0415

                raise LeaseEnded
            return bound._query(plain, pipelines, sql, unbuffered)

        connection.query = query

    def _query(self, plain: Callable[..., int], pipelines: bool, sql: Any, unbuffered: bool) -> int:
        """One statement, bounded by what is left of the lease: a SET of the session's
        bounds goes in the statement's own write (no extra round trip), every time, since
        any statement before may have changed them out of sight (a prepared statement run
        with EXECUTE, a stored function or procedure, `set_character_set`'s collation). A
        statement that names a bound variable other than to read it is refused unsent
        (`BoundRefused`): what it sets for itself (SET STATEMENT ... FOR, a MySQL hint)
        no SET before it undoes. With nothing left the statement is not sent
        (`LeaseEnded`). If the pipelined path does not fit (an unbuffered result still being
        read, an unusual `sql`), the SET and the statement go one after the other."""
        if self._own_statement:
            return plain(sql, unbuffered)
        from adapters.mysql_session import (  # noqa: PLC0415
            BoundRefused,
            LeaseEnded,
            SessionBounds,
            names_a_bound,
            send_pipelined,
            statement_assignments,
        )

        connection = self._connection
        assert connection is not None
        if self._use_until_ms is None:
            raise LeaseEnded  # stopped: given back, or between invocations
        usable_ms = self._use_until_ms - self._clock.now_ms()  # the guard fires then
        if usable_ms <= 0:
            raise LeaseEnded
        if isinstance(sql, (str, bytes, bytearray)):
            named = names_a_bound(sql, self._mariadb)
            if named is not None:
                raise BoundRefused(named)
        bounds = SessionBounds(self._idle_s(usable_ms), usable_ms)
        rebound = "SET " + ", ".join(statement_assignments(bounds, self._mariadb))
        if pipelines and send_pipelined(connection, rebound, sql):
            return int(connection.next_result(unbuffered))  # as query() reads its answer
        plain(rebound)
        return plain(sql, unbuffered)

    def _bound_reconnects(self) -> None:
        """Wrap the connection's `connect` (what the body's `connect()` and
        `ping(reconnect=True)` call) on the instance: a new session under the same lease
        is bounded as the first was (`_reconnect`). Weak references, as for `query`."""
        connection = self._connection
        assert connection is not None
        previous: Callable[..., None] | None = vars(connection).get("connect")
        connection_ref = weakref.ref(connection)
        bound_ref = weakref.ref(self)

        def plain(sock: Any = None) -> None:
            if previous is not None:
                previous(sock)
                return
            target = connection_ref()
            assert target is not None  # it is running this method
            type(target).connect(target, sock)

        def connect(sock: Any = None) -> None:
            bound = bound_ref()
            if bound is None:  # its lease was given back and the bound collected
                from adapters.mysql_session import LeaseEnded  # noqa: PLC0415

                raise LeaseEnded
            bound._reconnect(plain, sock)

        connection.connect = connect

    def _reconnect(self, plain: Callable[..., None], sock: Any) -> None:
        """The body opens the connection again within the lease: refused once the lease has
        ended (`LeaseEnded`, no connection made), else connected with the capability flags
        and `init_command` it was first opened with (a body that set `MULTI_STATEMENTS`
        since does not get it), then bounded by what is left (statement bound, lock waits,
        idle close, socket timeouts) before the body gets it back. The guard shuts whichever
        socket the connection has when it fires; a connect that ends after it fired is
        closed here."""
        from adapters.mysql_session import (  # noqa: PLC0415
            LeaseEnded,
            SessionBounds,
            restore_connect_options,
            set_socket_timeouts,
        )

        connection: Any = self._connection
        if self._use_until_ms is None:
            raise LeaseEnded  # stopped: given back, or between invocations
        if self._use_until_ms - self._clock.now_ms() <= 0 or self.fired:
            raise LeaseEnded
        # Opened as the first was: no MULTI_STATEMENTS (or init_command) the body set since.
        restore_connect_options(connection, self._opened)
        self._own_statement = True  # pymysql's connect runs sql_mode and init_command
        try:
            plain(sock)
        finally:
            self._own_statement = False
        try:
            left_ms = self._use_until_ms - self._clock.now_ms()
            if left_ms <= 0 or self.fired:
                raise LeaseEnded
            self._prepare(SessionBounds(self._idle_s(left_ms), left_ms))
            set_socket_timeouts(connection, left_ms / 1000)
            if self.fired:  # it fired while bounding: the socket may be one it never saw
                raise LeaseEnded
        except BaseException:
            connection._force_close()
            raise

    def _idle_s(self, left_ms: int) -> int:
        """The idle close: the warm one, else what is left of the lease, in whole seconds
        rounded up (at least 1)."""
        if self._idle_close_s is not None:
            return self._idle_close_s
        return max(1, -(-left_ms // 1000))

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
        use_until_ms = self._clock.now_ms() + left_ms
        left_s = left_ms / 1000
        set_socket_timeouts(connection, left_s)
        deadline = time.monotonic() + left_s
        if self._guard is None:
            self._guard = LeaseGuard(connection, deadline)
        else:
            self._guard.extend(deadline)
        self._use_until_ms = use_until_ms
