"""MySQL through pymysql: connections for the workload, and the sample's Employees table.

pymysql builds a fresh default TLS context on every connect unless it is given one
(37 ms a connect on these machines, DESIGN.md); the connector takes one context, built
once per execution environment, and passes it to every connect.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from domain import ConnleaseError

TOO_MANY_CONNECTIONS = 1040
CLIENT_ERROR = 2003  # CR_CONN_HOST_ERROR: can't connect to the server

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
    password: str = ""
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
    """A `connect` callable for the client library: one new connection per call."""

    def __init__(self, endpoint: MySqlEndpoint, tls: ssl.SSLContext | None) -> None:
        self.endpoint = endpoint
        self._tls = tls

    def __call__(self) -> pymysql.connections.Connection[Any]:
        tls: dict[str, Any] = {"ssl": self._tls} if self._tls else {"ssl_disabled": True}
        try:
            return pymysql.connect(
                host=self.endpoint.host,
                port=self.endpoint.port,
                user=self.endpoint.user,
                password=self.endpoint.password,
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
