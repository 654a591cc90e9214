"""The session adapter without a server: the SQL each flavour gets, version detection, and
the lease guard on a socket pair."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from adapters.mysql_session import (
    LeaseGuard,
    SessionBounds,
    bound_assignments,
    reset,
    restore_statements,
    server_version,
    set_socket_timeouts,
    supports_reset,
)

MARIADB = "5.5.5-10.11.19-MariaDB-0+deb12u1"


class FakeConnection:
    """The attributes of a pymysql connection that the adapter reads."""

    def __init__(self, version: str = MARIADB, sock: socket.socket | None = None) -> None:
        self.server_version = version
        self.charset = "utf8mb4"
        self.collation: str | None = None
        self.sql_mode: str | None = None
        self.init_command: str | None = None
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


def test_each_flavour_gets_its_own_statement_bound() -> None:
    bounds = SessionBounds(idle_close_s=5, statement_ms=300)
    assert bound_assignments(bounds, mariadb=True) == [
        "SESSION wait_timeout = 5",
        "SESSION max_statement_time = 0.300",
    ]
    assert bound_assignments(bounds, mariadb=False) == [
        "SESSION wait_timeout = 5",
        "SESSION max_execution_time = 300",
    ]
    assert bound_assignments(SessionBounds(None, None), mariadb=True) == []


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


def test_without_an_init_command_the_restore_is_one_statement() -> None:
    connection = fake()
    connection.collation = "utf8mb4_bin"
    connection.sql_mode = "ANSI"
    assert restore_statements(connection, SessionBounds(7, 2_500)) == [
        "SET NAMES utf8mb4 COLLATE utf8mb4_bin, SESSION sql_mode = 'ANSI', autocommit = 1,"
        " SESSION wait_timeout = 7, SESSION max_statement_time = 2.500"
    ]


def test_an_init_command_runs_where_connect_runs_it_and_the_bounds_win_over_it() -> None:
    connection = fake("8.0.36")
    connection.init_command = "SET SESSION wait_timeout = 1"
    assert restore_statements(connection, SessionBounds(7, 250)) == [
        "SET NAMES utf8mb4",
        "SET SESSION wait_timeout = 1",
        "SET autocommit = 1, SESSION wait_timeout = 7, SESSION max_execution_time = 250",
    ]


def test_reset_on_a_closed_or_old_connection_sends_nothing(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    assert reset(fake(sock=None), SessionBounds(None, None)) is False
    assert reset(fake("5.6.51", sock=ours), SessionBounds(None, None)) is False
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
