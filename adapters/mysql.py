"""MySQL through pymysql: connections for the workload, the sample's Employees table, and
the application user the functions log in as.

pymysql builds a fresh default TLS context on every connect unless it is given one
(37 ms a connect on these machines, DESIGN.md); the connector takes one context, built
once per execution environment, and passes it to every connect.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pymysql.cursors

from adapters.secrets import Credentials, FixedCredentials, Login
from domain import ConnleaseError, InvalidInput

TOO_MANY_CONNECTIONS = 1040
ACCESS_DENIED = 1045  # ER_ACCESS_DENIED_ERROR: wrong password, or TLS missing under REQUIRE SSL
USER_LIMIT_REACHED = 1226  # ER_USER_LIMIT_REACHED: the account's MAX_USER_CONNECTIONS
CLIENT_ERROR = 2003  # CR_CONN_HOST_ERROR: can't connect to the server
USER_LIMIT_PAUSES_S = (0.01, 0.05)  # before each retry of a connect refused with 1226

# What the functions' user may do, and no more: read and write the application's rows;
# CREATE TEMPORARY TABLES and LOCK TABLES because temporary tables and table locks are
# session state that a function (on the warm path, a kept connection) must be able to
# make and clean up. No DDL, no PROCESS (other sessions' queries), no SUPER, no GRANT.
APP_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES, LOCK TABLES"
# MySQL 8 allows 32 characters in a user name, MariaDB more: the smaller.
MAX_USER_LENGTH = 32
# MAX_USER_CONNECTIONS 0 means unlimited, never what a quota wants.
MAX_USER_CONNECTIONS = 4_294_967_295

EMPLOYEES = (
    (1, "Ada Lovelace", "Engineer", "2019-03-01"),
    (2, "Grace Hopper", "Architect", "2018-07-15"),
    (3, "Alan Turing", "Researcher", "2020-01-10"),
    (4, "Katherine Johnson", "Analyst", "2017-11-20"),
    (5, "Edsger Dijkstra", "Engineer", "2021-05-03"),
    (6, "Barbara Liskov", "Architect", "2016-09-12"),
    (7, "Donald Knuth", "Researcher", "2015-02-27"),
    (8, "Margaret Hamilton", "Engineer", "2022-08-08"),
    (9, "John Backus", "Analyst", "2023-04-17"),
    (10, "Frances Allen", "Engineer", "2024-06-30"),
)


class DatabaseError(ConnleaseError):
    """MySQL refused or failed a request; `code` is MySQL's error number."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"MySQL error {code}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def of(cls, error: pymysql.err.MySQLError) -> DatabaseError:
        code = error.args[0] if error.args and isinstance(error.args[0], int) else CLIENT_ERROR
        message = str(error.args[1]) if len(error.args) > 1 else str(error)
        return cls(code, message)


