"""`connlease reconcile` against MariaDB and the embedded DynamoDB: a throwaway application
user with some connections open, some leases taken in its quota, and the command's count
of the ones no live lease explains, in its output, its JSON and its exit status."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pymysql
import pytest
from moto import mock_aws
from typer.testing import CliRunner, Result

from adapters.aws import AwsAccess
from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import (
    MySqlConnector,
    MySqlEndpoint,
    connections_by_user,
    connections_of,
    ensure_app_user,
)
from cli.app import LOCAL_MYSQL, NAMESPACE
from cli.commands import app
from cli.reconcile import DEFAULT_APP_USER, _stack_app_user
from domain import Granted, Quota
from local.demo_setup import mysql_from_environment
from local.dynamodb import EmbeddedDynamoDB
from service.bootstrap import build_console

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = MySqlEndpoint(host="127.0.0.1", port=3306, user="root", password="", database="test")
CLOSED_PORT = "3999"
MYSQL_OPTIONS = ["--mysql-host", ROOT.host, "--mysql-port", str(ROOT.port)]
MYSQL_OPTIONS += ["--mysql-user", ROOT.user, "--mysql-database", ROOT.database]
REGION = "us-east-1"


@pytest.fixture
def database() -> str:
    return f"rc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(
    monkeypatch: pytest.MonkeyPatch,
    dynamodb_client: DynamoDBClient,
    leases_table: str,
    database: str,
) -> DynamoDBLeaseStore:
    """The quota, with an environment that names no other table, stack or MySQL."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "CONNLEASE_STACK",
        "LEASES_TABLE_NAME",
        "DB_HOST",
        "DB_PORT",
        "DB_USER",
        "DB_PASSWORD",
        "DB_SECRET_ARN",
        "DB_NAME",
        "DB_TLS",
    ):
        monkeypatch.delenv(name, raising=False)
    store = DynamoDBLeaseStore(dynamodb_client, leases_table, SystemClock())
    store.set_quota(database, Quota(limit=10, default_ttl_ms=60_000))
    return store


@pytest.fixture(scope="module")
def root() -> Iterator[pymysql.connections.Connection[Any]]:
    with closing(MySqlConnector(ROOT, None)()) as connection:
        yield connection


def connection_id(connection: pymysql.connections.Connection[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (found,) = cursor.fetchone() or (0,)
        return int(found)


class AppUser:
    """A throwaway application user and the connections opened as it."""

    def __init__(self, root: pymysql.connections.Connection[Any]) -> None:
        self.name = f"connlease_rc_{uuid.uuid4().hex[:8]}"
        self.password = uuid.uuid4().hex
        self.open: list[pymysql.connections.Connection[Any]] = []
        ensure_app_user(root, self.name, self.password, "test", 50, require_ssl=False)

    def connect(self, n: int) -> list[int]:
        """Opens n connections; their ids."""
        endpoint = MySqlEndpoint(
            host=ROOT.host, port=ROOT.port, user=self.name, password=self.password
        )
        opened = [MySqlConnector(endpoint, None)() for _ in range(n)]
        self.open += opened
        return [connection_id(connection) for connection in opened]

    def close(self) -> None:
        for connection in self.open:
            connection.close()
        self.open.clear()


@pytest.fixture
def app_user(root: pymysql.connections.Connection[Any]) -> Iterator[AppUser]:
    user = AppUser(root)
    try:
        yield user
    finally:
        user.close()
        with root.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user.name,))


def take(store: DynamoDBLeaseStore, database: str, n: int, ttl_ms: int = 60_000) -> None:
    for i in range(n):
        assert isinstance(store.acquire(database, f"orders-fn/req-{i}", ttl_ms=ttl_ms), Granted)


class Run(Protocol):
    def __call__(self, *args: str, mysql: list[str] = ...) -> Result: ...


