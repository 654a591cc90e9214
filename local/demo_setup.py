"""What the local demos (`make demo`, its hotspot scenario, `make local`) and the
benchmarks share: the MySQL server they run against, named by DB_HOST, DB_PORT, DB_USER,
DB_PASSWORD and DB_NAME (or, with none named and none running, a throwaway MariaDB); the
probe that checks it will serve them, and what the user is told when it will not;
max_connections lowered for a run and put back after, even when the run is
stopped; and the query-time option (seconds, or a range of them, that an invocation holds
its connection).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pymysql
from rich.markup import escape

from adapters.mysql import DatabaseError, MySqlConnector, MySqlEndpoint, server_variable
from local.mariadb import MariaDbInstall, throwaway_mariadb
from service.workload import QueryTime

# MySQL's answers to the probe that say the server is up but will not serve the demo.
ER_DBACCESS_DENIED = 1044  # the account may not use that database
ER_ACCESS_DENIED = 1045  # wrong user or password
ER_BAD_DB = 1049  # unknown database
ER_ACCESS_DENIED_NO_PASSWORD = 1698  # MariaDB's answer for an unknown user


class MySqlUnusable(Exception):
    """The demo's probe connection failed; which subclass, and so what the user is told,
    follows MySQL's error code: its message text varies between servers and versions."""

    def __init__(self, endpoint: MySqlEndpoint, error: DatabaseError) -> None:
        super().__init__(str(error))
        self.endpoint = endpoint
        self.error = error

    @staticmethod
    def of(endpoint: MySqlEndpoint, error: DatabaseError) -> MySqlUnusable:
        if error.code == ER_BAD_DB:
            return DatabaseMissing(endpoint, error)
        if error.code in (ER_ACCESS_DENIED, ER_ACCESS_DENIED_NO_PASSWORD, ER_DBACCESS_DENIED):
            return MySqlAccessDenied(endpoint, error)
        return MySqlUnreachable(endpoint, error)

    def explain(self) -> str:
        """What went wrong and how to fix it, as rich markup."""
        raise NotImplementedError


class MySqlUnreachable(MySqlUnusable):
    def explain(self) -> str:
        return (
            f"[red]MySQL is not reachable at {escape(self.endpoint.describe())}[/]: "
            f"{escape(str(self))}\n"
            "Point the demo at a server with DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and "
            "DB_NAME, for example: DB_HOST=10.0.0.5 DB_PASSWORD=secret make demo\n"
            "Or install MariaDB's server (mariadbd, mariadb-install-db): with none of "
            "DB_HOST, DB_PORT, DB_USER and DB_PASSWORD set, make demo then starts a "
            "throwaway server of its own"
        )


class DatabaseMissing(MySqlUnusable):
    def explain(self) -> str:
        at = self.endpoint
        name = escape(at.database)
        return (
            f"[red]The database '{name}' does not exist on the MySQL server at "
            f"{escape(at.host)}:{at.port}[/]: {escape(str(self))}\n"
            f"Create it (CREATE DATABASE `{name}`;) or set DB_NAME to a database that "
            "exists, for example: DB_NAME=test make demo"
        )


class MySqlAccessDenied(MySqlUnusable):
    def explain(self) -> str:
        at = self.endpoint
        return (
            f"[red]MySQL at {escape(at.host)}:{at.port} denied access to user "
            f"'{escape(at.user)}' for the database '{escape(at.database)}'[/]: "
            f"{escape(str(self))}\n"
            "Set DB_USER and DB_PASSWORD to an account that may connect and use DB_NAME "
            "(or set DB_NAME to a database it may use), for example: "
            "DB_USER=demo DB_PASSWORD=secret make demo"
        )


DEFAULT_PORT = 3306
# Any of these set: the user named a server, and the demo uses that one or none.
NAMING_A_SERVER = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD")


