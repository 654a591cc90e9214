"""A pymysql connection under a lease, against the real MariaDB: every statement is bounded by
what is left of the lease when it starts, in the statement's own socket write, so that a
statement started late in the lease ends, and the server drops the connection, at the
lease's end rather than a whole lease later."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pymysql
import pymysql.cursors
import pytest
from pymysql.constants import COMMAND

from adapters.clock import SystemClock
from adapters.mysql import MySqlConnector, MySqlEndpoint
from adapters.mysql_session import LeaseEnded
from local.demo_setup import mysql_from_environment
from service.lease_bound import CLOSE_LEAD_MS, LeaseBound
from tests.integration.test_mysql_session import (
    commands,
    on_server,
    one,
    record,
    round_trips,
    run,
    thread_id,
)

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    from typing import TypeAlias

    Connection: TypeAlias = pymysql.connections.Connection[Any]

LATER_S = 0.3  # long enough past the start for a statement to re-bound its session


@pytest.fixture
def connect() -> Iterator[Callable[[], Connection]]:
    opened: list[Connection] = []
    connector = MySqlConnector(mysql_from_environment(), None)

    def open_one() -> Connection:
        opened.append(connector())
        return opened[-1]

    yield open_one
    for connection in opened:
        if connection.open:
            connection.close()


@pytest.fixture
def bounds() -> Iterator[Callable[[Connection, int], LeaseBound]]:
    """Starts a connection's lease of `lease_ms` from now; stops its guard at the end."""
    started: list[LeaseBound] = []

    def start(connection: Connection, lease_ms: int) -> LeaseBound:
        bound = LeaseBound(connection, SystemClock())
        bound.start(SystemClock().now_ms() + lease_ms)
        started.append(bound)
        return bound

    yield start
    for bound in started:
        bound.stop()


def set_options(connection: Connection) -> int:
    """How many SET statements the session has run (SHOW STATUS itself is none)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Com_set_option'")
        row = cursor.fetchone()
    assert row is not None
    return int(row[1])


def writes(calls: list[tuple[str, bytes]]) -> list[bytes]:
    return [data for kind, data in calls if kind == "write"]


def test_a_statement_started_late_in_the_lease_ends_and_leaves_the_server_by_its_end(
    connect: Callable[[], Connection], bounds: Callable[[Connection, int], LeaseBound]
) -> None:
    """A 2 s lease: the session's bound set at the start is 1.75 s (the close lead). Bounded
    only then, a SLEEP(5) from 1.5 s would hold its session on the server until 3.25 s,
    after the guard closed the socket at 1.75 s; bounded by what is left when it starts,
    it ends, and the server drops the session, by the lease's end."""
    connection, witness = connect(), connect()
    session = thread_id(connection)
    started = time.monotonic()
    bound = bounds(connection, 2_000)

    time.sleep(max(0.0, started + 1.5 - time.monotonic()))
    try:
        outcome: object = one(connection, "SELECT SLEEP(5)")  # 1: MariaDB interrupted it
    except pymysql.err.MySQLError as error:  # 1969: it did, by an error; 2013: the guard
        outcome = error.args[0]
    ended_after = time.monotonic() - started

    assert outcome in {1, 1969, 2013}
    assert 1.6 < ended_after < 2.1, ended_after
    while on_server(witness, session) and time.monotonic() < started + 4:
        time.sleep(0.02)
    gone_after = time.monotonic() - started
    assert not on_server(witness, session)
    assert gone_after < 2.3, gone_after  # not SLEEP's 6.5 s nor the start's bound's 3.25 s
    bound.stop()
    assert bound.fired or outcome != 2013


def test_every_statement_carries_the_bound_in_its_own_write(
    connect: Callable[[], Connection], bounds: Callable[[Connection, int], LeaseBound]
) -> None:
    """Early in the lease as later: the SET goes in the statement's own write, both packets
    with sequence id 0, one round trip, and the session holds what is left then."""
    connection = connect()
    bounds(connection, 10_000)
    recorder = record(connection)
    before = set_options(connection)
    assert set_options(connection) == before + 1  # SHOW STATUS itself is none: its SET is

    time.sleep(LATER_S)
    recorder.calls.clear()
    held = one(
        connection,
        "SELECT @@session.max_statement_time, @@session.wait_timeout,"
        " @@session.innodb_lock_wait_timeout",
    )

    (burst,) = writes(recorder.calls)
    assert commands(burst) == [(0, COMMAND.COM_QUERY), (0, COMMAND.COM_QUERY)]
    assert b"SET SESSION wait_timeout = 10, SESSION max_statement_time = " in burst
    assert round_trips(recorder.calls) == 1
    usable_s = (10_000 - CLOSE_LEAD_MS) / 1000 - LATER_S
    assert usable_s - 0.5 < held[0] <= usable_s
    assert held[1] == math.ceil(held[0])  # the idle close: what is left, rounded up
    assert held[2] == 10  # set once at the start: MariaDB's statement bound covers lock waits
    assert set_options(connection) == before + 3  # a SET with each statement, counted


def test_a_failing_statement_after_a_pipelined_set_leaves_the_connection_in_step(
    connect: Callable[[], Connection], bounds: Callable[[Connection, int], LeaseBound]
) -> None:
    connection = connect()
    bounds(connection, 10_000)
    time.sleep(LATER_S)

    with pytest.raises(pymysql.err.ProgrammingError) as raised:
        run(connection, "SELEC 1")

    assert raised.value.args[0] == 1064
    assert one(connection, "SELECT @@session.max_statement_time") < 9.75 - LATER_S + 0.01
    assert one(connection, "SELECT 1") == 1