@pytest.fixture
def run(embedded_dynamodb: EmbeddedDynamoDB, leases_table: str, store: DynamoDBLeaseStore) -> Run:
    """`connlease reconcile ARGS` on the quota's table, as root on MariaDB by default."""

    def invoke(*args: str, mysql: list[str] = MYSQL_OPTIONS) -> Result:
        where = ["--endpoint-url", embedded_dynamodb.endpoint_url, "--table", leases_table]
        return CliRunner().invoke(app, ["reconcile", *args, *where, *mysql])

    return invoke


def test_connections_beyond_the_live_leases_are_unexplained_and_exit_1(
    run: Run, store: DynamoDBLeaseStore, database: str, app_user: AppUser
) -> None:
    ids = app_user.connect(3)
    take(store, database, 1)

    result = run(database, "--app-user", app_user.name, "--json")

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert {key: document[key] for key in document if key != "oldest_unexplained"} == {
        "database": database,
        "app_user": app_user.name,
        "limit": 10,
        "live_leases": 1,
        "expired_leases": 0,
        "connections": 3,
        "drift": 2,
        "unexplained": 2,
        "connections_by_user": document["connections_by_user"],
        "mysql": "root@127.0.0.1:3306/test",
    }
    assert document["connections_by_user"][app_user.name] == 3
    oldest = document["oldest_unexplained"]
    assert len(oldest) == 2
    for connection in oldest:
        assert set(connection) == {"id", "host", "seconds", "command"}
        assert connection["id"] in ids
        assert connection["command"] == "Sleep"
        assert connection["host"].startswith("127.0.0.1") or connection["host"] == "localhost"
    assert result.stderr == ""


def test_the_table_names_the_unexplained_connections_and_what_they_may_be(
    run: Run, store: DynamoDBLeaseStore, database: str, app_user: AppUser
) -> None:
    ids = app_user.connect(2)

    result = run(database, "--app-user", app_user.name)

    assert result.exit_code == 1, result.output
    assert "2 connection(s) no live lease explains" in result.stdout
    for connection_id in ids:
        assert str(connection_id) in result.stdout
    assert "drift (connections - live leases)" in result.stdout
    assert "+2" in result.stdout
    assert "without connlease" in " ".join(result.stdout.split())


