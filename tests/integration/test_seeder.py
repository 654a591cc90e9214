"""The seeder custom resource in-process, against MariaDB and the embedded DynamoDB, with its
responses caught where CloudFormation's pre-signed URL would take them."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from moto.server import ThreadedMotoServer

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.mysql import (
    ACCESS_DENIED,
    USER_LIMIT_REACHED,
    DatabaseError,
    MySqlConnector,
    MySqlEndpoint,
    select_employees,
    server_variable,
    user_connections,
)
from domain import Granted, Quota, UnknownDatabase
from local.cfn import RequestType, ResponseCatcher, custom_resource_event
from local.context import LocalContext
from local.dynamodb import EmbeddedDynamoDB
from service import seeder

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_dynamodb import DynamoDBClient

# crhelper retries an undeliverable response forever; fail such a test rather than hang.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MYSQL = MySqlEndpoint(host="127.0.0.1", port=3306, user="root", password="", database="test")
CLOSED_PORT = "3999"


@pytest.fixture(scope="module")
def catcher() -> Iterator[ResponseCatcher]:
    with ResponseCatcher() as running:
        yield running


@pytest.fixture
def database() -> str:
    return f"seed-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch,
    embedded_dynamodb: EmbeddedDynamoDB,
    leases_table: str,
    catcher: ResponseCatcher,
    database: str,
) -> Iterator[None]:
    """The seeder function's environment, and a cold start for every test."""
    variables = {
        "LEASES_TABLE_NAME": leases_table,
        "DYNAMODB_ENDPOINT_URL": embedded_dynamodb.endpoint_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "DB_HOST": MYSQL.host,
        "DB_PORT": str(MYSQL.port),
        "DB_NAME": MYSQL.database,
        "DB_USER": MYSQL.user,
        "DB_PASSWORD": MYSQL.password,
        "QUOTA_DATABASE": database,
        "DEFAULT_LEASE_TTL_MS": "45000",
    } | catcher.trust_environment()  # set by the catcher too; crhelper hangs without it
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    for name in (
        "DB_SECRET_ARN",
        "DB_ADMIN_SECRET_ARN",
        "DB_APP_SECRET_ARN",
        "DB_APP_USER",
        "DB_APP_PASSWORD",
        "DB_APP_REQUIRE_SSL",
    ):
        monkeypatch.delenv(name, raising=False)
    seeder.seeder.cache_clear()
    yield
    seeder.seeder.cache_clear()


@pytest.fixture
def store(
    environment: None, dynamodb_client: DynamoDBClient, leases_table: str
) -> DynamoDBLeaseStore:
    return DynamoDBLeaseStore(dynamodb_client, leases_table, SystemClock())