def test_executemany_sends_its_bytearray_statement_pipelined_too(
    connect: Callable[[], Connection], bounds: Callable[[Connection, int], LeaseBound]
) -> None:
    connection = connect()
    bounds(connection, 10_000)
    run(connection, "CREATE TEMPORARY TABLE bound_many (a INT)")
    recorder = record(connection)
    time.sleep(LATER_S)

    with connection.cursor() as cursor:
        cursor.executemany("INSERT INTO bound_many VALUES (%s)", [(1,), (2,), (3,)])

    (burst,) = writes(recorder.calls)
    assert commands(burst) == [(0, COMMAND.COM_QUERY), (0, COMMAND.COM_QUERY)]
    assert one(connection, "SELECT COUNT(*) FROM bound_many") == 3


def test_with_an_unbuffered_result_unread_the_set_goes_first_on_its_own(
    connect: Callable[[], Connection], bounds: Callable[[Connection, int], LeaseBound]
) -> None:
    """pymysql finishes an unread unbuffered result before its next command; the pipelined
    path does not know how, so the SET and the statement go one after the other."""
    connection = connect()
    bounds(connection, 10_000)
    unbuffered = connection.cursor(pymysql.cursors.SSCursor)
    unbuffered.execute("SELECT seq FROM seq_1_to_1000")
    unbuffered.fetchone()
    time.sleep(LATER_S)

    with pytest.warns(UserWarning, match="unbuffered"):
        held = one(connection, "SELECT @@session.max_statement_time")

    assert held < 9.75 - LATER_S + 0.01
    del unbuffered


def test_with_nothing_left_of_the_lease_the_statement_is_not_sent(
    connect: Callable[[], Connection], bounds: Callable[[Connection, int], LeaseBound]
) -> None:
    connection = connect()
    bound = bounds(connection, 800)  # usable for 600 ms: a quarter of it is the close lead
    raw: Any = connection
    sent: list[bytes] = []
    write = raw._write_bytes

    def noting(data: bytes) -> None:
        sent.append(data)
        write(data)

    raw._write_bytes = noting  # a recording socket would be shut by the guard it wraps
    time.sleep(0.7)

    with pytest.raises(LeaseEnded, match="lease has ended") as raised:
        run(connection, "SELECT 1")

    assert isinstance(raised.value, pymysql.err.OperationalError)
    assert sent == []
    bound.stop()
    assert bound.fired


def test_the_lease_bounds_lock_waits_too(
    connect: Callable[[], Connection],
    bounds: Callable[[Connection, int], LeaseBound],
) -> None:
    """On MySQL max_execution_time leaves UPDATE and DELETE unbounded; the lock-wait
    timeouts the same SET carries end such a wait within a second of the bound."""
    connection, holder = connect(), connect()
    run(holder, "CREATE TABLE IF NOT EXISTS bound_lock (id INT PRIMARY KEY) ENGINE=InnoDB")
    run(holder, "INSERT IGNORE INTO bound_lock VALUES (1)")
    try:
        run(holder, "BEGIN", "SELECT * FROM bound_lock WHERE id = 1 FOR UPDATE")
        bounds(connection, 1_400)  # usable for 1.15 s: lock waits of 2 s
        assert one(connection, "SELECT @@session.innodb_lock_wait_timeout") == 2
        # MariaDB's statement bound ends the wait first; either way, within the lease.
        started = time.monotonic()
        with pytest.raises(pymysql.err.MySQLError):
            run(connection, "UPDATE bound_lock SET id = 2 WHERE id = 1")
        assert time.monotonic() - started < 1.4
    finally:
        run(holder, "ROLLBACK", "DROP TABLE IF EXISTS bound_lock")


def test_a_warm_connection_opened_without_autocommit_keeps_it_across_invocations(
    mysql: MySqlEndpoint,
) -> None:
    """End to end: the reset after each invocation restores autocommit off, so the next
    invocation's rollback() still undoes its writes."""
    from adapters.memory import InMemoryLeaseStore  # noqa: PLC0415
    from domain import Quota  # noqa: PLC0415
    from domain.warm import KeepWarm  # noqa: PLC0415
    from service.client import ConnectionLeases  # noqa: PLC0415

    def open_without_autocommit() -> Connection:
        return pymysql.connect(
            host=mysql.host,
            port=mysql.port,
            user=mysql.user,
            password=mysql.password,
            database=mysql.database,
        )

    admin = MySqlConnector(mysql, None)()
    run(admin, "CREATE TABLE IF NOT EXISTS bound_warm (id INT PRIMARY KEY) ENGINE=InnoDB")
    run(admin, "DELETE FROM bound_warm")
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota("orders-mysql", Quota(limit=1, default_ttl_ms=30_000))
    leases = ConnectionLeases(
        store, "orders-mysql", keep_warm=KeepWarm(hold_ms=5_000, idle_close_s=5)
    )
    try:
        with leases.connect(open_without_autocommit, ttl_ms=5_000) as first:
            run(first, "INSERT INTO bound_warm VALUES (1)")
            first.commit()
        with leases.connect(open_without_autocommit, ttl_ms=5_000) as second:
            assert second is first
            assert not second.get_autocommit()
            run(second, "INSERT INTO bound_warm VALUES (2)")
            second.rollback()
        assert one(admin, "SELECT COUNT(*) FROM bound_warm") == 1
    finally:
        leases.close()
        run(admin, "DROP TABLE IF EXISTS bound_warm")
        admin.close()


@pytest.fixture
def mysql() -> MySqlEndpoint:
    return mysql_from_environment()