@dataclass(frozen=True)
class MySqlEndpoint:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str = "test"
    connect_timeout_s: float = 5.0
    # Without one, a server that accepts the socket but never answers (seen here under a
    # connection storm) hangs the caller until the invocation times out.
    read_timeout_s: float = 30.0

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context (with the RDS CA bundle in AWS); build it once, reuse it."""
    return ssl.create_default_context(cafile=ca_bundle)


class MySqlConnector:
    """A `connect` callable for the client library: one new connection per call.

    The login comes from `credentials` (default: the endpoint's user and password). When
    MySQL refuses it (1045), the password may have been rotated since this environment
    read it: the credentials are read again, once, and the connect is tried again if they
    changed. A second refusal is raised.
    """

    def __init__(
        self,
        endpoint: MySqlEndpoint,
        tls: ssl.SSLContext | None,
        credentials: Credentials | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._tls = tls
        self.credentials = credentials or FixedCredentials(Login(endpoint.user, endpoint.password))
        # Who it connects as, for messages; a secret's user is known once it has been read.
        self._user = endpoint.user if credentials is None else ""

    def describe(self) -> str:
        endpoint = self.endpoint
        where = f"{endpoint.host}:{endpoint.port}/{endpoint.database}"
        return f"{self._user}@{where}" if self._user else where

    def __call__(self) -> pymysql.connections.Connection[Any]:
        login = self.credentials.current()
        try:
            return self._connect_within_limit(login)
        except DatabaseError as refused:
            if refused.code != ACCESS_DENIED:
                raise
            fresh = self.credentials.refresh()
            if fresh == login:  # the same login would only be refused again
                raise
        return self._connect_within_limit(fresh)

    def _connect_within_limit(self, login: Login) -> pymysql.connections.Connection[Any]:
        # With MAX_USER_CONNECTIONS equal to the quota, the server may still count the
        # connection that the lease's previous holder has just closed: its thread is reaped
        # a few milliseconds after the client's quit (1 connect in 100 straight after a
        # close, here). A short pause lets it go; a slot held by a live connection (a
        # frozen holder's, whose lease expired) is still refused, as it should be.
        for pause_s in USER_LIMIT_PAUSES_S:
            try:
                return self._connect(login)
            except DatabaseError as refused:
                if refused.code != USER_LIMIT_REACHED:
                    raise
            time.sleep(pause_s)
        return self._connect(login)

    def _connect(self, login: Login) -> pymysql.connections.Connection[Any]:
        self._user = login.username
        tls: dict[str, Any] = {"ssl": self._tls} if self._tls else {"ssl_disabled": True}
        try:
            return pymysql.connect(
                host=self.endpoint.host,
                port=self.endpoint.port,
                user=login.username,
                password=login.password,
                database=self.endpoint.database,
                connect_timeout=self.endpoint.connect_timeout_s,
                read_timeout=self.endpoint.read_timeout_s,
                write_timeout=self.endpoint.read_timeout_s,
                autocommit=True,
                **tls,
            )
        except pymysql.err.MySQLError as error:
            raise DatabaseError.of(error) from error


def select_employees(connection: pymysql.connections.Connection[Any]) -> int:
    """The sample's query; returns how many rows came back."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, name, title, hired FROM Employees ORDER BY id")
            return len(cursor.fetchall())
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error


def seed_employees(connection: pymysql.connections.Connection[Any]) -> int:
    """Create the Employees table with its sample rows; safe to run again."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS Employees ("
                " id INT PRIMARY KEY, name VARCHAR(64) NOT NULL,"
                " title VARCHAR(64) NOT NULL, hired DATE NOT NULL)"
            )
            cursor.executemany(
                "INSERT IGNORE INTO Employees (id, name, title, hired) VALUES (%s, %s, %s, %s)",
                EMPLOYEES,
            )
            cursor.execute("SELECT COUNT(*) FROM Employees")
            (count,) = cursor.fetchone() or (0,)
            return int(count)
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error


def server_variable(connection: pymysql.connections.Connection[Any], name: str) -> int:
    """An integer server variable or status counter (max_connections, Threads_connected)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES"
                " WHERE VARIABLE_NAME = %s UNION ALL"
                " SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
                " WHERE VARIABLE_NAME = %s",
                (name.upper(), name.upper()),
            )
            row = cursor.fetchone()
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error
    if row is None:
        raise DatabaseError(0, f"the server has no variable {name}")
    return int(row[0])


def ensure_app_user(
    admin: pymysql.connections.Connection[Any],
    user: str,
    password: str,
    database: str,
    max_connections: int,
    *,
    require_ssl: bool = True,
    host: str = "%",
) -> None:
    """Create the application user, or bring an existing one to this password, TLS
    requirement and connection limit; grant it APP_PRIVILEGES on `database`. Safe to run
    again. The statements are those MySQL 8 and MariaDB 10.x both accept; the user name,
    host and password travel as escaped string literals, never formatted into the SQL.

    Privileges granted by hand beyond these are left: revoking them would fail the live
    connections' statements mid-flight."""
    _check_account(user, host)
    if not isinstance(password, str) or not password:
        raise InvalidInput("password", "the application user needs a non-empty password")
    _check_max_connections(max_connections)
    options = (
        f"IDENTIFIED BY %s REQUIRE {'SSL' if require_ssl else 'NONE'} WITH MAX_USER_CONNECTIONS %s"
    )
    account = (user, host)
    try:
        with admin.cursor() as cursor:
            # Created with its password in the same statement: a bare CREATE USER would
            # leave, for a moment, an account anyone could log in to without one.
            cursor.execute(
                f"CREATE USER IF NOT EXISTS %s@%s {options}", (*account, password, max_connections)
            )
            cursor.execute(f"ALTER USER %s@%s {options}", (*account, password, max_connections))
            # pymysql fills the placeholders with `%`: a `%` of the name's is doubled.
            target = grant_target(database).replace("%", "%%")
            cursor.execute(f"GRANT {APP_PRIVILEGES} ON {target} TO %s@%s", account)
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error