def send(
    catcher: ResponseCatcher,
    request_type: RequestType,
    properties: dict[str, Any],
    physical_id: str | None = None,
    old_properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Invoke the seeder as CloudFormation would and return the response it sent."""
    name = uuid.uuid4().hex
    event = custom_resource_event(
        request_type, properties, catcher.url_for(name), physical_id, old_properties
    )
    context = LocalContext("connlease-seeder", timeout_s=60)
    seeder.handler(event, cast("LambdaContext", context))
    (response,) = catcher.responses_for(name)
    assert response["RequestId"] == event["RequestId"]
    assert response["StackId"] == event["StackId"]
    assert response["LogicalResourceId"] == "SeedDatabase"
    return response


def employees() -> int:
    with closing(MySqlConnector(MYSQL, None)()) as connection:
        return select_employees(connection)


def max_connections() -> int:
    with closing(MySqlConnector(MYSQL, None)()) as connection:
        return server_variable(connection, "max_connections")


def set_max_connections(n: int) -> None:
    with closing(MySqlConnector(MYSQL, None)()) as connection, connection.cursor() as cursor:
        cursor.execute("SET GLOBAL max_connections = %s", (n,))


def test_create_with_a_limit_writes_the_quota_and_seeds_ten_employees(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    response = send(catcher, "Create", {"Database": database, "Limit": 7})

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["PhysicalResourceId"] == f"connlease-quota-{database}"
    assert response["Data"] == {
        "Database": database,
        "Limit": 7,
        "Employees": 10,
        "ConnectionsAlarmThreshold": 12,
    }
    status = store.status(database)
    assert (status.limit, status.default_ttl_ms, status.in_use) == (7, 45_000, 0)
    assert employees() == 10


def test_create_with_a_limit_percent_takes_that_share_of_max_connections(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    server_max = max_connections()

    response = send(catcher, "Create", {"Database": database, "LimitPercent": 10})

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["Data"]["MaxConnections"] == server_max
    assert response["Data"]["Limit"] == server_max * 10 // 100
    assert store.status(database).limit == server_max * 10 // 100


def test_database_and_lease_ttl_default_to_the_function_settings(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    response = send(catcher, "Create", {"Limit": 4})

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["PhysicalResourceId"] == f"connlease-quota-{database}"
    assert store.status(database).default_ttl_ms == 45_000


def test_a_create_sent_twice_leaves_one_quota_and_ten_employees(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    properties = {"Database": database, "Limit": 5, "DefaultLeaseTtlMs": 30_000}

    first = send(catcher, "Create", properties)
    second = send(catcher, "Create", properties)

    assert first["Status"] == second["Status"] == "SUCCESS"
    assert first["PhysicalResourceId"] == second["PhysicalResourceId"]
    assert second["Data"]["Employees"] == 10
    assert employees() == 10
    status = store.status(database)
    assert (status.limit, status.default_ttl_ms) == (5, 30_000)


def test_an_update_that_changes_the_limit_keeps_live_leases(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    old = {"Database": database, "Limit": 3}
    created = send(catcher, "Create", old)
    held = store.acquire(database, "orders-fn/req-1", ttl_ms=60_000)
    assert isinstance(held, Granted)

    updated = send(
        catcher, "Update", {"Database": database, "Limit": 9}, created["PhysicalResourceId"], old
    )

    assert updated["Status"] == "SUCCESS", updated["Reason"]
    assert updated["PhysicalResourceId"] == created["PhysicalResourceId"]
    assert updated["Data"]["Limit"] == 9
    # The connections alarm's threshold: the quota plus 5 that are not the functions'.
    assert (
        created["Data"]["ConnectionsAlarmThreshold"],
        updated["Data"]["ConnectionsAlarmThreshold"],
    ) == (8, 14)
    status = store.status(database)
    assert (status.limit, status.in_use, status.remaining) == (9, 1, 8)
    assert [lease.id for lease in status.leases] == [held.lease.id]


def test_an_update_for_a_new_instance_class_takes_limit_percent_of_its_max_connections(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    old = {"Database": database, "LimitPercent": 10, "InstanceClass": "db.t4g.micro"}
    created = send(catcher, "Create", old)
    held = store.acquire(database, "orders-fn/req-1", ttl_ms=60_000)
    assert isinstance(held, Granted)
    before = max_connections()
    # The new class's memory, as RDS sees it: a higher max_connections (raised, so that no
    # other test's connection is refused meanwhile), put back whatever happens.
    bigger = before + 50
    try:
        set_max_connections(bigger)
        new = old | {"InstanceClass": "db.r6g.large"}
        updated = send(catcher, "Update", new, created["PhysicalResourceId"], old)
    finally:
        set_max_connections(before)

    assert created["Status"] == "SUCCESS", created["Reason"]
    assert created["Data"]["InstanceClass"] == "db.t4g.micro"
    assert created["Data"]["Limit"] == before * 10 // 100
    assert updated["Status"] == "SUCCESS", updated["Reason"]
    assert updated["PhysicalResourceId"] == created["PhysicalResourceId"]
    assert updated["Data"]["InstanceClass"] == "db.r6g.large"
    assert updated["Data"]["MaxConnections"] == bigger
    assert updated["Data"]["Limit"] == bigger * 10 // 100 != before * 10 // 100
    status = store.status(database)
    assert (status.limit, status.in_use) == (bigger * 10 // 100, 1)
    assert [lease.id for lease in status.leases] == [held.lease.id]


def test_an_update_to_another_database_leaves_the_old_quota_to_the_delete_that_follows(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    renamed = f"{database}-b"
    old = {"Database": database, "Limit": 3}
    created = send(catcher, "Create", old)

    updated = send(
        catcher, "Update", {"Database": renamed, "Limit": 3}, created["PhysicalResourceId"], old
    )
    # CloudFormation sees a new physical id and deletes the old resource afterwards.
    assert store.status(database).limit == 3
    cleanup = send(catcher, "Delete", old, created["PhysicalResourceId"])

    assert updated["Status"] == cleanup["Status"] == "SUCCESS"
    assert updated["PhysicalResourceId"] == f"connlease-quota-{renamed}"
    with pytest.raises(UnknownDatabase):
        store.status(database)
    assert store.status(renamed).limit == 3


def test_delete_removes_the_quota_keeps_employees_and_succeeds_again(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    properties = {"Database": database, "Limit": 2}
    created = send(catcher, "Create", properties)
    store.acquire(database, "orders-fn/req-1")

    first = send(catcher, "Delete", properties, created["PhysicalResourceId"])
    second = send(catcher, "Delete", properties, created["PhysicalResourceId"])

    assert first["Status"] == second["Status"] == "SUCCESS"
    assert first["PhysicalResourceId"] == created["PhysicalResourceId"]
    with pytest.raises(UnknownDatabase):
        store.status(database)
    assert employees() == 10


def test_delete_after_a_failed_create_succeeds_so_the_stack_can_roll_back(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    properties = {"Database": database, "Limit": "lots"}
    failed = send(catcher, "Create", properties)
    other = f"{database}-other"
    store.set_quota(other, Quota(limit=1, default_ttl_ms=1_000))

    deleted = send(catcher, "Delete", properties, failed["PhysicalResourceId"])
    not_ours = send(catcher, "Delete", {"Limit": 1}, f"{database}_SeedDatabase_ABCD1234")

    assert failed["Status"] == "FAILED"
    assert deleted["Status"] == not_ours["Status"] == "SUCCESS"
    assert deleted["PhysicalResourceId"] == failed["PhysicalResourceId"]
    assert store.status(other).limit == 1


def test_a_create_against_an_unreachable_mysql_fails_and_writes_no_quota(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_PORT", CLOSED_PORT)
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_S", "2")

    response = send(catcher, "Create", {"Database": database, "Limit": 5})

    assert response["Status"] == "FAILED"
    assert f"127.0.0.1:{CLOSED_PORT}" in response["Reason"]
    assert "Can't connect to MySQL" in response["Reason"]
    assert len(response["Reason"]) <= 256
    with pytest.raises(UnknownDatabase):
        store.status(database)


def test_a_quota_without_seeding_needs_no_mysql(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_PORT", CLOSED_PORT)

    response = send(catcher, "Create", {"Database": database, "Limit": 6, "SeedEmployees": False})

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["Data"] == {"Database": database, "Limit": 6, "ConnectionsAlarmThreshold": 11}
    assert store.status(database).limit == 6


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"LimitPercent": 0}, "LimitPercent: Input should be greater than or equal to 1"),
        ({"LimitPercent": 101}, "LimitPercent: Input should be less than or equal to 100"),
        ({"Limit": "lots"}, "Limit: Input should be a valid integer"),
        ({"Limit": 0}, "Limit: Input should be greater than or equal to 1"),
        ({"Limit": 2001}, "Limit: Input should be less than or equal to 2000"),
        ({}, "give exactly one of Limit or LimitPercent"),
        ({"Limit": 3, "LimitPercent": 10}, "give exactly one of Limit or LimitPercent"),
        ({"Limit": 3, "DefaultLeaseTtlMs": 5}, "DefaultLeaseTtlMs: Input should be greater"),
        ({"Limit": 3, "SeedEmployees": "maybe"}, "SeedEmployees: Input should be a valid"),
        ({"Limit": 3, "Database": "has spaces"}, "Database: 'has spaces' has characters"),
    ],
    ids=[
        "percent zero",
        "percent over 100",
        "limit not a number",
        "limit zero",
        "limit over the maximum",
        "no limit",
        "both limits",
        "ttl too short",
        "seed not a boolean",
        "database with spaces",
    ],
)
def test_a_create_with_invalid_properties_fails_with_a_reason_and_writes_no_quota(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    properties: dict[str, Any],
    reason: str,
) -> None:
    response = send(catcher, "Create", {"Database": database} | properties)

    assert response["Status"] == "FAILED"
    assert response["Reason"].startswith("invalid properties: ")
    assert reason in response["Reason"]
    assert response["PhysicalResourceId"]  # CloudFormation rejects a response without one
    with pytest.raises(UnknownDatabase):
        store.status(database)


def test_a_create_with_a_non_numeric_limit_says_what_it_got(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    response = send(catcher, "Create", {"Database": database, "Limit": "lots"})

    assert response["Status"] == "FAILED"
    assert "(got 'lots')" in response["Reason"]


def test_a_lease_store_that_cannot_be_written_fails_the_create_with_the_store_error(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEASES_TABLE_NAME", "no-such-table")

    response = send(catcher, "Create", {"Database": database, "Limit": 2})

    assert response["Status"] == "FAILED"
    assert response["Reason"].startswith(f"quota for {database!r} not set:")
    assert "unavailable" in response["Reason"]
    with pytest.raises(UnknownDatabase):
        store.status(database)


def test_a_misconfigured_seeder_fails_with_the_variable_to_fix(
    catcher: ResponseCatcher, database: str, monkeypatch: pytest.MonkeyPatch, environment: None
) -> None:
    monkeypatch.delenv("LEASES_TABLE_NAME")

    response = send(catcher, "Create", {"Database": database, "Limit": 2})

    assert response["Status"] == "FAILED"
    assert response["Reason"] == "the seeder is misconfigured: check LEASES_TABLE_NAME"


def test_a_delete_that_cannot_reach_the_lease_store_fails_rather_than_forget_the_quota(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.set_quota(database, Quota(limit=2, default_ttl_ms=1_000))
    monkeypatch.setenv("LEASES_TABLE_NAME", "no-such-table")

    response = send(catcher, "Delete", {"Limit": 2}, f"connlease-quota-{database}")

    assert response["Status"] == "FAILED"
    assert response["Reason"].startswith(f"quota for {database!r} not deleted:")
    assert store.status(database).limit == 2


def test_a_failed_update_keeps_the_physical_id_and_the_quota_for_the_rollback(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    old = {"Database": database, "Limit": 4}
    created = send(catcher, "Create", old)

    failed = send(
        catcher,
        "Update",
        {"Database": database, "Limit": "many"},
        created["PhysicalResourceId"],
        old,
    )

    assert failed["Status"] == "FAILED"
    assert failed["PhysicalResourceId"] == created["PhysicalResourceId"]
    assert "Limit: Input should be a valid integer" in failed["Reason"]
    assert store.status(database).limit == 4


def test_a_seeder_stuck_on_mysql_answers_failed_before_its_lambda_timeout(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never greets
        monkeypatch.setenv("DB_PORT", str(silent.getsockname()[1]))
        name = uuid.uuid4().hex
        event = custom_resource_event(
            "Create", {"Database": database, "Limit": 2}, catcher.url_for(name)
        )
        context = LocalContext("connlease-seeder", timeout_s=2)
        stuck = threading.Thread(
            target=seeder.handler, args=(event, cast("LambdaContext", context)), daemon=True
        )
        stuck.start()

        (first,) = catcher.wait_for(1, timeout_s=10, name=name)

    stuck.join(timeout=30)  # the closed listener resets the connection: the handler ends
    assert first["Status"] == "FAILED"
    assert first["Reason"] == "Execution timed out"
    assert not stuck.is_alive()
    with pytest.raises(UnknownDatabase):
        store.status(database)


# ------------------------------------------------------------------ the application user

APP_PASSWORD = "app-pa'ss%word"


@pytest.fixture
def app_user(environment: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local application user (no TLS on the local MariaDB); dropped after."""
    name = f"capp_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DB_APP_USER", name)
    monkeypatch.setenv("DB_APP_PASSWORD", APP_PASSWORD)
    monkeypatch.setenv("DB_APP_REQUIRE_SSL", "false")
    yield name
    with closing(MySqlConnector(MYSQL, None)()) as root, root.cursor() as cursor:
        cursor.execute("DROP USER IF EXISTS %s@'%%'", (name,))


