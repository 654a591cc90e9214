"""What a body may do to its connection, against the real MariaDB (issue 23, items 3 and 4).

A warm connection's next invocation gets the connection as it was opened, whatever the body
changed through SQL or pymysql's own calls (`autocommit()`, `set_character_set()`,
`select_db()`, its cursor class). A body cannot lift the bound its lease puts on its
statements: a statement that sets a bound is refused unsent, one that changed the bounds out
of sight has them set again before the next statement runs, and a reconnect inside the lease
is bounded as the first connection was. Where the body still can (several statements in one
query), MariaDB's own limit on the application user's connections keeps the next holder out
until the old session is gone."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from typing import TYPE_CHECKING, Any

import pymysql
import pymysql.cursors
import pytest

from adapters.clock import SystemClock
from adapters.memory import InMemoryLeaseStore
from adapters.mysql import (
    USER_LIMIT_REACHED,
    DatabaseError,
    MySqlConnector,
    MySqlEndpoint,
    ensure_app_user,
)
from adapters.mysql_session import BoundRefused, LeaseEnded
from domain import Quota
from domain.tokens import new_secret
from domain.warm import KeepWarm
from local.demo_setup import mysql_from_environment
from service.client import ConnectionLeases

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

if TYPE_CHECKING:
    from typing import TypeAlias

    Connection: TypeAlias = pymysql.connections.Connection[Any]

DB = "orders-mysql"
LEASE_MS = 1_200  # a per-invocation lease: usable for 950 ms (the close lead is 250 ms)
OVERRUN_S = 5  # a statement that would run this long if nothing bounded it


@pytest.fixture
def mysql() -> MySqlEndpoint:
    return mysql_from_environment()


@pytest.fixture
def admin(mysql: MySqlEndpoint) -> Iterator[Connection]:
    with closing(MySqlConnector(mysql, None)()) as connection:
        yield connection


@pytest.fixture
def table(admin: Connection) -> Iterator[str]:
    name = f"bound_rows_{uuid.uuid4().hex[:8]}"
    run(admin, f"CREATE TABLE {name} (id INT PRIMARY KEY, note VARCHAR(16)) ENGINE=InnoDB")
    yield name
    run(admin, f"DROP TABLE IF EXISTS {name}")


def run(connection: Connection, *statements: str) -> None:
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def one(connection: Connection, sql: str, *args: object) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, args or None)
        row = cursor.fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def session_of(connection: Connection) -> int:
    raw: Any = connection  # thread_id is untyped in the stubs
    return int(raw.thread_id())


def on_server(admin: Connection, session: int) -> bool:
    return bool(
        one(admin, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", session)
    )


def opener(mysql: MySqlEndpoint, **options: Any) -> Callable[[], Connection]:
    """pymysql's own connect, with pymysql's defaults (autocommit off) unless told."""

    def open_one() -> Connection:
        return pymysql.connect(
            host=mysql.host,
            port=mysql.port,
            user=mysql.user,
            password=mysql.password,
            **{"database": mysql.database, **options},
        )

    return open_one


def quota(limit: int = 1) -> InMemoryLeaseStore:
    store = InMemoryLeaseStore(SystemClock())
    store.set_quota(DB, Quota(limit=limit, default_ttl_ms=30_000))
    return store


@pytest.fixture
def warm() -> Iterator[ConnectionLeases]:
    leases = ConnectionLeases(quota(), DB, keep_warm=KeepWarm(hold_ms=30_000, idle_close_s=5))
    yield leases
    leases.close()


# Item 3: what a body changes through pymysql's own calls, each with what the next
# invocation must find instead.
def driver_autocommit(connection: Connection, table: str) -> None:
    connection.autocommit(True)


def autocommit_as_opened(connection: Connection, table: str) -> None:
    assert connection.get_autocommit() is False
    assert one(connection, "SELECT @@autocommit") == 0
    run(connection, f"INSERT INTO {table} VALUES (2, 'rolled back')")
    connection.rollback()  # undoes the insert: the connection was opened with autocommit off
    assert one(connection, f"SELECT COUNT(*) FROM {table}") == 0


def driver_character_set(connection: Connection, table: str) -> None:
    connection.set_character_set("latin1", "latin1_bin")


def character_set_as_opened(connection: Connection, table: str) -> None:
    assert (connection.charset, connection.collation, connection.encoding) == (
        "utf8mb4",
        None,
        "utf8",
    )
    assert one(
        connection,
        "SELECT @@character_set_client, @@character_set_connection, @@character_set_results",
    ) == ("utf8mb4", "utf8mb4", "utf8mb4")
    assert one(connection, "SELECT %s", "zł €") == "zł €"  # none of it is latin1


def driver_database(connection: Connection, table: str) -> None:
    connection.select_db("information_schema")


def database_as_opened(connection: Connection, table: str) -> None:
    assert one(connection, "SELECT DATABASE()") == "test"


def driver_cursor_class_and_converters(connection: Connection, table: str) -> None:
    connection.cursorclass = pymysql.cursors.DictCursor
    raw: Any = connection
    raw.decoders[pymysql.constants.FIELD_TYPE.LONGLONG] = str


def cursor_class_and_converters_as_opened(connection: Connection, table: str) -> None:
    assert one(connection, "SELECT 7") == 7  # a tuple row, not a dict, and an int


def driver_sql_mode(connection: Connection, table: str) -> None:
    raw: Any = connection
    raw.sql_mode = "ANSI_QUOTES"  # what pymysql's next connect would send
    run(connection, "SET SESSION sql_mode = 'ANSI_QUOTES'")


def sql_mode_as_opened(connection: Connection, table: str) -> None:
    raw: Any = connection
    assert raw.sql_mode is None
    assert one(connection, "SELECT @@session.sql_mode = @@global.sql_mode") == 1


DRIVER_CHANGES = [
    (driver_autocommit, autocommit_as_opened),
    (driver_character_set, character_set_as_opened),
    (driver_database, database_as_opened),
    (driver_cursor_class_and_converters, cursor_class_and_converters_as_opened),
    (driver_sql_mode, sql_mode_as_opened),
]


@pytest.mark.parametrize(
    ("change", "as_opened"), DRIVER_CHANGES, ids=[change.__name__ for change, _ in DRIVER_CHANGES]
)
def test_what_a_body_changed_through_the_driver_is_gone_by_the_next_invocation(
    change: Callable[[Connection, str], None],
    as_opened: Callable[[Connection, str], None],
    warm: ConnectionLeases,
    mysql: MySqlEndpoint,
    table: str,
) -> None:
    connect = opener(mysql)  # pymysql's defaults: autocommit off, utf8mb4, tuples
    with warm.connect(connect, ttl_ms=5_000) as first:
        session = session_of(first)
        run(first, f"INSERT INTO {table} VALUES (1, 'kept')")
        first.rollback()
        change(first, table)

    with warm.connect(connect, ttl_ms=5_000) as second:
        assert second is first
        assert session_of(second) == session  # reset, not reopened
        as_opened(second, table)


def test_a_connection_opened_without_a_database_that_chose_one_is_not_reused(
    warm: ConnectionLeases, mysql: MySqlEndpoint
) -> None:
    """No command takes a session back to no database: the reset says it cannot clean it,
    and the next invocation gets a new connection under the same lease."""
    connect = opener(mysql, database=None, autocommit=True)
    with warm.connect(connect, ttl_ms=5_000) as first:
        session = session_of(first)
        assert one(first, "SELECT DATABASE()") is None
    with warm.connect(connect, ttl_ms=5_000) as again:
        assert session_of(again) == session  # nothing chosen: reset and reused
        again.select_db("test")
    with warm.connect(connect, ttl_ms=5_000) as second:
        assert session_of(second) != session
        assert one(second, "SELECT DATABASE()") is None


# Item 4: a body that tries to lift its bound.
def per_invocation() -> ConnectionLeases:
    return ConnectionLeases(quota(), DB)


def lifted_through_sql(connection: Connection, admin: Connection) -> None:
    """The bound lifted out of sight of the text: connlease sets it again before the next
    statement."""
    run(connection, "EXECUTE IMMEDIATE CONCAT('SET SESSION max_', 'statement_time = 0')")


def lifted_in_a_stored_function(connection: Connection, admin: Connection) -> None:
    function = f"lift_{uuid.uuid4().hex[:8]}"
    run(
        admin,
        f"CREATE FUNCTION {function}() RETURNS INT NOT DETERMINISTIC NO SQL"
        " BEGIN SET SESSION max_statement_time = 0; RETURN 1; END",
    )
    try:
        assert one(connection, f"SELECT {function}()") == 1
    finally:
        run(admin, f"DROP FUNCTION {function}")


def lifted_through_set_character_set(connection: Connection, admin: Connection) -> None:
    """pymysql writes the collation into its SET NAMES as given, past the statement
    wrapper."""
    connection.set_character_set("utf8mb4", "utf8mb4_general_ci, max_statement_time = 0")


def reconnected(connection: Connection, admin: Connection) -> None:
    connection.close()
    connection.connect()


def reconnected_by_ping(connection: Connection, admin: Connection) -> None:
    connection.close()
    with pytest.warns(DeprecationWarning, match="reconnect"):
        connection.ping(reconnect=True)


LIFTS = [
    lifted_through_sql,
    lifted_in_a_stored_function,
    lifted_through_set_character_set,
    reconnected,
    reconnected_by_ping,
]


@pytest.mark.parametrize("lift", LIFTS, ids=lambda lift: lift.__name__)
def test_a_statement_after_a_lifted_bound_still_ends_with_the_lease(
    lift: Callable[[Connection, Connection], None], mysql: MySqlEndpoint, admin: Connection
) -> None:
    started = time.monotonic()
    with per_invocation().connect(MySqlConnector(mysql, None), ttl_ms=LEASE_MS) as connection:
        lift(connection, admin)
        session = session_of(connection)
        assert one(connection, "SELECT @@session.max_statement_time") > 0
        assert one(connection, "SELECT @@session.wait_timeout") <= LEASE_MS / 1000 + 1
        with suppress(pymysql.err.MySQLError):
            run(connection, f"SELECT SLEEP({OVERRUN_S})")  # 1, 1969 or 2013: the bound ended it
        ended_after = time.monotonic() - started
    while on_server(admin, session) and time.monotonic() < started + OVERRUN_S:
        time.sleep(0.02)
    gone_after = time.monotonic() - started

    assert ended_after < LEASE_MS / 1000
    assert gone_after < LEASE_MS / 1000, gone_after  # gone before the lease ended


SETS_A_BOUND = [
    "SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP(5)",
    "SET SESSION max_statement_time = 0",
    "SET @@session.max_statement_time := 0",
    "/*!100000 SET STATEMENT max_statement_time = 0 FOR */ SELECT SLEEP(5)",
    "SET SESSION wait_timeout = 86400",
]


@pytest.mark.parametrize("sql", SETS_A_BOUND)
def test_a_statement_that_sets_its_own_bound_is_refused_before_it_is_sent(
    sql: str, mysql: MySqlEndpoint
) -> None:
    with per_invocation().connect(MySqlConnector(mysql, None), ttl_ms=10_000) as connection:
        queries = one(connection, "SHOW SESSION STATUS LIKE 'Questions'")[1]
        with pytest.raises(BoundRefused) as raised:
            run(connection, sql)
        assert raised.value.args[0] == 1227
        # Nothing reached the server: only the status reads (each with its SET) are counted.
        assert int(one(connection, "SHOW SESSION STATUS LIKE 'Questions'")[1]) == int(queries) + 2
        assert 0 < one(connection, "SELECT @@session.max_statement_time") <= 10


def test_a_reconnect_after_the_lease_ended_is_refused_and_opens_nothing(
    mysql: MySqlEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    with per_invocation().connect(MySqlConnector(mysql, None), ttl_ms=400) as connection:
        time.sleep(0.45)  # past the lease: the guard has shut the socket
        connection.close()
        dialled: list[object] = []
        monkeypatch.setattr(
            "pymysql.connections.socket.create_connection",
            lambda *args, **kwargs: dialled.append(args),
        )
        with pytest.raises(LeaseEnded):
            connection.connect()
        assert not connection.open
        assert dialled == []  # refused before a socket was opened


def test_a_reconnect_does_not_take_the_multi_statements_or_init_command_the_body_set(
    mysql: MySqlEndpoint,
) -> None:
    """A body that turns CLIENT.MULTI_STATEMENTS on (or sets an init_command) and reconnects
    would get a session where one query lifts its bound and then outlives the lease: the
    reconnect opens it as the first connection was, without them."""
    multi = pymysql.constants.CLIENT.MULTI_STATEMENTS
    with per_invocation().connect(opener(mysql), ttl_ms=10_000) as connection:
        raw: Any = connection
        assert not raw.client_flag & multi
        raw.client_flag |= multi
        raw.init_command = "SET @lifted = 1"
        connection.close()
        with pytest.warns(DeprecationWarning, match="reconnect"):
            connection.ping(reconnect=True)
        assert not raw.client_flag & multi
        assert raw.init_command is None
        assert one(connection, "SELECT @lifted") is None
        with pytest.raises(pymysql.err.ProgrammingError):  # 1064: one statement a query
            run(connection, "SET @a = 1; SELECT SLEEP(5)")
        assert 0 < one(connection, "SELECT @@session.max_statement_time") <= 10


def test_a_connection_kept_past_its_with_is_refused_statements_and_reconnects(
    mysql: MySqlEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body keeps the connection object (a global) after its `with` gave the lease back,
    its bound collected: a reconnect and a statement on it raise LeaseEnded and open
    nothing, though the lease itself has time left, while another holder has the quota's
    only lease."""
    store = quota()
    kept: list[Connection] = []
    with ConnectionLeases(store, DB).connect(opener(mysql), ttl_ms=10_000) as connection:
        kept.append(connection)
    assert store.status(DB).in_use == 0
    assert store.acquire(DB, "other", 10_000) is not None  # the only lease, someone else's
    dialled: list[object] = []
    monkeypatch.setattr(
        "pymysql.connections.socket.create_connection",
        lambda *args, **kwargs: dialled.append(args),
    )
    stale = kept[0]
    with pytest.raises(LeaseEnded), pytest.warns(DeprecationWarning, match="reconnect"):
        stale.ping(reconnect=True)
    with pytest.raises(LeaseEnded):
        stale.connect()
    with pytest.raises(LeaseEnded):
        stale.query("SELECT 1")
    assert not stale.open
    assert dialled == []


