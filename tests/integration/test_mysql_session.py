"""A session under a lease, against the real MariaDB: a reused connection starts clean after
one round trip, statements are bounded, and the guard ends a connection at its deadline."""

from __future__ import annotations

import io
import socket
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pymysql
import pymysql.cursors
import pytest

from adapters.mysql import DatabaseError, MySqlConnector, MySqlEndpoint
from adapters.mysql_session import (
    COM_RESET_CONNECTION,
    LeaseGuard,
    Opened,
    SessionBounds,
    opened_with,
    prepare,
    reset,
    set_socket_timeouts,
)
from local.demo_setup import mysql_from_environment

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from typing import TypeAlias

    Connection: TypeAlias = pymysql.connections.Connection[Any]

BOUNDS = SessionBounds(idle_close_s=7, statement_ms=2_500)
LOCK_WAIT_S = 1  # how long the witness waits on a lock the reset should have released
# What each connection the tests open was opened with, taken as it opened.
OPENED: weakref.WeakKeyDictionary[Connection, Opened] = weakref.WeakKeyDictionary()


@pytest.fixture
def endpoint() -> MySqlEndpoint:
    return mysql_from_environment()


@pytest.fixture
def connect(endpoint: MySqlEndpoint) -> Iterator[Callable[..., Connection]]:
    """Opens connections as the connector does (or with pymysql options of the test's own),
    and closes whatever the test left open."""
    opened: list[Connection] = []

    def open_one(**options: Any) -> Connection:
        if options:
            connection: Connection = pymysql.connect(
                host=endpoint.host,
                port=endpoint.port,
                user=endpoint.user,
                password=endpoint.password,
                database=endpoint.database,
                **{"autocommit": True, **options},
            )
        else:
            connection = MySqlConnector(endpoint, None)()
        opened.append(connection)
        OPENED[connection] = opened_with(connection)
        return connection

    yield open_one
    for connection in opened:
        if connection.open:
            connection.close()


def one(connection: Connection, sql: str, *args: object) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, args or None)
        row = cursor.fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def error_code(call: Callable[[], object]) -> int:
    with pytest.raises(pymysql.err.MySQLError) as raised:
        call()
    return int(raised.value.args[0])


def thread_id(connection: Connection) -> int:
    raw: Any = connection  # untyped in the stubs
    return int(raw.thread_id())