def as_app(user: str, password: str = APP_PASSWORD) -> MySqlConnector:
    return MySqlConnector(MySqlEndpoint(user=user, password=password), None)


def user_limit(user: str) -> int | None:
    """The account's MAX_USER_CONNECTIONS, None when there is no such user."""
    with closing(MySqlConnector(MYSQL, None)()) as root, root.cursor() as cursor:
        cursor.execute(
            "SELECT max_user_connections FROM mysql.user WHERE user = %s AND host = '%%'",
            (user,),
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def test_a_create_with_an_app_user_caps_its_connections_at_the_limit(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str, app_user: str
) -> None:
    response = send(catcher, "Create", {"Database": database, "Limit": 2})

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["Data"] == {
        "Database": database,
        "Limit": 2,
        "Employees": 10,
        "AppUser": app_user,
        "MaxUserConnections": 2,
        "ConnectionsAlarmThreshold": 7,
    }
    assert user_limit(app_user) == 2
    held = [as_app(app_user)(), as_app(app_user)()]
    try:
        assert select_employees(held[0]) == 10
        with pytest.raises(DatabaseError) as refused:
            as_app(app_user)()
        assert refused.value.code == USER_LIMIT_REACHED
    finally:
        for connection in held:
            connection.close()


def test_an_update_with_a_new_limit_changes_max_user_connections(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str, app_user: str
) -> None:
    old = {"Database": database, "Limit": 2}
    created = send(catcher, "Create", old)
    held = as_app(app_user)()  # a live connection keeps its place through the update

    try:
        raised = send(
            catcher,
            "Update",
            {"Database": database, "Limit": 5},
            created["PhysicalResourceId"],
            old,
        )
        assert raised["Status"] == "SUCCESS", raised["Reason"]
        assert (user_limit(app_user), store.status(database).limit) == (5, 5)

        lowered = send(
            catcher,
            "Update",
            {"Database": database, "LimitPercent": 1, "SeedEmployees": False},
            created["PhysicalResourceId"],
            {"Database": database, "Limit": 5},
        )
        assert lowered["Status"] == "SUCCESS", lowered["Reason"]
        expected = max(1, max_connections() // 100)
        assert lowered["Data"]["MaxUserConnections"] == expected
        assert (user_limit(app_user), store.status(database).limit) == (expected, expected)
        with closing(MySqlConnector(MYSQL, None)()) as root:
            assert user_connections(root, app_user) == 1
    finally:
        held.close()


def test_delete_leaves_the_app_user_in_place(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str, app_user: str
) -> None:
    properties = {"Database": database, "Limit": 3}
    created = send(catcher, "Create", properties)

    deleted = send(catcher, "Delete", properties, created["PhysicalResourceId"])

    assert deleted["Status"] == "SUCCESS", deleted["Reason"]
    assert user_limit(app_user) == 3
    as_app(app_user)().close()


def test_without_an_app_user_configured_none_is_made(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    response = send(catcher, "Create", {"Database": database, "Limit": 2})

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert "AppUser" not in response["Data"]
    assert user_limit("connlease_app") is None


def test_an_app_user_without_a_password_is_a_misconfiguration(
    catcher: ResponseCatcher, database: str, monkeypatch: pytest.MonkeyPatch, environment: None
) -> None:
    monkeypatch.setenv("DB_APP_USER", "connlease_app")

    response = send(catcher, "Create", {"Database": database, "Limit": 2})

    assert response["Status"] == "FAILED"
    assert response["Reason"] == (
        "the seeder is misconfigured: DB_APP_USER needs DB_APP_PASSWORD (or use DB_APP_SECRET_ARN)"
    )


@pytest.fixture(scope="module")
def secrets_server() -> Iterator[str]:
    """Secrets Manager as moto's server on a free loopback port (mock_aws would also
    catch the calls to the embedded DynamoDB)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def secrets(environment: None, secrets_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of that server; the seeder's own client finds it by the SDK's variable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_server)
    return boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=secrets_server)


def test_the_app_user_takes_its_login_from_its_secret_read_again_on_each_update(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    secrets: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"capp_{uuid.uuid4().hex[:8]}"
    arn = secrets.create_secret(
        Name=f"{name}-secret", SecretString=json.dumps({"username": name, "password": "v1"})
    )["ARN"]
    monkeypatch.setenv("DB_APP_SECRET_ARN", arn)
    monkeypatch.setenv("DB_APP_REQUIRE_SSL", "false")
    properties = {"Database": database, "Limit": 2, "SeedEmployees": False}
    try:
        created = send(catcher, "Create", properties)
        assert created["Status"] == "SUCCESS", created["Reason"]
        assert created["Data"]["AppUser"] == name
        as_app(name, "v1")().close()

        # Rotated since; the warm seeder must not set the password it read before back.
        secrets.put_secret_value(
            SecretId=arn, SecretString=json.dumps({"username": name, "password": "v2"})
        )
        updated = send(catcher, "Update", properties, created["PhysicalResourceId"], properties)

        assert updated["Status"] == "SUCCESS", updated["Reason"]
        as_app(name, "v2")().close()
        with pytest.raises(DatabaseError) as refused:
            as_app(name, "v1")()
        assert refused.value.code == ACCESS_DENIED
    finally:
        with closing(MySqlConnector(MYSQL, None)()) as root, root.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (name,))


def test_an_unreadable_app_secret_fails_the_create_and_writes_no_quota(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    secrets: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-secret-AbCdEf"
    monkeypatch.setenv("DB_APP_SECRET_ARN", arn)

    response = send(catcher, "Create", {"Database": database, "Limit": 2})

    assert response["Status"] == "FAILED"
    assert response["Reason"].startswith(f"database secret {arn} unusable: ")
    assert "ResourceNotFoundException" in response["Reason"]
    with pytest.raises(UnknownDatabase):
        store.status(database)


def test_the_admin_login_comes_from_its_own_secret(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    secrets: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arn = secrets.create_secret(
        Name=f"admin-{database}",
        SecretString=json.dumps({"username": "root", "password": "not-roots"}),
    )["ARN"]
    monkeypatch.setenv("DB_ADMIN_SECRET_ARN", arn)

    response = send(catcher, "Create", {"Database": database, "Limit": 2})

    assert response["Status"] == "FAILED"
    assert response["Reason"].startswith("MySQL at root@127.0.0.1:3306/test failed: ")
    # The secret's password, not DB_PASSWORD (root's, empty, which would have worked).
    assert f"MySQL error {ACCESS_DENIED}" in response["Reason"]


# ------------------------------------------------------------------ groups


def reservations(store: DynamoDBLeaseStore, database: str) -> dict[str, tuple[int, bool, Any]]:
    """The quota's live groups as status shows them: reserved, borrow, max."""
    view = store.status(database).groups
    if view is None:
        return {}
    return {g.group: (g.reserved, g.borrow, g.max) for g in view.groups if not g.retired}


def test_a_create_with_groups_reserves_their_leases(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    properties = {"Database": database, "Limit": 12, "Groups": "api=4, batch=2:max=6:noborrow"}

    response = send(catcher, "Create", properties)

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["Data"]["Limit"] == 12
    assert reservations(store, database) == {"api": (4, True, None), "batch": (2, False, 6)}
    status = store.status(database)
    assert status.groups is not None
    assert (status.limit, status.groups.pool_limit) == (12, 6)


def test_an_update_changes_the_groups_and_keeps_live_leases(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    old = {"Database": database, "Limit": 10, "Groups": "api=4,batch=2"}
    created = send(catcher, "Create", old)
    held = store.acquire(database, "api/req-1", ttl_ms=60_000, group="api")
    assert isinstance(held, Granted)

    new = {"Database": database, "Limit": 10, "Groups": "api=2:max=5,etl=3:noborrow"}
    updated = send(catcher, "Update", new, created["PhysicalResourceId"], old)

    assert updated["Status"] == "SUCCESS", updated["Reason"]
    assert reservations(store, database) == {"api": (2, True, 5), "etl": (3, False, None)}
    status = store.status(database)
    assert status.groups is not None
    assert (status.limit, status.in_use, status.groups.pool_limit) == (10, 1, 5)
    assert [lease.id for lease in status.leases] == [held.lease.id]


def test_an_empty_groups_property_removes_the_reservations(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    old = {"Database": database, "Limit": 6, "Groups": "api=4"}
    created = send(catcher, "Create", old)
    assert reservations(store, database) == {"api": (4, True, None)}

    # The template's default: a cleared Groups parameter.
    new = {"Database": database, "Limit": 6, "Groups": ""}
    updated = send(catcher, "Update", new, created["PhysicalResourceId"], old)

    assert updated["Status"] == "SUCCESS", updated["Reason"]
    assert reservations(store, database) == {}
    status = store.status(database)
    assert (status.limit, status.remaining) == (6, 6)
    assert status.groups is None  # drained groups are forgotten, shares and all


def test_without_a_groups_property_the_quota_keeps_its_groups(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    old = {"Database": database, "Limit": 6, "Groups": "api=4"}
    created = send(catcher, "Create", old)

    new = {"Database": database, "Limit": 8}
    updated = send(catcher, "Update", new, created["PhysicalResourceId"], old)

    assert updated["Status"] == "SUCCESS", updated["Reason"]
    assert store.status(database).limit == 8
    assert reservations(store, database) == {"api": (4, True, None)}


@pytest.mark.parametrize(
    ("groups", "reason"),
    [
        ("api", "'api': write group=reserved[:max=N][:noborrow]"),
        ("api=ten", "api.reserved: 'ten' is not a whole number"),
        ("api=1:often", "'api=1:often': unknown option 'often'"),
        ("api=1,api=2", "'api' is named twice"),
        ("has space=1", "'has space' is not a group name"),
        ("api=5:max=2", "api.max: is 2, below the group's reservation of 5"),
        (",".join(f"g{i}=0" for i in range(17)), "at most 16 groups per quota"),
        ("api=2001", "api.reserved"),
    ],
    ids=[
        "no reservation",
        "not a number",
        "unknown option",
        "named twice",
        "bad group name",
        "max below reserved",
        "too many groups",
        "over the maximum",
    ],
)
def test_groups_with_bad_syntax_fail_the_create_with_a_reason_and_write_nothing(
    catcher: ResponseCatcher,
    store: DynamoDBLeaseStore,
    database: str,
    app_user: str,
    *,
    groups: str,
    reason: str,
) -> None:
    response = send(catcher, "Create", {"Database": database, "Limit": 20, "Groups": groups})

    assert response["Status"] == "FAILED"
    assert response["Reason"].startswith("invalid properties: Groups: ")
    assert reason in response["Reason"]
    assert len(response["Reason"]) <= 256
    with pytest.raises(UnknownDatabase):
        store.status(database)
    assert user_limit(app_user) is None  # nor the application user


def test_reservations_above_a_limit_percent_fail_the_create_and_write_nothing(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str, app_user: str
) -> None:
    server_max = max_connections()
    limit = max(1, server_max * 10 // 100)
    assert limit < 2000  # only the computed limit can refuse what follows
    properties = {"Database": database, "LimitPercent": 10, "Groups": f"api={limit},etl=1"}

    response = send(catcher, "Create", properties)

    assert response["Status"] == "FAILED"
    assert response["Reason"] == (
        f"invalid properties: Groups: reservations sum to {limit + 1}, above the quota's"
        f" limit of {limit} (LimitPercent 10 of max_connections {server_max})"
    )
    with pytest.raises(UnknownDatabase):
        store.status(database)
    assert user_limit(app_user) is None


def test_reservations_within_a_limit_percent_are_set(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    limit = max(1, max_connections() * 10 // 100)
    assert limit >= 3
    properties = {"Database": database, "LimitPercent": 10, "Groups": f"api={limit - 2},etl=1"}

    response = send(catcher, "Create", properties)

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert response["Data"]["Limit"] == limit
    assert reservations(store, database) == {"api": (limit - 2, True, None), "etl": (1, True, None)}
    status = store.status(database)
    assert status.groups is not None
    assert status.groups.pool_limit == 1


def test_reservations_of_the_whole_limit_percent_are_set(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    limit = max(1, max_connections() * 10 // 100)
    properties = {"Database": database, "LimitPercent": 10, "Groups": f"api={limit}"}

    response = send(catcher, "Create", properties)

    assert response["Status"] == "SUCCESS", response["Reason"]
    assert reservations(store, database) == {"api": (limit, True, None)}


def test_an_update_with_reservations_above_its_limit_fails_and_keeps_the_quota(
    catcher: ResponseCatcher, store: DynamoDBLeaseStore, database: str
) -> None:
    old = {"Database": database, "Limit": 8, "Groups": "api=4"}
    created = send(catcher, "Create", old)

    new = {"Database": database, "Limit": 5, "Groups": "api=4,etl=2"}
    failed = send(catcher, "Update", new, created["PhysicalResourceId"], old)

    assert failed["Status"] == "FAILED"
    assert failed["PhysicalResourceId"] == created["PhysicalResourceId"]
    assert failed["Reason"] == (
        "invalid properties: Groups: reservations sum to 6, above the quota's limit of 5"
    )
    assert store.status(database).limit == 8
    assert reservations(store, database) == {"api": (4, True, None)}
