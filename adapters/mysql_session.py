"""A MySQL session's life under a lease: bounded when opened, clean when reused, and closed
when its lease ends.

A warm connection carries whatever its last invocation left on the server (an open
transaction, locks, variables, temporary tables) and on the connection object (pymysql's
autocommit mode, character set, ...); `reset` puts both back to what the connection was
opened with (`opened_with`, taken before the body ran) in one round trip.
Nothing on the server ends a session when a lease does, so `LeaseGuard` shuts the socket
at the deadline and the session's bounds end any statement by then: MariaDB only notices a
closed socket once the statement it is running ends. `prepare` and `reset` set the bounds;
`send_pipelined` sets them again before each statement, in the statement's own write, and
`names_a_bound` finds a statement that would set them itself (refused unsent).

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pymysql
from pymysql.constants import COMMAND, CR, ER

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


class BoundRefused(pymysql.err.OperationalError, ConnleaseError):
    """The statement sets a session variable that bounds it by its lease (`variable`): it
    was not sent. The lease sets those; a body reads them (`@@max_statement_time`) but
    may not assign them, for the session (SET) or for one statement (SET STATEMENT ... FOR,
    MySQL's optimizer hints)."""

    def __init__(self, variable: str) -> None:
        super().__init__(
            ER.SPECIFIC_ACCESS_DENIED_ERROR,
            f"{variable} bounds this connection by its lease: a statement that sets it is "
            "refused (it was not sent)",
        )
        self.variable = variable


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


def statement_assignments(bounds: SessionBounds, mariadb: bool) -> list[str]:
    """The SET assignments sent before each statement: the idle close and the statement
    bound, and on MySQL the lock waits too, since max_execution_time leaves writes
    unbounded. MariaDB's max_statement_time bounds lock waits with the rest of a statement,
    so a body may set its own lock waits there (longer gains it nothing)."""
    assignments = bound_assignments(bounds, mariadb)
    if mariadb:
        return [text for text in assignments if "lock_wait_timeout" not in text]
    return assignments


def bound_variables(mariadb: bool) -> tuple[str, ...]:
    """What `statement_assignments` sets: connlease's, under a lease."""
    if mariadb:
        return ("wait_timeout", "max_statement_time")
    return ("wait_timeout", "max_execution_time", "innodb_lock_wait_timeout", "lock_wait_timeout")


# A variable read, and nothing more: `@@name` or `@@session.name` (or local, global), then the
# end, a comma, a parenthesis, a semicolon or a word (FROM, AS, AND).
_READ_BEFORE = re.compile(r"@@(?:session\.|local\.|global\.)?\Z")
_READ_AFTER = re.compile(r"\s*(?:\Z|[,;)]|[a-z])")


def names_a_bound(sql: str | bytes | bytearray, mariadb: bool) -> str | None:
    """The bound variable (`bound_variables`) that `sql` names other than as a plain read,
    or None. Such a statement may set it: `SET max_statement_time = 0`, `SET STATEMENT
    max_statement_time = 0 FOR ...`, `/*!100000 SET ... */`, MySQL's `/*+
    MAX_EXECUTION_TIME(0) */` and `SET_VAR(...)`. Conservative on the text: the name in a
    string or a comparison is refused too. What the text does not show (dynamic SQL, a
    routine) is not found here: LeaseBound sets the bounds again before each statement."""
    text = sql if isinstance(sql, str) else bytes(sql).decode("latin-1")
    lowered = text.lower()
    if "_time" not in lowered:  # in every bound variable's name: most statements stop here
        return None
    for name in bound_variables(mariadb):
        for found in re.finditer(rf"(?<![a-z0-9_$]){name}(?![a-z0-9_$])", lowered):
            start, end = found.span()
            read = _READ_BEFORE.search(lowered, max(0, start - 10), start)
            if read is None or _READ_AFTER.match(lowered, end) is None:
                return name
    return None


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


@dataclass(frozen=True, slots=True)
class Opened:
    """What a pymysql connection was opened with, on both sides: the session settings its
    connect sent (character set and collation, sql_mode, init_command, autocommit mode)
    and its database, and the connection object's own (the encoding of what it sends,
    its cursor class, its converters, the capability flags its connect sends: `client_flag`).
    A reset restores these, not what the connection holds by then: `autocommit(True)` or
    `set_character_set()` change both the session and the object, and a reset that kept
    them would hand the next invocation a connection whose `rollback()` undoes nothing."""

    charset: str
    collation: str | None
    encoding: str
    sql_mode: str | None
    init_command: str | None
    autocommit_mode: bool | None
    database: str | bytes | None
    cursorclass: type
    encoders: Mapping[Any, Any]
    decoders: Mapping[Any, Any]
    client_flag: int


def opened_with(connection: Connection) -> Opened:
    """The connection's settings now: take it before the body gets the connection."""
    raw: Any = connection
    return Opened(
        charset=raw.charset,
        collation=raw.collation,
        encoding=raw.encoding,
        sql_mode=raw.sql_mode,
        init_command=raw.init_command,
        autocommit_mode=raw.autocommit_mode,
        database=raw.db,
        cursorclass=raw.cursorclass,
        encoders=dict(raw.encoders),
        decoders=dict(raw.decoders),
        client_flag=int(raw.client_flag),
    )


def restore_connect_options(connection: Connection, opened: Opened) -> None:
    """What pymysql's next connect sends that a body could use to lift its bound, back to
    what the connection was opened with: its capability flags (`client_flag`:
    `CLIENT.MULTI_STATEMENTS` set by the body would let one query lift the bound and then
    outlive it; `LOCAL_FILES` too) and `init_command` (a statement the connect runs before
    the bounds are set). Before a reconnect inside the lease."""
    raw: Any = connection
    raw.client_flag = opened.client_flag
    raw.init_command = opened.init_command


def _restore_object(connection: Connection, opened: Opened) -> None:
    """The connection object's attributes back to `opened` (what pymysql's own calls and
    its next connect read)."""
    raw: Any = connection
    raw.charset, raw.collation, raw.encoding = opened.charset, opened.collation, opened.encoding
    raw.sql_mode = opened.sql_mode
    raw.autocommit_mode, raw.db, raw.cursorclass = (
        opened.autocommit_mode,
        opened.database,
        opened.cursorclass,
    )
    raw.encoders, raw.decoders = dict(opened.encoders), dict(opened.decoders)
    restore_connect_options(connection, opened)


def restore_statements(opened: Opened, bounds: SessionBounds, mariadb: bool) -> list[str]:
    """What a reset undoes that the client relies on, in the order pymysql's connect
    applies it: the character set, sql_mode and init_command the connection was opened
    with, then its autocommit mode and the bounds, which win over init_command.

    The autocommit mode is the one the connection was opened with (pymysql's default is
    off): turning it on would make the owner's rollback() undo nothing. None (the
    server's default) sets nothing: the reset already restored it.
    """
    names = f"NAMES {opened.charset}" + (f" COLLATE {opened.collation}" if opened.collation else "")
    head = [names]
    if opened.sql_mode is not None:
        head.append(f"SESSION sql_mode = {_quoted(opened.sql_mode)}")
    tail = bound_assignments(bounds, mariadb)
    if opened.autocommit_mode is not None:
        tail.insert(0, f"autocommit = {int(bool(opened.autocommit_mode))}")
    if opened.init_command is None:
        return ["SET " + ", ".join(head + tail)]
    restore = ["SET " + ", ".join(head), str(opened.init_command)]
    return [*restore, "SET " + ", ".join(tail)] if tail else restore


def _quoted(text: str) -> str:
    """A string literal, as pymysql's escape_string makes it (no backslash escapes off)."""
    return "'" + pymysql.converters.escape_string(text) + "'"


def _command(command: int, body: bytes = b"") -> bytes:
    """One command packet, sequence id 0 as every command starts."""
    if len(body) + 1 >= _MAX_PAYLOAD:
        raise ValueError("a command this long needs continuation packets")
    return struct.pack("<I", len(body) + 1)[:3] + b"\x00" + bytes([command]) + body


def reset(connection: Connection, bounds: SessionBounds, opened: Opened) -> bool:
    """Make a reused session as clean as a new one, in one round trip: COM_RESET_CONNECTION
    (rolls back the transaction, releases table and named locks, drops temporary tables,
    prepared statements and user variables, puts session variables back to their global
    values), then pipelined in the same write: COM_INIT_DB back to the database it was
    opened with (a reset keeps whatever `USE` or `select_db` chose) and the query that
    restores what it was opened with (`restore_statements`), and the bounds. The
    connection object's own settings go back to `opened` first. Then every answer is read,
    in order. A connection opened without a database cannot be taken back to none: the
    pipeline then ends with `SELECT DATABASE()`, and one that found a database is not clean.

    False when the session cannot be made clean: a server older than the command
    (MariaDB 10.2.4, MySQL 5.7.3; nothing is sent), a closed socket, an unbuffered result
    still being read (its rows could outweigh a new connection), a database chosen where
    it was opened with none, any error. Once anything was sent the socket is closed then,
    since what the server did with the rest of the pipeline is unknown. Either way the
    caller closes the connection and opens a new one. Never raises for a MySQL or socket
    error.
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
        _restore_object(connection, opened)
        packets = [_command(COM_RESET_CONNECTION)]
        if opened.database:
            database = opened.database
            if isinstance(database, str):
                database = database.encode(opened.encoding)
            packets.append(_command(COMMAND.COM_INIT_DB, database))
        queries = restore_statements(opened, bounds, is_mariadb(connection))
        if not opened.database:
            queries.append("SELECT DATABASE()")
        packets += [_command(COMMAND.COM_QUERY, sql.encode(opened.encoding)) for sql in queries]
        raw._write_bytes(b"".join(packets))
        for _ in range(len(packets) - len(queries)):
            raw._next_seq_id = 1  # each answer follows its command's packet 0
            raw._read_ok_packet()  # raises on an error packet
        for _ in queries:
            raw._next_seq_id = 1
            connection.next_result()  # reads one answer, as query() does after its write
            while raw._result.has_next:
                connection.next_result()
        if not opened.database and raw._result.rows != ((None,),):
            raw._force_close()  # a body chose a database: no command chooses none again
            return False
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
