"""The session adapter without a server: the SQL each flavour gets, version detection, the
lease guard on a socket pair, and when a statement re-bounds its session (against a fake
server on a socket pair)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pymysql
import pytest
from pymysql.constants import COMMAND

from adapters.mysql_session import (
    BoundRefused,
    LeaseEnded,
    LeaseGuard,
    SessionBounds,
    bound_assignments,
    names_a_bound,
    opened_with,
    reset,
    restore_statements,
    server_version,
    set_socket_timeouts,
    statement_assignments,
    supports_reset,
)
from service.lease_bound import CLOSE_LEAD_MS, LeaseBound
from tests.fakes import FakeClock

MARIADB = "5.5.5-10.11.19-MariaDB-0+deb12u1"


class FakeConnection:
    """The attributes of a pymysql connection that the adapter reads."""

    def __init__(self, version: str = MARIADB, sock: socket.socket | None = None) -> None:
        self.server_version = version
        self.charset = "utf8mb4"
        self.encoding = "utf8"
        self.collation: str | None = None
        self.db: str | None = "test"
        self.cursorclass = pymysql.cursors.Cursor
        self.encoders: dict[Any, Any] = {}
        self.decoders: dict[Any, Any] = {}
        self.sql_mode: str | None = None
        self.init_command: str | None = None
        self.autocommit_mode: bool | None = True  # as MySqlConnector opens them
        self.client_flag = pymysql.constants.CLIENT.CAPABILITIES
        self._sock = sock
        self._read_timeout: float | None = 30.0
        self._write_timeout: float | None = 30.0
        self._current_timeout: float | None = 30.0

    def get_server_info(self) -> str:
        return self.server_version

    def escape(self, value: str) -> str:
        return "'" + value.replace("'", "''") + "'"


def fake(version: str = MARIADB, sock: socket.socket | None = None) -> Any:
    return cast(Any, FakeConnection(version, sock))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    peer.settimeout(2)
    yield ours, peer
    ours.close()
    peer.close()


@pytest.mark.parametrize(
    ("idle_close_s", "statement_ms"), [(0, None), (31_536_001, None), (None, 0), (None, -5)]
)
def test_bounds_the_server_would_refuse_or_read_as_none_are_refused(
    idle_close_s: int | None, statement_ms: int | None
) -> None:
    with pytest.raises(ValueError, match="must be"):
        SessionBounds(idle_close_s, statement_ms)


def test_each_flavour_gets_its_own_statement_bound_and_both_bound_lock_waits() -> None:
    bounds = SessionBounds(idle_close_s=5, statement_ms=300)
    locks = ["SESSION innodb_lock_wait_timeout = 1", "SESSION lock_wait_timeout = 1"]
    assert bound_assignments(bounds, mariadb=True) == [
        "SESSION wait_timeout = 5",
        "SESSION max_statement_time = 0.300",
        *locks,
    ]
    assert bound_assignments(bounds, mariadb=False) == [
        "SESSION wait_timeout = 5",
        "SESSION max_execution_time = 300",
        *locks,
    ]
    assert bound_assignments(SessionBounds(None, None), mariadb=True) == []


@pytest.mark.parametrize(("statement_ms", "lock_wait_s"), [(1, 1), (1_000, 1), (1_001, 2)])
def test_lock_waits_are_bounded_in_whole_seconds_rounded_up(
    statement_ms: int, lock_wait_s: int
) -> None:
    assert bound_assignments(SessionBounds(None, statement_ms), mariadb=False)[1:] == [
        f"SESSION innodb_lock_wait_timeout = {lock_wait_s}",
        f"SESSION lock_wait_timeout = {lock_wait_s}",
    ]


@pytest.mark.parametrize(
    ("version", "parsed", "resets"),
    [
        (MARIADB, (10, 11, 19), True),
        ("10.2.4-MariaDB", (10, 2, 4), True),
        ("5.5.5-10.2.3-MariaDB-log", (10, 2, 3), False),
        ("8.0.36", (8, 0, 36), True),
        ("5.7.3-log", (5, 7, 3), True),
        ("5.7.2-m12", (5, 7, 2), False),
        ("5.6.51", (5, 6, 51), False),
        ("garbage", (0, 0, 0), False),
    ],
)
def test_the_server_version_says_whether_it_can_reset(
    version: str, parsed: tuple[int, int, int], resets: bool
) -> None:
    assert server_version(fake(version)) == parsed
    assert supports_reset(fake(version)) is resets


def restored(connection: Any, bounds: SessionBounds) -> list[str]:
    return restore_statements(
        opened_with(connection), bounds, "MariaDB" in connection.server_version
    )


def test_without_an_init_command_the_restore_is_one_statement() -> None:
    connection = fake()
    connection.collation = "utf8mb4_bin"
    connection.sql_mode = "ANSI"
    assert restored(connection, SessionBounds(7, 2_500)) == [
        "SET NAMES utf8mb4 COLLATE utf8mb4_bin, SESSION sql_mode = 'ANSI', autocommit = 1,"
        " SESSION wait_timeout = 7, SESSION max_statement_time = 2.500,"
        " SESSION innodb_lock_wait_timeout = 3, SESSION lock_wait_timeout = 3"
    ]


def test_an_init_command_runs_where_connect_runs_it_and_the_bounds_win_over_it() -> None:
    connection = fake("8.0.36")
    connection.init_command = "SET SESSION wait_timeout = 1"
    assert restored(connection, SessionBounds(7, 250)) == [
        "SET NAMES utf8mb4",
        "SET SESSION wait_timeout = 1",
        "SET autocommit = 1, SESSION wait_timeout = 7, SESSION max_execution_time = 250,"
        " SESSION innodb_lock_wait_timeout = 1, SESSION lock_wait_timeout = 1",
    ]


@pytest.mark.parametrize(
    ("mode", "autocommit"), [(True, ["autocommit = 1"]), (False, ["autocommit = 0"]), (None, [])]
)
def test_the_restore_keeps_the_autocommit_mode_the_connection_was_opened_with(
    mode: bool | None, autocommit: list[str]
) -> None:
    """pymysql opens with autocommit off unless told: a reset that turned it on would leave
    the owner's rollback() undoing nothing. None is the server's default, which the reset
    itself restores."""
    connection = fake()
    connection.autocommit_mode = mode
    assert restored(connection, SessionBounds(None, None)) == [
        "SET " + ", ".join(["NAMES utf8mb4", *autocommit])
    ]
    connection.init_command = "SET @a = 1"
    tail = ["SET " + ", ".join(autocommit)] if autocommit else []
    assert restored(connection, SessionBounds(None, None)) == [
        "SET NAMES utf8mb4",
        "SET @a = 1",
        *tail,
    ]


def test_reset_on_a_closed_or_old_connection_sends_nothing(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    closed, old = fake(sock=None), fake("5.6.51", sock=ours)
    assert reset(closed, SessionBounds(None, None), opened_with(closed)) is False
    assert reset(old, SessionBounds(None, None), opened_with(old)) is False
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)


def test_socket_timeouts_are_set_where_pymysql_reads_them(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    connection = fake(sock=ours)
    set_socket_timeouts(connection, 1.5)
    assert (connection._read_timeout, connection._write_timeout) == (1.5, 1.5)
    assert (ours.gettimeout(), connection._current_timeout) == (1.5, 1.5)
    set_socket_timeouts(connection, -0.2)  # the lease is over: the next wait fails at once
    assert ours.gettimeout() == 0.001


def assert_shut(ours: socket.socket, peer: socket.socket) -> None:
    assert peer.recv(1) == b""  # the peer (the server) sees the connection end
    with pytest.raises(BrokenPipeError):
        ours.sendall(b"x")


def test_the_guard_shuts_the_socket_at_its_deadline(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    started = time.monotonic()
    guard = LeaseGuard(fake(sock=ours), started + 0.2)
    early = guard.fired

    assert peer.recv(1) == b""

    assert 0.15 < time.monotonic() - started < 1
    assert (early, guard.fired) == (False, True)
    assert_shut(ours, peer)
    with pytest.raises(RuntimeError):
        guard.extend(time.monotonic() + 10)


def test_extending_a_guard_moves_its_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    started = time.monotonic()
    guard = LeaseGuard(fake(sock=ours), started + 0.1)
    guard.extend(started + 0.4)

    assert peer.recv(1) == b""

    assert time.monotonic() - started > 0.35
    assert guard.fired


def test_a_cancelled_guard_stays_quiet_until_rearmed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    with LeaseGuard(fake(sock=ours), time.monotonic() + 0.1) as guard:
        pass
    time.sleep(0.3)
    assert not guard.fired
    ours.sendall(b"x")
    assert peer.recv(1) == b"x"

    guard.extend(time.monotonic() + 0.1)

    assert peer.recv(1) == b""
    assert guard.fired


def test_a_guard_on_a_connection_already_closed_fires_harmlessly() -> None:
    guard = LeaseGuard(fake(sock=None), time.monotonic())
    deadline = time.monotonic() + 1
    while not guard.fired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert guard.fired


def test_the_restore_is_of_what_the_connection_was_opened_with_not_what_it_holds() -> None:
    """pymysql's autocommit() and set_character_set() change the connection object as well
    as the session: the restore reads what was taken before the body ran."""
    connection = fake()
    connection.autocommit_mode = False
    opened = opened_with(connection)
    connection.autocommit_mode, connection.charset = True, "latin1"
    assert restore_statements(opened, SessionBounds(None, None), mariadb=True) == [
        "SET NAMES utf8mb4, autocommit = 0"
    ]


def test_before_each_statement_mariadb_gets_its_statement_bound_and_mysql_its_lock_waits_too() -> (
    None
):
    """MariaDB's max_statement_time bounds lock waits with the rest of a statement; MySQL's
    max_execution_time bounds SELECTs only, so the lock waits carry its bound for writes."""
    bounds = SessionBounds(idle_close_s=5, statement_ms=1_500)
    assert statement_assignments(bounds, mariadb=True) == [
        "SESSION wait_timeout = 5",
        "SESSION max_statement_time = 1.500",
    ]
    assert statement_assignments(bounds, mariadb=False) == bound_assignments(bounds, mariadb=False)


@pytest.mark.parametrize(
    ("sql", "mariadb", "named"),
    [
        ("SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(5)", True, "max_statement_time"),
        ("set session MAX_STATEMENT_TIME = 0", True, "max_statement_time"),
        ("SET @@session.max_statement_time := 0", True, "max_statement_time"),
        ("SET @@max_statement_time/**/=0", True, "max_statement_time"),
        ("SET @@max_statement_time /*!= 0*/", True, "max_statement_time"),
        ("SET @@session.`max_statement_time` = 0", True, "max_statement_time"),
        (
            "/*!100000 SET STATEMENT max_statement_time=0 FOR */ SELECT 1",
            True,
            "max_statement_time",
        ),
        (b"SET wait_timeout = 86400", True, "wait_timeout"),
        (bytearray(b"SET x=1, SESSION wait_timeout=9"), True, "wait_timeout"),
        ("SELECT /*+ MAX_EXECUTION_TIME(0) */ SLEEP(5)", False, "max_execution_time"),
        (
            "UPDATE /*+ SET_VAR(innodb_lock_wait_timeout=99) */ t SET a=1",
            False,
            "innodb_lock_wait_timeout",
        ),
        ("SET SESSION lock_wait_timeout = 99", False, "lock_wait_timeout"),
        ("INSERT INTO notes VALUES ('max_statement_time')", True, "max_statement_time"),
        # Reads, and what is not a bound here.
        ("SELECT @@max_statement_time", True, None),
        ("SELECT @@session.max_statement_time, @@SESSION.wait_timeout FROM dual", True, None),
        ("SELECT @@global.wait_timeout AS w", True, None),
        ("SET SESSION innodb_lock_wait_timeout = 1", True, None),  # MariaDB: not its bound
        ("SET max_statement_timeout_x = 1", True, None),
        ("SELECT 1", True, None),
    ],
)
def test_a_statement_that_names_a_bound_other_than_to_read_it_is_found(
    sql: str | bytes, mariadb: bool, named: str | None
) -> None:
    assert names_a_bound(sql, mariadb) == named


class FakeServer:
    """Answers every command on its end of a socket pair with an OK, noting each command's
    (sequence id, command byte, text); a client's writes are noted by the socket it uses."""

    def __init__(self, peer: socket.socket) -> None:
        self.peer = peer
        self.commands: list[tuple[int, int, str]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.peer.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self) -> None:
        ok = b"\x00\x00\x00" + struct.pack("<HH", 2, 0)  # no rows, autocommit, no warnings
        try:
            while True:
                header = self._read(4)
                payload = self._read(int.from_bytes(header[:3], "little"))
                self.commands.append((header[3], payload[0], payload[1:].decode()))
                self.peer.sendall(len(ok).to_bytes(3, "little") + b"\x01" + ok)
        except (EOFError, OSError):
            return

    def queries(self) -> list[str]:
        return [text for _, command, text in self.commands if command == COMMAND.COM_QUERY]