def set_max_user_connections(
    admin: pymysql.connections.Connection[Any], user: str, n: int, *, host: str = "%"
) -> None:
    """A quota change: the account's MAX_USER_CONNECTIONS. Connections already open stay;
    a lower limit refuses new ones (1226) until enough have closed."""
    _check_account(user, host)
    _check_max_connections(n)
    try:
        with admin.cursor() as cursor:
            cursor.execute("ALTER USER %s@%s WITH MAX_USER_CONNECTIONS %s", (user, host, n))
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error


def user_connections(connection: pymysql.connections.Connection[Any], user: str) -> int:
    """How many connections the server has admitted for `user`, from any host. Other
    users' connections are listed only to an account with PROCESS: count with an admin
    connection. A row still logging in (`Connect`) is not counted: the server decides at
    the end of the login whether MAX_USER_CONNECTIONS admits it, and lists it meanwhile
    (seen here while the only admitted connection still ran a statement: the newcomer was
    then refused, 1226). Nor is one being killed, nor the querying connection itself."""
    return len(connections_of(connection, user))


# Rows of the process list that hold no connection slot of their user: one still logging
# in (user_connections says why), one being killed, and the server's own threads (the
# event scheduler's): COMMAND NOT IN ('Connect', 'Killed', 'Daemon'), written out in each
# statement below (SQL built from pieces is what bandit, rightly, looks for).


@dataclass(frozen=True)
class ServerConnection:
    """One connection in the server's process list."""

    id: int
    user: str
    host: str
    command: str  # Sleep for an idle one, Query while it runs a statement
    seconds: int  # in its current command: for an idle one, since its last statement


def connections_by_user(connection: pymysql.connections.Connection[Any]) -> dict[str, int]:
    """Every user's connections, most first, as user_connections counts them; the
    querying connection is left out, so an operator's count shows only the others. Only
    an account with PROCESS sees other users' connections."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT USER, COUNT(*) FROM information_schema.PROCESSLIST"
                " WHERE COMMAND NOT IN ('Connect', 'Killed', 'Daemon') AND ID <> CONNECTION_ID()"
                " GROUP BY USER ORDER BY COUNT(*) DESC, USER"
            )
            return {str(user): int(count) for user, count in cursor.fetchall()}
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error


def connections_of(
    connection: pymysql.connections.Connection[Any], user: str
) -> list[ServerConnection]:
    """`user`'s connections, the longest in their current command first; the querying
    connection is left out."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT ID, USER, HOST, COMMAND, TIME FROM information_schema.PROCESSLIST"
                " WHERE USER = %s AND COMMAND NOT IN ('Connect', 'Killed', 'Daemon')"
                " AND ID <> CONNECTION_ID()"
                " ORDER BY TIME DESC, ID",
                (user,),
            )
            rows = cursor.fetchall()
    except pymysql.err.MySQLError as error:
        raise DatabaseError.of(error) from error
    return [
        ServerConnection(int(id_), str(user_), str(host or ""), str(command), int(seconds or 0))
        for id_, user_, host, command, seconds in rows
    ]


def grant_target(database: str) -> str:
    """`database`.* for GRANT: a quoted identifier, with `_` and `%` escaped, since GRANT
    reads them as wildcards in a database name (`my_db` would also match `myXdb`)."""
    if not isinstance(database, str) or not 1 <= len(database) <= 64:
        raise InvalidInput("database", "must be a MySQL database name of 1-64 characters")
    escaped = database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return "`" + escaped.replace("`", "``") + "`.*"


def _check_account(user: str, host: str) -> None:
    if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER_LENGTH:
        raise InvalidInput("user", f"must be a MySQL user name of 1-{MAX_USER_LENGTH} characters")
    if not isinstance(host, str) or not 1 <= len(host) <= 255:
        raise InvalidInput("host", "must be a host name or pattern such as '%'")


def _check_max_connections(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_USER_CONNECTIONS:
        raise InvalidInput("max_connections", f"must be an integer of at least 1, got {n!r}")
