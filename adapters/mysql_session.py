"""A MySQL session's life under a lease: bounded when opened, clean when reused, and closed
when its lease ends.

A warm connection carries whatever its last invocation left on the server (an open
transaction, locks, variables, temporary tables); `reset` clears it in one round trip.
Nothing on the server ends a session when a lease does, so `LeaseGuard` shuts the socket
at the deadline and the session's bounds end any statement by then: MariaDB only notices a
closed socket once the statement it is running ends. `prepare` and `reset` set the bounds;
`send_pipelined` tightens them before a statement, in the statement's own write.

pymysql has no reset and no pipelining, so `reset` and `send_pipelined` speak the protocol
through pymysql's own framing internals (`_write_bytes`, `_read_packet`, `_next_seq_id`),
leaving them as pymysql's own commands do, so the connection is used normally afterwards.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pymysql
from pymysql.constants import COMMAND, CR

from adapters.mysql import DatabaseError
from domain import ConnleaseError

if TYPE_CHECKING:
    from typing import TypeAlias

    Connection: TypeAlias = pymysql.connections.Connection[Any]

# pymysql's constants call 0x1f COM_END, the command's number before MySQL 5.7.3 used it.
COM_RESET_CONNECTION = 0x1F
# The first servers that know COM_RESET_CONNECTION.
_RESET_SINCE = {"mariadb": (10, 2, 4), "mysql": (5, 7, 3)}
_MAX_PAYLOAD = 0xFFFFFF  # a longer command needs continuation packets; ours never do


@dataclass(frozen=True, slots=True)
class SessionBounds:
    """What a session may do. None leaves the server's default for that session variable
    (a reset puts every session variable back to its global value)."""

    idle_close_s: int | None  # wait_timeout: the server closes the session idle this long
    statement_ms: int | None  # the longest any one statement may run, lock waits included

    def __post_init__(self) -> None:
        # wait_timeout's floor is 1 s; a 0 statement bound would mean none at all.
        if self.idle_close_s is not None and not 1 <= self.idle_close_s <= 31_536_000:
            raise ValueError(f"idle_close_s must be 1 to 31536000, got {self.idle_close_s}")
        if self.statement_ms is not None and self.statement_ms < 1:
            raise ValueError(f"statement_ms must be at least 1, got {self.statement_ms}")


def _server_info(connection: Connection) -> str:
    raw: Any = connection  # get_server_info is untyped in the stubs
    return str(raw.get_server_info())


def is_mariadb(connection: Connection) -> bool:
    return "MariaDB" in _server_info(connection)


def server_version(connection: Connection) -> tuple[int, int, int]:
    """(major, minor, patch); MariaDB's '5.5.5-' prefix (kept for old replication clients)
    is skipped."""
    text = _server_info(connection).removeprefix("5.5.5-")
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    if found is None:
        return (0, 0, 0)
    major, minor, patch = (int(part) for part in found.groups())
    return (major, minor, patch)


def supports_reset(connection: Connection) -> bool:
    return (
        server_version(connection) >= _RESET_SINCE["mariadb" if is_mariadb(connection) else "mysql"]
    )


class LeaseEnded(pymysql.err.OperationalError, ConnleaseError):
    """The connection's lease has ended: the statement was not sent. A pymysql error, for
    a body that catches those, and connlease's, for a caller that catches its own."""

    def __init__(self) -> None:
        super().__init__(
            CR.CR_SERVER_GONE_ERROR, "the connection's lease has ended: the statement was not sent"
        )