class CountingSocket:
    """The client's socket, counting its writes."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


LEASE_MS = 60_000


@pytest.fixture
def served(
    pair: tuple[socket.socket, socket.socket],
) -> Iterator[tuple[Any, FakeServer, CountingSocket, LeaseBound, FakeClock]]:
    """A pymysql connection to a fake MariaDB, started under a lease of LEASE_MS."""
    ours, peer = pair
    server = FakeServer(peer)
    connection: Any = pymysql.connections.Connection(defer_connect=True, autocommit=True)
    sock = CountingSocket(ours)
    connection._sock = sock
    connection._rfile = ours.makefile("rb")
    connection._current_timeout = None
    connection._next_seq_id = 0
    connection.server_version = MARIADB
    connection.server_status = 2
    clock = FakeClock()
    bound = LeaseBound(connection, clock)
    bound.start(clock.now_ms() + LEASE_MS)
    yield connection, server, sock, bound, clock
    bound.stop()
    connection._rfile.close()


def statement(connection: Any, sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def test_every_statement_carries_the_bound_in_its_own_write(served: Any) -> None:
    """Early in the lease as later: whatever ran before may have changed the session's
    bounds out of sight (a stored function, a prepared statement)."""
    connection, server, sock, _, clock = served
    sock.writes.clear()
    clock.advance(30_000)
    usable_ms = LEASE_MS - 30_000 - CLOSE_LEAD_MS

    statement(connection, "DO 1")

    (burst,) = sock.writes  # one write: the SET and the statement pipelined
    assert [(seq, command) for seq, command, _ in server.commands[-2:]] == [
        (0, COMMAND.COM_QUERY),
        (0, COMMAND.COM_QUERY),
    ]
    assert len(burst) == sum(len(text) + 5 for _, _, text in server.commands[-2:])
    assert server.queries()[-2:] == [
        f"SET SESSION wait_timeout = 30, SESSION max_statement_time = {usable_ms / 1000:.3f}",
        "DO 1",
    ]
    # The next statement too, at once; the connection is in step (each answer was read
    # as its own).
    statement(connection, "DO 2")
    assert server.queries()[-2:] == [
        f"SET SESSION wait_timeout = 30, SESSION max_statement_time = {usable_ms / 1000:.3f}",
        "DO 2",
    ]
    assert len(sock.writes) == 2


def test_a_statement_that_sets_a_bound_is_refused_unsent(served: Any) -> None:
    connection, server, sock, _, _ = served
    sock.writes.clear()

    with pytest.raises(BoundRefused, match="max_statement_time") as raised:
        statement(connection, "SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(5)")

    assert isinstance(raised.value, pymysql.err.OperationalError)
    assert raised.value.args[0] == 1227
    assert sock.writes == []
    statement(connection, "SELECT @@session.max_statement_time")  # a read goes
    assert server.queries()[-1] == "SELECT @@session.max_statement_time"


def test_with_nothing_left_of_the_lease_no_statement_is_sent(served: Any) -> None:
    """Nothing is left once the lease's end less the close lead has come: the guard's
    deadline, which the statement cannot outrun, whichever fires first."""
    connection, server, sock, _, clock = served
    clock.advance(LEASE_MS - CLOSE_LEAD_MS - 1)
    statement(connection, "DO 0")  # 1 ms left: still sent, bounded by it
    sock.writes.clear()
    clock.advance(1)

    with pytest.raises(LeaseEnded, match="lease has ended") as raised:
        statement(connection, "DO 1")

    assert isinstance(raised.value, pymysql.err.OperationalError)
    assert sock.writes == []
    assert "DO 1" not in server.queries()
    assert server.queries()[-2:] == [
        "SET SESSION wait_timeout = 1, SESSION max_statement_time = 0.001",
        "DO 0",
    ]


def test_lease_bound_own_statements_are_not_rebounded(served: Any) -> None:
    """A renewal's bound is set by one statement of its own, not preceded by another."""
    connection, server, sock, bound, clock = served
    clock.advance(30_000)
    sock.writes.clear()

    bound.extend(clock.now_ms() + LEASE_MS, renewed=True)
    statement(connection, "DO 1")

    assert len(sock.writes) == 2
    assert server.queries()[-3].startswith("SET SESSION max_statement_time = 59.750,")
    assert server.queries()[-2].startswith("SET SESSION wait_timeout = 60,")
    assert server.queries()[-1] == "DO 1"