class MaxConnectionsFixed(MySqlUnusable):
    """The demo's account may not SET GLOBAL max_connections."""

    def explain(self) -> str:
        at = self.endpoint
        return (
            f"[red]MySQL at {escape(at.host)}:{at.port} would not let user "
            f"'{escape(at.user)}' set max_connections[/]: {escape(str(self))}\n"
            "The run without connlease needs it lowered for the demo (it is put back after): "
            "run as an account that may (SUPER, or SYSTEM_VARIABLES_ADMIN), or run with "
            'connlease alone: make demo ARGS="--connlease-only"'
        )


def mysql_from_environment() -> MySqlEndpoint:
    env = os.environ
    port = env.get("DB_PORT", str(DEFAULT_PORT))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"DB_PORT must be a port number, got {port!r}")
    return MySqlEndpoint(
        host=env.get("DB_HOST", "127.0.0.1"),
        port=int(port),
        user=env.get("DB_USER", "root"),
        password=env.get("DB_PASSWORD", ""),
        database=env.get("DB_NAME", "test"),
        connect_timeout_s=3,
    )


def check_mysql(endpoint: MySqlEndpoint) -> None:
    """Connect once; MySqlUnusable, saying why, if the server will not serve the demo."""
    try:
        MySqlConnector(endpoint, None)().close()
    except DatabaseError as error:
        raise MySqlUnusable.of(endpoint, error) from error


@contextmanager
def max_connections(mysql: MySqlEndpoint, value: int) -> Iterator[int]:
    """Set the server's max_connections for the run; the old value comes back after, on
    the connection that set it (kept open: a server full of the run's connections still
    takes it back). Yields the value in effect, which the server may have raised: MariaDB's
    floor is 10."""
    connection = MySqlConnector(mysql, None)()
    try:
        before = server_variable(connection, "max_connections")
        refused = False
        try:  # a signal between the SET and a `try` after it would leave the value set
            try:
                with connection.cursor() as cursor:
                    cursor.execute(f"SET GLOBAL max_connections = {int(value)}")
            except pymysql.err.MySQLError as error:
                refused = True  # nothing to put back, and no right to
                raise DatabaseError.of(error) from error
            yield server_variable(connection, "max_connections")
        finally:
            if not refused:
                with connection.cursor() as cursor:
                    cursor.execute(f"SET GLOBAL max_connections = {int(before)}")
    finally:
        connection.close()


def unwind_on_sigterm() -> None:
    """Stopped with SIGTERM (a timeout, CI, kill), unwind as Ctrl-C does: `finally` blocks
    and context managers put back what the run changed (max_connections) and stop what it
    started (function environments, a throwaway MariaDB)."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


@contextmanager
def demo_mysql(say: Callable[[str], object] = print) -> Iterator[MySqlEndpoint]:
    """The MySQL server a demo runs against: the one DB_HOST, DB_PORT, DB_USER and
    DB_PASSWORD name, checked. With none of them set and nothing answering at
    127.0.0.1:3306, a throwaway MariaDB when the server is installed (local.mariadb),
    stopped on the way out. Else MySqlUnusable, saying why; ThrowawayFailed when the
    throwaway server would not start."""
    endpoint = mysql_from_environment()
    try:
        check_mysql(endpoint)
    except MySqlUnreachable:
        named = any(name in os.environ for name in NAMING_A_SERVER)
        install = None if named else MariaDbInstall.find()
        if install is None:
            raise
    else:
        yield endpoint
        return
    say(
        f"Nothing answers at {endpoint.host}:{endpoint.port}: starting a throwaway MariaDB "
        f"({install.server}) for this run; it is stopped and removed at the end"
    )
    with throwaway_mariadb(install, endpoint.database) as private:
        say(f"throwaway MariaDB listening on {private.host}:{private.port}")
        yield private


def parse_query_time(text: str) -> QueryTime:
    low, _, high = text.partition("-")
    return (float(low), float(high)) if high else float(low)