def on_server(witness: Connection, session: int) -> bool:
    return bool(
        one(witness, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", session)
    )


@dataclass(frozen=True)
class Probe:
    """Server objects an invocation may leave state on, unique to one test."""

    table: str
    lock: str
    procedure: str


@pytest.fixture
def probe(connect: Callable[..., Connection]) -> Iterator[Probe]:
    suffix = uuid.uuid4().hex[:8]
    made = Probe(f"session_probe_{suffix}", f"connlease-probe-{suffix}", f"session_proc_{suffix}")
    admin = connect()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {made.table} (id INT PRIMARY KEY) ENGINE=InnoDB")
        cursor.execute(f"CREATE PROCEDURE {made.procedure}() BEGIN SELECT 1; SELECT 2; END")
    yield made
    with admin.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {made.table}")
        cursor.execute(f"DROP PROCEDURE IF EXISTS {made.procedure}")


def run(connection: Connection, *statements: str) -> None:
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


# What an invocation may leave behind, each a body that leaves it and shows that it did.
def open_transaction(connection: Connection, probe: Probe) -> None:
    run(connection, "BEGIN", f"INSERT INTO {probe.table} VALUES (1)")
    assert one(connection, f"SELECT COUNT(*) FROM {probe.table}") == 1


def autocommit_off(connection: Connection, probe: Probe) -> None:
    run(connection, "SET autocommit = 0", f"INSERT INTO {probe.table} VALUES (1)")
    assert one(connection, "SELECT @@in_transaction") == 1


def user_variable(connection: Connection, probe: Probe) -> None:
    run(connection, "SET @x = 42")


def session_variable(connection: Connection, probe: Probe) -> None:
    run(connection, "SET SESSION sql_mode = 'ANSI', SESSION wait_timeout = 99")
    assert one(connection, "SELECT @@session.sql_mode <> @@global.sql_mode") == 1


def temporary_table(connection: Connection, probe: Probe) -> None:
    run(connection, "CREATE TEMPORARY TABLE session_tmp (a INT)")


def named_lock(connection: Connection, probe: Probe) -> None:
    assert one(connection, "SELECT GET_LOCK(%s, 0)", probe.lock) == 1


def table_lock(connection: Connection, probe: Probe) -> None:
    run(connection, f"LOCK TABLES {probe.table} WRITE")


def prepared_statement(connection: Connection, probe: Probe) -> None:
    run(connection, "PREPARE session_stmt FROM 'SELECT 1'")


def character_set(connection: Connection, probe: Probe) -> None:
    run(connection, "SET NAMES latin1")


def other_database(connection: Connection, probe: Probe) -> None:
    run(connection, "USE information_schema")


def xa_transaction(connection: Connection, probe: Probe) -> None:
    run(connection, "XA START 'connlease-probe'", f"INSERT INTO {probe.table} VALUES (1)")


def handler(connection: Connection, probe: Probe) -> None:
    run(connection, f"HANDLER {probe.table} OPEN")


def time_zone(connection: Connection, probe: Probe) -> None:
    run(connection, "SET time_zone = '+05:00'")


def next_transaction_read_only(connection: Connection, probe: Probe) -> None:
    run(connection, "SET TRANSACTION READ ONLY")


def unread_results(connection: Connection, probe: Probe) -> None:
    """A CALL's further results stay on the socket until read: the reset must not take
    them for its own answers (a cursor that is closed reads them itself)."""
    connection.cursor().execute(f"CALL {probe.procedure}()")
    raw: Any = connection
    assert raw._result is not None
    assert raw._result.has_next


LEFTOVERS = [
    open_transaction,
    autocommit_off,
    user_variable,
    session_variable,
    temporary_table,
    named_lock,
    table_lock,
    prepared_statement,
    character_set,
    other_database,
    xa_transaction,
    handler,
    time_zone,
    next_transaction_read_only,
    unread_results,
]


def assert_clean(
    connection: Connection,
    witness: Connection,
    probe: Probe,
    endpoint: MySqlEndpoint,
    sql_mode: str = "@@global.sql_mode",
) -> None:
    """Every kind of leftover gone, whichever one the body left, and the session as the
    client opened (with the server's sql_mode unless told) and bounded it."""
    charset = connection.charset
    assert one(
        connection,
        f"SELECT CONNECTION_ID(), @x, @@session.sql_mode = {sql_mode}, @@autocommit,"
        " @@in_transaction, @@character_set_client, @@character_set_connection,"
        " @@character_set_results, @@session.wait_timeout, @@session.max_statement_time,"
        " DATABASE(), @@session.time_zone = @@global.time_zone",
    ) == (
        thread_id(connection),
        None,
        1,
        1,
        0,
        charset,
        charset,
        charset,
        BOUNDS.idle_close_s,
        2.5,
        endpoint.database,
        1,
    )
    assert connection.get_autocommit()
    assert one(connection, f"SELECT COUNT(*) FROM {probe.table}") == 0
    assert error_code(lambda: run(connection, "SELECT * FROM session_tmp")) == 1146
    assert error_code(lambda: run(connection, "EXECUTE session_stmt")) == 1243
    assert error_code(lambda: run(connection, f"HANDLER {probe.table} READ FIRST")) == 1109
    # Not read only, nor in a transaction (an XA one included): a write and its rollback.
    run(connection, "BEGIN", f"INSERT INTO {probe.table} VALUES (9)", "ROLLBACK")
    # Locks: a second session gets at once what the body held.
    assert one(witness, "SELECT IS_FREE_LOCK(%s)", probe.lock) == 1
    run(
        witness,
        f"SET SESSION lock_wait_timeout = {LOCK_WAIT_S},"
        f" SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}",
        f"INSERT INTO {probe.table} VALUES (1)",
        f"DELETE FROM {probe.table}",
    )


@pytest.mark.parametrize("leave", LEFTOVERS, ids=lambda leave: leave.__name__)
def test_a_reset_session_keeps_nothing_an_invocation_left(
    leave: Callable[[Connection, Probe], None],
    connect: Callable[..., Connection],
    probe: Probe,
    endpoint: MySqlEndpoint,
) -> None:
    connection, witness = connect(), connect()
    prepare(connection, BOUNDS)
    leave(connection, probe)

    assert reset(connection, BOUNDS, OPENED[connection])

    assert_clean(connection, witness, probe, endpoint)


def prepared_xids(connection: Connection) -> list[bytes]:
    with connection.cursor() as cursor:
        cursor.execute("XA RECOVER")
        return [bytes(row[3]) for row in cursor.fetchall()]


def test_an_xa_transaction_left_prepared_outlives_the_reset_until_an_operator_ends_it(
    connect: Callable[..., Connection], probe: Probe
) -> None:
    """What docs/design.md says of XA: a transaction left PREPARED is the server's to keep
    (MariaDB 10.11: the reset reports the session clean and detaches it, its row locks
    held); XA RECOVER finds it and XA ROLLBACK ends it. If this fails, the docs are wrong."""
    xid = f"connlease-xa-{uuid.uuid4().hex[:8]}"
    connection, witness = connect(), connect()
    prepare(connection, BOUNDS)
    run(
        connection,
        f"XA START '{xid}'",
        f"INSERT INTO {probe.table} VALUES (1)",
        f"XA END '{xid}'",
        f"XA PREPARE '{xid}'",
    )
    try:
        assert reset(connection, BOUNDS, OPENED[connection])  # it cannot tell
        assert xid.encode() in prepared_xids(witness)
        run(witness, f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}")
        assert error_code(lambda: run(witness, f"DELETE FROM {probe.table} WHERE id = 1")) == 1205
    finally:
        if xid.encode() in prepared_xids(witness):
            connection.close()  # detached, if the reset did not
            run(witness, f"XA ROLLBACK '{xid}'")  # what an operator does
    assert xid.encode() not in prepared_xids(witness)
    assert one(witness, f"SELECT COUNT(*) FROM {probe.table}") == 0


def test_a_reset_keeps_what_the_connection_was_opened_with(
    connect: Callable[..., Connection], probe: Probe, endpoint: MySqlEndpoint
) -> None:
    """A character set other than the server's, a sql_mode and an init_command: the reset
    puts session variables back to the server's defaults, and the pipelined query restores
    the connection's own."""
    options = {"charset": "latin1", "sql_mode": "ANSI", "init_command": "SET @opened = 7"}
    connection, fresh = connect(**options), connect(**options)
    sql = "SELECT @@character_set_client, @@collation_connection, @@sql_mode, @opened"
    opened_with = one(fresh, sql)
    assert opened_with[0] == "latin1"
    assert one(fresh, "SELECT @@global.character_set_server") != "latin1"
    run(connection, "SET NAMES utf8mb4", "SET sql_mode = ''", "SET @opened = NULL")

    assert reset(connection, BOUNDS, OPENED[connection])

    assert one(connection, sql) == opened_with
    assert one(connection, "SELECT @@session.wait_timeout, @@autocommit") == (7, 1)
    assert_clean(connection, connect(), probe, endpoint, sql_mode=f"'{opened_with[2]}'")


@pytest.mark.parametrize("autocommit", [False, True, None])
def test_a_reset_keeps_the_autocommit_mode_the_connection_was_opened_with(
    autocommit: bool | None, connect: Callable[..., Connection], probe: Probe
) -> None:
    """pymysql opens with autocommit off unless told: a reset that turned it on would have
    rollback() undo nothing. None keeps the server's default, as a new connection has."""
    connection, witness = connect(autocommit=autocommit), connect()
    default = bool(one(witness, "SELECT @@global.autocommit"))
    expected = default if autocommit is None else autocommit
    assert connection.get_autocommit() is expected
    run(connection, f"INSERT INTO {probe.table} VALUES (1)")

    assert reset(connection, BOUNDS, OPENED[connection])

    assert connection.get_autocommit() is expected
    assert one(connection, "SELECT @@autocommit") == int(expected)
    run(connection, f"INSERT INTO {probe.table} VALUES (2)")
    connection.rollback()
    # Off: the reset rolled the first write back and rollback() the second; on: both stay.
    kept = one(witness, f"SELECT COUNT(*) FROM {probe.table}")
    assert kept == (2 if expected else 0)
    connection.close()  # before the table is dropped


class RecordingSocket:
    """The connection's socket, noting each write (with its bytes) and each read, in order."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.calls: list[tuple[str, bytes]] = []

    def sendall(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))
        self.real.sendall(data)

    def recv_into(self, buffer: Any, size: int = 0) -> int:
        self.calls.append(("read", b""))
        return self.real.recv_into(buffer, size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def record(connection: Connection) -> RecordingSocket:
    """Routes the connection's writes and reads (pymysql reads through a buffered file over
    its socket) through a RecordingSocket."""
    raw: Any = connection
    recorder = RecordingSocket(raw._sock)
    raw._sock = recorder
    raw._rfile = io.BufferedReader(socket.SocketIO(recorder, "rb"))  # type: ignore[arg-type]
    return recorder


def commands(burst: bytes) -> list[tuple[int, int]]:
    """(sequence id, command byte) of each packet in a write."""
    found = []
    while burst:
        length = int.from_bytes(burst[:3], "little")
        found.append((burst[3], burst[4]))
        burst = burst[4 + length :]
    return found


def round_trips(calls: list[tuple[str, bytes]]) -> int:
    """How many times the client wrote after reading (or first): each is a round trip."""
    trips, last = 0, "read"
    for kind, _ in calls:
        if kind == "write" and last == "read":
            trips += 1
        last = kind
    return trips


def test_a_reset_is_one_round_trip(
    connect: Callable[..., Connection], probe: Probe, endpoint: MySqlEndpoint
) -> None:
    connection = connect()
    run(connection, "SET @x = 1", "BEGIN", f"INSERT INTO {probe.table} VALUES (1)")
    recorder = record(connection)

    assert reset(connection, BOUNDS, OPENED[connection])

    kinds = [kind for kind, _ in recorder.calls]
    assert kinds[0] == "write"
    assert kinds.count("write") == 1  # one write, before the first read
    assert set(kinds[1:]) == {"read"}
    (_, burst), *_ = recorder.calls
    assert commands(burst) == [
        (0, COM_RESET_CONNECTION),
        (0, pymysql.constants.COMMAND.COM_INIT_DB),
        (0, pymysql.constants.COMMAND.COM_QUERY),
    ]
    # The same recorder sees two round trips in two commands sent one after the other.
    recorder.calls.clear()
    connection.ping()
    run(connection, "SELECT 1")
    assert round_trips(recorder.calls) == 2
    assert_clean(connection, connect(), probe, endpoint)


def close_it(connection: Connection, witness: Connection) -> None:
    connection.close()


def shut_its_socket(connection: Connection, witness: Connection) -> None:
    connection._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]


def kill_it_on_the_server(connection: Connection, witness: Connection) -> None:
    killed = thread_id(connection)
    run(witness, f"KILL {killed:d}")
    deadline = time.monotonic() + 2
    while on_server(witness, killed) and time.monotonic() < deadline:
        time.sleep(0.02)


def leave_an_unbuffered_result(connection: Connection, witness: Connection) -> object:
    cursor = connection.cursor(pymysql.cursors.SSCursor)
    cursor.execute("SELECT seq FROM seq_1_to_100000")
    cursor.fetchone()
    return cursor  # kept: an SSCursor reads its remaining rows when collected


@pytest.mark.parametrize(
    "spoil",
    [close_it, shut_its_socket, kill_it_on_the_server, leave_an_unbuffered_result],
    ids=lambda spoil: spoil.__name__,
)
def test_reset_says_false_for_a_connection_it_cannot_clean(
    spoil: Callable[[Connection, Connection], object], connect: Callable[..., Connection]
) -> None:
    connection, witness = connect(), connect()
    spoiled = spoil(connection, witness)

    assert reset(connection, BOUNDS, OPENED[connection]) is False

    assert not connection.open
    del spoiled


def test_reset_says_false_and_sends_nothing_to_a_server_without_the_command(
    connect: Callable[..., Connection],
) -> None:
    connection = connect()
    run(connection, "SET @x = 1")
    recorder = record(connection)
    connection.server_version = "5.6.51-log"  # type: ignore[attr-defined]

    assert reset(connection, BOUNDS, OPENED[connection]) is False

    assert recorder.calls == []
    assert one(connection, "SELECT @x") == 1


def test_prepare_applies_the_bounds_in_one_statement(connect: Callable[..., Connection]) -> None:
    connection = connect()
    recorder = record(connection)

    prepare(connection, SessionBounds(idle_close_s=5, statement_ms=1_250))

    assert round_trips(recorder.calls) == 1
    assert one(
        connection,
        "SELECT @@session.wait_timeout, @@session.max_statement_time,"
        " @@session.innodb_lock_wait_timeout, @@session.lock_wait_timeout",
    ) == (5, 1.25, 2, 2)  # lock waits in whole seconds, rounded up


def test_prepare_raises_database_error(connect: Callable[..., Connection]) -> None:
    connection = connect()
    connection.close()
    with pytest.raises(DatabaseError):
        prepare(connection, BOUNDS)


def test_a_prepared_session_ends_a_long_statement_at_its_bound(
    connect: Callable[..., Connection],
) -> None:
    connection = connect()
    prepare(connection, SessionBounds(idle_close_s=None, statement_ms=300))

    started = time.monotonic()
    try:
        outcome = ("returned", one(connection, "SELECT SLEEP(5)"))
    except pymysql.err.MySQLError as error:
        outcome = ("raised", error.args[0])
    elapsed = time.monotonic() - started

    # MariaDB interrupts SLEEP with error 1969; some versions have SLEEP return 1 instead.
    assert outcome in {("returned", 1), ("raised", 1969)}
    assert elapsed < 2

    assert one(connection, "SELECT 1") == 1  # the session goes on


def test_socket_timeouts_end_a_wait_past_what_is_left(connect: Callable[..., Connection]) -> None:
    connection = connect()
    set_socket_timeouts(connection, 0.3)

    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError):
        run(connection, "SELECT SLEEP(1)")
    assert time.monotonic() - started < 0.8


def test_the_guard_ends_a_connection_at_its_deadline_and_the_server_drops_it(
    connect: Callable[..., Connection],
) -> None:
    """The body's blocked read fails as the guard shuts the socket; MariaDB itself notices
    the closed socket only when the running statement ends, so without a statement bound
    the session (and the connection it counts against max_connections) would outlive the
    lease by the rest of SLEEP(5). With statement_ms it goes within that bound."""
    connection, witness = connect(), connect()
    prepare(connection, SessionBounds(idle_close_s=None, statement_ms=1_000))
    guarded = thread_id(connection)
    started = time.monotonic()
    guard = LeaseGuard(connection, started + 0.5)

    with pytest.raises(pymysql.err.OperationalError):
        run(connection, "SELECT SLEEP(5)")
    failed_after = time.monotonic() - started

    assert guard.fired
    assert 0.45 < failed_after < 1
    # The socket is gone but the statement still runs: the server has not noticed yet.
    assert on_server(witness, guarded)
    while on_server(witness, guarded) and time.monotonic() < started + failed_after + 2:
        time.sleep(0.05)
    assert not on_server(witness, guarded)
    gone_after = time.monotonic() - started
    assert gone_after < 1.8  # the statement bound (1 s) and polling, far from SLEEP's 5 s


def test_a_cancelled_guard_never_fires(connect: Callable[..., Connection]) -> None:
    connection = connect()
    guard = LeaseGuard(connection, time.monotonic() + 0.2)
    guard.cancel()

    time.sleep(0.4)

    assert not guard.fired
    assert one(connection, "SELECT 1") == 1


def test_a_guard_rearmed_for_the_next_invocation_fires_at_its_new_deadline(
    connect: Callable[..., Connection],
) -> None:
    connection = connect()
    with LeaseGuard(connection, time.monotonic() + 0.1) as guard:
        pass  # the first invocation ends in time
    time.sleep(0.2)
    assert reset(connection, BOUNDS, OPENED[connection])
    guard.extend(time.monotonic() + 0.3)

    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError):
        run(connection, "SELECT SLEEP(2)")

    assert guard.fired
    assert time.monotonic() - started < 0.8
    assert reset(connection, BOUNDS, OPENED[connection]) is False