def bound_assignments(bounds: SessionBounds, mariadb: bool) -> list[str]:
    """The SET assignments for `bounds`."""
    assignments = []
    if bounds.idle_close_s is not None:
        assignments.append(f"SESSION wait_timeout = {bounds.idle_close_s:d}")
    if bounds.statement_ms is not None:
        if mariadb:
            # Seconds, to the microsecond; bounds every kind of statement.
            assignments.append(f"SESSION max_statement_time = {bounds.statement_ms / 1000:.3f}")
        else:
            # Milliseconds, and MySQL applies it to read-only SELECTs only: an UPDATE, a
            # DDL or a SELECT ... FOR UPDATE is not bounded by it; the lock waits below are.
            assignments.append(f"SESSION max_execution_time = {bounds.statement_ms:d}")
        # A statement waiting on a row or metadata lock keeps its session on the server
        # after the guard closed its socket, for as long as the wait may last. Whole
        # seconds (rounded up, at least 1): a wait may outlast the statement bound by <1 s.
        lock_wait_s = max(1, -(-bounds.statement_ms // 1000))
        assignments.append(f"SESSION innodb_lock_wait_timeout = {lock_wait_s:d}")
        assignments.append(f"SESSION lock_wait_timeout = {lock_wait_s:d}")
    return assignments


def prepare(connection: Connection, bounds: SessionBounds) -> None:
    """Apply `bounds` to a freshly opened session, in one statement (no round trip when
    both are None). Raises DatabaseError."""
    assignments = bound_assignments(bounds, is_mariadb(connection))
    if not assignments:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET " + ", ".join(assignments))
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error


def restore_statements(connection: Connection, bounds: SessionBounds) -> list[str]:
    """What a reset undoes that the client relies on, in the order pymysql's connect
    applies it: the character set, sql_mode and init_command the connection was opened
    with, then its autocommit mode and the bounds, which win over init_command.

    The autocommit mode is the one the connection was opened with (`autocommit_mode`;
    pymysql's default is off): turning it on would make the owner's rollback() undo
    nothing. None (the server's default) sets nothing: the reset already restored it.
    """
    raw: Any = connection
    names = f"NAMES {raw.charset}" + (f" COLLATE {raw.collation}" if raw.collation else "")
    head = [names]
    if raw.sql_mode is not None:
        head.append(f"SESSION sql_mode = {connection.escape(raw.sql_mode)}")
    tail = bound_assignments(bounds, is_mariadb(connection))
    if raw.autocommit_mode is not None:
        tail.insert(0, f"autocommit = {int(bool(raw.autocommit_mode))}")
    if raw.init_command is None:
        return ["SET " + ", ".join(head + tail)]
    restore = ["SET " + ", ".join(head), str(raw.init_command)]
    return [*restore, "SET " + ", ".join(tail)] if tail else restore


def _command(command: int, body: bytes = b"") -> bytes:
    """One command packet, sequence id 0 as every command starts."""
    if len(body) + 1 >= _MAX_PAYLOAD:
        raise ValueError("a command this long needs continuation packets")
    return struct.pack("<I", len(body) + 1)[:3] + b"\x00" + bytes([command]) + body


def reset(connection: Connection, bounds: SessionBounds) -> bool:
    """Make a reused session as clean as a new one, in one round trip: COM_RESET_CONNECTION
    (rolls back the transaction, releases table and named locks, drops temporary tables,
    prepared statements and user variables, puts session variables back to their global
    values), then pipelined in the same write: COM_INIT_DB back to the connection's
    database (a reset keeps whatever `USE` chose) and the query that restores what the
    client relies on (`restore_statements`). Then every answer is read, in order.

    False when the session cannot be made clean: a server older than the command
    (MariaDB 10.2.4, MySQL 5.7.3; nothing is sent), a closed socket, an unbuffered result
    still being read (its rows could outweigh a new connection), any error. Once anything
    was sent the socket is closed then, since what the server did with the rest of the
    pipeline is unknown. Either way the caller closes the connection and opens a new one.
    Never raises for a MySQL or socket error.
    """
    raw: Any = connection
    if raw._sock is None or not supports_reset(connection):
        return False
    try:
        if raw._result is not None:
            if raw._result.unbuffered_active:
                # Disowned, or collecting it (or its SSCursor) would read a closed socket.
                raw._result.unbuffered_active = False
                raw._result = None
                raw._force_close()
                return False
            # Results the server already sent (a CALL's), read as pymysql's next command would.
            while raw._result.has_next:
                connection.next_result()
        raw._result = None
        packets = [_command(COM_RESET_CONNECTION)]
        if raw.db:
            database = raw.db if isinstance(raw.db, bytes) else raw.db.encode(raw.encoding)
            packets.append(_command(COMMAND.COM_INIT_DB, database))
        queries = restore_statements(connection, bounds)
        packets += [_command(COMMAND.COM_QUERY, sql.encode(raw.encoding)) for sql in queries]
        raw._write_bytes(b"".join(packets))
        for _ in range(len(packets) - len(queries)):
            raw._next_seq_id = 1  # each answer follows its command's packet 0
            raw._read_ok_packet()  # raises on an error packet
        for _ in queries:
            raw._next_seq_id = 1
            connection.next_result()  # reads one answer, as query() does after its write
            while raw._result.has_next:
                connection.next_result()
    except (pymysql.err.MySQLError, OSError):
        raw._force_close()
        return False
    return True


def send_pipelined(connection: Connection, first: str, sql: str | bytes | bytearray) -> bool:
    """Send the statement `first` (a SET, whose answer is an OK) and then `sql` in one
    socket write, as pymysql's `query` would send `sql`: both command packets go out
    together, each with sequence id 0 as every command starts, and `first`'s answer is
    read. True: `sql`'s answer is next, `_next_seq_id` set for it; the caller reads it as
    query() does after its own write (`connection.next_result(unbuffered)`). No extra round
    trip: the server runs the two in order.

    False, having sent nothing, when it does not know how to do this safely: an unbuffered
    result still being read (pymysql's query would finish it first), `sql` not str, bytes
    or bytearray (executemany's), or a statement that needs continuation packets (16 MB).
    The caller then sends them one after the other. Raises what pymysql's query raises;
    if `first` fails, the connection is closed (`sql`'s answer is unread, and `sql`
    itself may have run).
    """
    raw: Any = connection
    if raw._sock is None or not isinstance(sql, (str, bytes, bytearray)):
        return False
    if raw._result is not None:
        if raw._result.unbuffered_active:
            return False
        # Results the server already sent (a CALL's), read as pymysql's query would.
        while raw._result.has_next:
            connection.next_result()
        raw._result = None
    body = sql.encode(raw.encoding) if isinstance(sql, str) else bytes(sql)
    try:
        burst = _command(COMMAND.COM_QUERY, first.encode(raw.encoding)) + _command(
            COMMAND.COM_QUERY, body
        )
    except ValueError:
        return False
    raw._write_bytes(burst)  # closes the connection and raises on a socket error
    try:
        raw._next_seq_id = 1  # first's answer follows its packet 0
        raw._read_ok_packet()  # raises on an error packet
    except BaseException:
        raw._force_close()  # sql's answer would be read as the next command's
        raise
    raw._next_seq_id = 1  # and sql's, its own packet 0
    return True


def set_socket_timeouts(connection: Connection, seconds: float) -> None:
    """Bound each read and write on the connection's socket by `seconds`, what is left of
    the lease: a wait longer than that fails instead of blocking. It bounds each wait, not
    a whole result read in many; LeaseGuard bounds the total. Nothing left (0 or less)
    leaves 1 ms, so the next wait fails at once."""
    seconds = max(seconds, 0.001)
    raw: Any = connection
    raw._read_timeout = seconds
    raw._write_timeout = seconds
    if raw._sock is not None:
        raw._sock.settimeout(seconds)
    raw._current_timeout = seconds  # pymysql skips settimeout while this matches


class LeaseGuard:
    """Shuts a connection's socket down at `deadline_monotonic_s` (time.monotonic()),
    whatever the body is doing: a read or write blocked on it fails at once, and the server
    sees the connection go (MariaDB only once its running statement ends: hence the session's
    statement bound). The socket is shut down, not closed, from this thread: closing it
    would not wake a blocked read, and its descriptor could be reused under the body.

    `cancel()` disarms it; once cancel returns, `fired` is final. `extend(deadline)` moves
    the deadline, and rearms a cancelled guard for a warm connection's next invocation.
    Cancel between invocations: a frozen environment thaws past its deadline, and the
    guard would fire before the next invocation could extend it.
    """

    def __init__(self, connection: Connection, deadline_monotonic_s: float) -> None:
        self._connection = connection
        self._condition = threading.Condition()
        self._deadline = deadline_monotonic_s
        self._generation = 0  # a watcher whose generation is past stops
        self._armed = False
        self._fired = False
        with self._condition:
            self._arm()

    @property
    def fired(self) -> bool:
        return self._fired

    @property
    def deadline(self) -> float:
        return self._deadline

    def cancel(self) -> None:
        with self._condition:
            if self._armed:
                self._armed = False
                self._generation += 1
                self._condition.notify_all()

    def extend(self, deadline_monotonic_s: float) -> None:
        """Raises RuntimeError once the guard fired: its connection is gone."""
        with self._condition:
            if self._fired:
                raise RuntimeError("the lease guard fired: its connection is closed")
            self._deadline = deadline_monotonic_s
            if self._armed:
                self._condition.notify_all()
            else:
                self._arm()

    def __enter__(self) -> LeaseGuard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    def _arm(self) -> None:
        self._armed = True
        self._generation += 1
        threading.Thread(
            target=self._watch, args=(self._generation,), name="lease-guard", daemon=True
        ).start()

    def _watch(self, generation: int) -> None:
        with self._condition:
            while True:
                if generation != self._generation:
                    return
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            self._fired = True
            self._armed = False
        sock = getattr(self._connection, "_sock", None)
        if sock is None:
            return
        # The plain socket's shutdown: SSLSocket's own would drop its SSL object under a
        # blocked read, which then fails with ValueError instead of a connection error.
        with contextlib.suppress(OSError):  # already closed
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