def test_as_many_connections_as_live_leases_exit_0(
    run: Run, store: DynamoDBLeaseStore, database: str, app_user: AppUser
) -> None:
    app_user.connect(2)
    take(store, database, 2)

    result = run(database, "--app-user", app_user.name, "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["connections"], document["live_leases"]) == (2, 2)
    assert (document["drift"], document["unexplained"], document["oldest_unexplained"]) == (
        0,
        0,
        [],
    )


def test_more_live_leases_than_connections_is_normal_and_exits_0(
    run: Run, store: DynamoDBLeaseStore, database: str, app_user: AppUser
) -> None:
    app_user.connect(1)
    take(store, database, 3)

    result = run(database, "--app-user", app_user.name)

    assert result.exit_code == 0, result.output
    assert "-2" in result.stdout
    text = " ".join(result.stdout.split())
    assert "2 live lease(s) without a connection: normal and harmless" in text
    assert "no live lease explains" not in text


def test_an_expired_lease_explains_no_connection(
    run: Run, store: DynamoDBLeaseStore, database: str, app_user: AppUser
) -> None:
    app_user.connect(1)
    take(store, database, 1, ttl_ms=100)
    time.sleep(0.3)

    result = run(database, "--app-user", app_user.name, "--json")

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert (document["live_leases"], document["expired_leases"]) == (0, 1)
    assert document["unexplained"] == 1


def test_the_commands_own_connection_is_not_counted(
    run: Run, database: str, app_user: AppUser
) -> None:
    app_user.connect(2)
    # As the application user itself, without PROCESS: it sees its own connections only.
    own = ["--mysql-host", ROOT.host, "--mysql-port", str(ROOT.port), "--mysql-user"]
    own += [app_user.name, "--mysql-password", app_user.password]

    result = run(database, "--app-user", app_user.name, "--json", mysql=own)

    document = json.loads(result.stdout)
    assert document["connections_by_user"] == {app_user.name: 2}
    assert document["connections"] == 2


def test_without_an_app_user_or_its_connections_the_command_asks_for_one(
    run: Run, database: str, root: pymysql.connections.Connection[Any]
) -> None:
    assert DEFAULT_APP_USER not in connections_by_user(root)

    result = run(database)

    assert result.exit_code == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("connlease: error: say whose connections the quota governs")


# --local: the local stack's MySQL and the user its functions log in as, with no option.


def test_local_defaults_are_the_local_stacks_mysql(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make local` and `make demo` reach MySQL as mysql_from_environment says when no DB_*
    variable is set; `--local` reaches the same."""
    for name in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME"):
        monkeypatch.delenv(name, raising=False)
    local = mysql_from_environment()

    assert (LOCAL_MYSQL.host, LOCAL_MYSQL.port, LOCAL_MYSQL.user) == (
        local.host,
        local.port,
        local.user,
    )
    assert (LOCAL_MYSQL.password, LOCAL_MYSQL.database) == (local.password, local.database)


def test_local_reconciles_as_the_local_stacks_functions_log_in(
    run: Run,
    store: DynamoDBLeaseStore,
    database: str,
    app_user: AppUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The local stack's functions log in as DB_USER (root without it): `reconcile --local`
    counts that user's connections with no --mysql-host or --app-user."""
    monkeypatch.setenv("DB_USER", app_user.name)
    monkeypatch.setenv("DB_PASSWORD", app_user.password)
    app_user.connect(2)
    take(store, database, 2)

    result = run(database, "--local", "--json", mysql=[])

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["app_user"], document["mysql"]) == (
        app_user.name,
        f"{app_user.name}@127.0.0.1:3306/test",
    )
    assert (document["connections"], document["live_leases"], document["unexplained"]) == (
        2,
        2,
        0,
    )
    assert result.stderr == ""


def test_local_without_db_variables_is_root_on_127_0_0_1(
    run: Run, database: str, root: pymysql.connections.Connection[Any]
) -> None:
    result = run(database, "--local", "--json", mysql=[])

    assert result.exit_code in (0, 1), result.output  # 1: root's other sessions, unexplained
    document = json.loads(result.stdout)
    assert (document["app_user"], document["mysql"]) == ("root", "root@127.0.0.1:3306/test")
    assert document["connections"] >= 1  # this test's own root session, at least
    assert result.stderr == ""


def test_an_unknown_database_is_one_line_and_exit_1(run: Run, app_user: AppUser) -> None:
    result = run("no-such-quota", "--app-user", app_user.name)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "connlease: error: no quota for database 'no-such-quota' (connlease status lists them)"
    ]


def test_an_unreachable_mysql_is_one_line_and_exit_1(
    run: Run, database: str, app_user: AppUser
) -> None:
    closed = ["--mysql-host", ROOT.host, "--mysql-port", CLOSED_PORT]

    result = run(database, "--app-user", app_user.name, mysql=closed)

    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("connlease: error: MySQL: MySQL error 2003:")


def test_the_process_list_leaves_out_the_querying_connection(
    root: pymysql.connections.Connection[Any], app_user: AppUser
) -> None:
    ids = app_user.connect(2)

    assert connections_by_user(root)[app_user.name] == 2
    listed = connections_of(root, app_user.name)
    assert sorted(found.id for found in listed) == sorted(ids)
    assert {found.user for found in listed} == {app_user.name}
    assert connection_id(root) not in {found.id for found in connections_of(root, "root")}


def test_a_stack_names_the_app_user_through_its_secret() -> None:
    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name=REGION)
        secret = json.dumps({"username": "orders_app", "password": "pw"})
        arn = secrets.create_secret(Name="app-user", SecretString=secret)["ARN"]
        console = build_console(
            AwsAccess(region=REGION, local_credentials=("local", "local")),
            "leases",
            {"AppUserSecretArn": arn},
            NAMESPACE,
        )
        assert _stack_app_user(console) == "orders_app"
        assert _stack_app_user(build_console(console.aws, "leases", {}, NAMESPACE)) is None