def test_a_stopped_bound_refuses_statements_and_reconnects_until_extended(
    mysql: MySqlEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Still alive but stopped (given back, or between a warm connection's invocations):
    the lease's end still ahead does not let a statement or a reconnect through."""
    from service.lease_bound import LeaseBound  # noqa: PLC0415

    connection = opener(mysql)()
    bound = LeaseBound(connection, SystemClock())
    bound.start(SystemClock().now_ms() + 10_000)
    assert one(connection, "SELECT 1") == 1
    bound.stop()
    with pytest.raises(LeaseEnded):
        one(connection, "SELECT 1")
    connection.close()
    dialled: list[object] = []
    with monkeypatch.context() as patched:
        patched.setattr(
            "pymysql.connections.socket.create_connection",
            lambda *args, **kwargs: dialled.append(args),
        )
        with pytest.raises(LeaseEnded):
            connection.connect()
    assert dialled == []
    bound.extend(SystemClock().now_ms() + 10_000, renewed=False)  # the next invocation
    connection.connect()
    try:
        assert 0 < one(connection, "SELECT @@session.max_statement_time") <= 10
    finally:
        bound.stop()
        connection.close()


def test_mariadb_bounds_a_lock_wait_the_body_lengthened(
    mysql: MySqlEndpoint, admin: Connection, table: str
) -> None:
    """On MariaDB a body may set its own lock waits (not a bound there): the statement bound
    still ends a row-lock wait with the lease."""
    run(admin, f"INSERT INTO {table} VALUES (1, 'locked')", "BEGIN")
    run(admin, f"SELECT * FROM {table} WHERE id = 1 FOR UPDATE")
    try:
        started = time.monotonic()
        with per_invocation().connect(MySqlConnector(mysql, None), ttl_ms=LEASE_MS) as connection:
            run(connection, "SET SESSION innodb_lock_wait_timeout = 50, lock_wait_timeout = 50")
            with pytest.raises(pymysql.err.MySQLError):
                run(connection, f"UPDATE {table} SET note = 'waited' WHERE id = 1")
        assert time.monotonic() - started < LEASE_MS / 1000
    finally:
        admin.rollback()


@pytest.fixture
def app_user(mysql: MySqlEndpoint, admin: Connection) -> Iterator[MySqlEndpoint]:
    """An application user whose MAX_USER_CONNECTIONS is a quota of 1."""
    user, password = f"bound_{uuid.uuid4().hex[:8]}", new_secret()
    ensure_app_user(admin, user, password, mysql.database, 1, require_ssl=False)
    yield MySqlEndpoint(mysql.host, mysql.port, user, password, mysql.database)
    run(admin, f"DROP USER IF EXISTS '{user}'@'%'")


def test_where_the_body_still_lifts_its_bound_mariadb_keeps_the_next_holder_out(
    app_user: MySqlEndpoint, admin: Connection
) -> None:
    """Several statements in one query (a connection opened with MULTI_STATEMENTS): the
    SET before the query bounds its first statement only, so one that lifts the bound out
    of sight lets the next outlive the lease. The lease goes back at its end; the next
    holder gets it, and MariaDB refuses its connection (1226) until the old session ends."""
    store = quota()
    leases = ConnectionLeases(store, DB)
    connect = opener(
        app_user, autocommit=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS
    )
    started = time.monotonic()
    with leases.connect(connect, ttl_ms=800) as connection:
        session = session_of(connection)
        with suppress(pymysql.err.MySQLError):  # the guard shuts the socket at the lease's end
            run(
                connection,
                "EXECUTE IMMEDIATE CONCAT('SET SESSION max_', 'statement_time = 0');"
                " SELECT SLEEP(2)",
            )
    assert time.monotonic() - started < 1.0
    assert store.status(DB).in_use == 0  # given back
    assert on_server(admin, session)  # the old session sleeps on, past its lease

    refusals: list[int] = []
    while on_server(admin, session) and time.monotonic() < started + 4:
        try:
            with leases.connect(MySqlConnector(app_user, None), ttl_ms=5_000):
                break  # admitted: the old session must be gone
        except DatabaseError as error:
            refusals.append(error.code)
            time.sleep(0.1)
    assert refusals
    assert set(refusals) == {USER_LIMIT_REACHED}
    assert not on_server(admin, session)
    with leases.connect(MySqlConnector(app_user, None), ttl_ms=5_000) as successor:
        assert one(successor, "SELECT 1") == 1
    assert 1.9 < time.monotonic() - started < 4
