"""Database logins from Secrets Manager (moto, in-process), the connector's one re-read on
1045, and the settings that say where the logins come from."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pymysql
import pytest
from botocore.exceptions import EndpointConnectionError
from moto import mock_aws
from pydantic import ValidationError

from adapters.mysql import (
    ACCESS_DENIED,
    CLIENT_ERROR,
    USER_LIMIT_PAUSES_S,
    USER_LIMIT_REACHED,
    DatabaseError,
    MySqlConnector,
    MySqlEndpoint,
    ensure_app_user,
    grant_target,
)
from adapters.secrets import (
    FixedCredentials,
    Login,
    SecretCredentials,
    SecretUnavailable,
)
from domain import ConnleaseError, InvalidInput
from service.bootstrap import db_credentials, mysql_connector
from service.settings import SeederSettings, WorkloadSettings

REGION = "us-east-1"
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:connlease-app-AbCdEf"


class Counting:
    """A Secrets Manager client that counts its reads."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.reads += 1
        return self._client.get_secret_value(**kwargs)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def rds_secret(username: str, password: str) -> str:
    """What RDS writes (and the template's GenerateSecretString makes): extra keys too."""
    return json.dumps(
        {"username": username, "password": password, "engine": "mysql", "host": "db", "port": 3306}
    )


# ------------------------------------------------------------------ reading a secret


def test_a_secret_is_read_once_and_kept_until_refreshed(secrets: Any) -> None:
    arn = secrets.create_secret(Name="app", SecretString=rds_secret("connlease_app", "one"))["ARN"]
    reader = Counting(secrets)
    credentials = SecretCredentials(reader, arn)

    assert credentials.current() == Login("connlease_app", "one")
    assert credentials.current() == Login("connlease_app", "one")
    assert reader.reads == 1

    secrets.put_secret_value(SecretId=arn, SecretString=rds_secret("connlease_app", "two"))
    assert credentials.current().password == "one"  # kept: no read per connect
    assert credentials.refresh() == Login("connlease_app", "two")
    assert credentials.current().password == "two"
    assert reader.reads == 2


def test_a_missing_secret_is_a_typed_error_naming_it(secrets: Any) -> None:
    with pytest.raises(SecretUnavailable) as missing:
        SecretCredentials(secrets, ARN).current()

    assert isinstance(missing.value, ConnleaseError)
    assert missing.value.secret_id == ARN
    assert str(missing.value).startswith(f"database secret {ARN} unusable: ")
    assert "ResourceNotFoundException" in missing.value.reason


@pytest.fixture
def unreachable() -> Any:
    class Unreachable:
        def get_secret_value(self, **_: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="https://secretsmanager.invalid/")

    return Unreachable()


def test_an_unreachable_secrets_manager_is_a_typed_error_not_a_botocore_traceback(
    unreachable: Any,
) -> None:
    with pytest.raises(SecretUnavailable, match="Could not connect to the endpoint URL"):
        SecretCredentials(unreachable, ARN).refresh()


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("not json", "its SecretString is not a JSON object"),
        ('["connlease_app", "hunter2"]', "its SecretString is not a JSON object"),
        ('{"username": "connlease_app"}', "needs a non-empty string password"),
        ('{"password": "hunter2"}', "needs a non-empty string username"),
        ('{"username": "", "password": 7}', "needs a non-empty string username and password"),
    ],
)
def test_a_malformed_secret_says_what_it_lacks_and_never_shows_a_value(
    secrets: Any, secret: str, reason: str
) -> None:
    arn = secrets.create_secret(Name="bad", SecretString=secret)["ARN"]

    with pytest.raises(SecretUnavailable) as malformed:
        SecretCredentials(secrets, arn).current()

    assert reason in malformed.value.reason
    assert "hunter2" not in str(malformed.value)


def test_a_binary_secret_is_refused(secrets: Any) -> None:
    arn = secrets.create_secret(Name="binary", SecretBinary=b"\x00\x01")["ARN"]

    with pytest.raises(SecretUnavailable, match="no SecretString"):
        SecretCredentials(secrets, arn).current()


def test_passwords_stay_out_of_reprs() -> None:
    assert "hunter2" not in repr(Login("connlease_app", "hunter2"))
    assert "hunter2" not in repr(MySqlEndpoint(password="hunter2"))
    assert "hunter2" not in repr(SeederSettings(leases_table_name="t-1", db_app_password="hunter2"))


# ------------------------------------------------------------------ the connector


class FakeMySql:
    """pymysql.connect, answering from a script: an error number, or a connection."""

    def __init__(self, *script: int | None, password: str = "right") -> None:
        self.script = list(script)
        self.password = password
        self.tried: list[tuple[str, str]] = []

    def __call__(self, **options: Any) -> object:
        self.tried.append((options["user"], options["password"]))
        code = self.script.pop(0) if self.script else None
        if code is None and options["password"] != self.password:
            code = ACCESS_DENIED
        if code is not None:
            raise pymysql.err.OperationalError(code, f"refused with {code}")
        return object()


class Script:
    """Credentials whose reads answer from a list."""

    def __init__(self, *logins: Login) -> None:
        self.logins = list(logins)
        self.reads = 0

    def current(self) -> Login:
        if not self.reads:
            return self.refresh()
        return self.logins[0]

    def refresh(self) -> Login:
        self.reads += 1
        if len(self.logins) > 1 and self.reads > 1:
            self.logins.pop(0)
        login = self.logins[0]
        if isinstance(login, Exception):
            raise login
        return login


@pytest.fixture
def mysql(monkeypatch: pytest.MonkeyPatch) -> FakeMySql:
    fake = FakeMySql()
    monkeypatch.setattr(pymysql, "connect", fake)
    return fake


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    # Only the connector sleeps while these tests run.
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def test_a_refused_login_is_read_again_once_and_the_connect_retried(mysql: FakeMySql) -> None:
    credentials = Script(Login("app", "rotated-away"), Login("app", "right"))
    connect = MySqlConnector(MySqlEndpoint(), None, credentials)

    connect()

    assert mysql.tried == [("app", "rotated-away"), ("app", "right")]
    assert credentials.reads == 2
    assert connect.describe() == "app@127.0.0.1:3306/test"


def test_a_login_that_reads_back_the_same_is_not_tried_again(mysql: FakeMySql) -> None:
    credentials = Script(Login("app", "wrong"))

    with pytest.raises(DatabaseError) as refused:
        MySqlConnector(MySqlEndpoint(), None, credentials)()

    assert refused.value.code == ACCESS_DENIED
    assert credentials.reads == 2
    assert mysql.tried == [("app", "wrong")]


def test_a_second_refusal_is_raised_after_one_read_again(mysql: FakeMySql) -> None:
    credentials = Script(Login("app", "wrong-1"), Login("app", "wrong-2"), Login("app", "right"))

    with pytest.raises(DatabaseError) as refused:
        MySqlConnector(MySqlEndpoint(), None, credentials)()

    assert refused.value.code == ACCESS_DENIED
    assert mysql.tried == [("app", "wrong-1"), ("app", "wrong-2")]


def test_other_errors_do_not_read_the_secret_again(mysql: FakeMySql) -> None:
    mysql.script = [CLIENT_ERROR]
    credentials = Script(Login("app", "right"))

    with pytest.raises(DatabaseError) as failed:
        MySqlConnector(MySqlEndpoint(), None, credentials)()

    assert failed.value.code == CLIENT_ERROR
    assert credentials.reads == 1


def test_a_secret_that_cannot_be_read_again_is_raised_typed(mysql: FakeMySql) -> None:
    credentials = Script(Login("app", "rotated-away"), SecretUnavailable(ARN, "AccessDenied"))  # type: ignore[arg-type]

    with pytest.raises(SecretUnavailable, match="AccessDenied"):
        MySqlConnector(MySqlEndpoint(), None, credentials)()


def test_without_credentials_the_endpoints_login_is_used_and_never_retried(
    mysql: FakeMySql,
) -> None:
    connect = MySqlConnector(MySqlEndpoint(user="root", password="nope"), None)

    with pytest.raises(DatabaseError):
        connect()

    assert mysql.tried == [("root", "nope")]
    assert connect.describe() == "root@127.0.0.1:3306/test"


def test_a_user_limit_refusal_is_waited_out_briefly(mysql: FakeMySql, pauses: list[float]) -> None:
    mysql.script = [USER_LIMIT_REACHED]
    connect = MySqlConnector(MySqlEndpoint(password="right"), None)

    connect()

    assert pauses == [USER_LIMIT_PAUSES_S[0]]
    assert len(mysql.tried) == 2


def test_a_user_limit_that_stays_reached_is_raised(mysql: FakeMySql, pauses: list[float]) -> None:
    mysql.script = [USER_LIMIT_REACHED] * 10

    with pytest.raises(DatabaseError) as refused:
        MySqlConnector(MySqlEndpoint(password="right"), None)()

    assert refused.value.code == USER_LIMIT_REACHED
    assert pauses == list(USER_LIMIT_PAUSES_S)
    assert len(mysql.tried) == len(USER_LIMIT_PAUSES_S) + 1


# ------------------------------------------------------------------ the app user's SQL


class RecordingCursor:
    def __init__(self, statements: list[tuple[str, Any]]) -> None:
        self.statements = statements

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def execute(self, sql: str, args: Any = None) -> None:
        self.statements.append((sql, args))


class RecordingConnection:
    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self.statements)


def test_names_and_passwords_travel_as_parameters_never_in_the_sql() -> None:
    admin = RecordingConnection()

    ensure_app_user(admin, "o'app", "p'w%s", "test", 4)  # type: ignore[arg-type]

    create, alter, grant = admin.statements
    assert create == (
        "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s REQUIRE SSL WITH MAX_USER_CONNECTIONS %s",
        ("o'app", "%", "p'w%s", 4),
    )
    assert alter[0].startswith("ALTER USER %s@%s IDENTIFIED BY %s REQUIRE SSL")
    assert grant == (
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES, LOCK TABLES"
        " ON `test`.* TO %s@%s",
        ("o'app", "%"),
    )
    assert all("o'app" not in sql and "p'w" not in sql for sql, _ in admin.statements)


def test_a_grant_target_is_quoted_with_its_wildcards_escaped() -> None:
    assert grant_target("orders") == "`orders`.*"
    assert grant_target("my_db%") == "`my\\_db\\%`.*"
    assert grant_target("we`ird") == "`we``ird`.*"


@pytest.mark.parametrize(
    ("user", "password", "limit", "field"),
    [
        ("", "pw", 1, "user"),
        ("x" * 33, "pw", 1, "user"),
        ("app", "", 1, "password"),
        ("app", "pw", 0, "max_connections"),
        ("app", "pw", True, "max_connections"),
        ("app", "pw", 2.5, "max_connections"),
    ],
)
def test_bad_app_user_arguments_are_invalid_input_before_any_sql(
    user: str, password: str, limit: int, field: str
) -> None:
    admin = RecordingConnection()

    with pytest.raises(InvalidInput) as invalid:
        ensure_app_user(admin, user, password, "test", limit)  # type: ignore[arg-type]

    assert invalid.value.field == field
    assert admin.statements == []


# ------------------------------------------------------------------ settings and bootstrap


def test_without_a_secret_the_login_is_db_user_and_db_password() -> None:
    settings = WorkloadSettings(db_user="demo", db_password="pw")

    connector = mysql_connector(settings, settings.db_secret_arn)

    assert isinstance(connector.credentials, FixedCredentials)
    assert connector.credentials.current() == Login("demo", "pw")


def test_with_a_secret_the_login_is_read_on_the_first_connect_not_at_build(
    secrets: Any,
) -> None:
    arn = secrets.create_secret(Name="app", SecretString=rds_secret("connlease_app", "s3"))["ARN"]

    credentials = db_credentials(arn, "root", "")
    assert isinstance(credentials, SecretCredentials)
    secrets.put_secret_value(SecretId=arn, SecretString=rds_secret("connlease_app", "s4"))

    assert credentials.current() == Login("connlease_app", "s4")


def test_the_seeder_logs_in_as_the_admin_secret_else_db_secret_arn() -> None:
    admin = "arn:aws:secretsmanager:us-east-1:1:secret:admin"
    old = "arn:aws:secretsmanager:us-east-1:1:secret:master"
    assert SeederSettings(leases_table_name="t-1").admin_secret_arn is None
    assert SeederSettings(leases_table_name="t-1", db_secret_arn=old).admin_secret_arn == old
    both = SeederSettings(leases_table_name="t-1", db_secret_arn=old, db_admin_secret_arn=admin)
    assert both.admin_secret_arn == admin


def test_the_seeder_manages_an_app_user_only_when_one_is_configured() -> None:
    base = {"LEASES_TABLE_NAME": "t-1"}
    assert not SeederSettings.from_environment(base).manages_app_user
    local = SeederSettings.from_environment(base | {"DB_APP_PASSWORD": "pw"})
    assert (local.manages_app_user, local.db_app_user, local.db_app_require_ssl) == (
        True,
        "connlease_app",
        True,
    )
    secret = SeederSettings.from_environment(
        base | {"DB_APP_SECRET_ARN": ARN, "DB_APP_REQUIRE_SSL": "false"}
    )
    assert (secret.manages_app_user, secret.db_app_require_ssl) == (True, False)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"DB_APP_USER": "app"}, "DB_APP_USER needs DB_APP_PASSWORD"),
        ({"DB_APP_SECRET_ARN": ARN, "DB_APP_PASSWORD": "pw"}, "leave DB_APP_USER and"),
        ({"DB_APP_SECRET_ARN": ARN, "DB_APP_USER": "app"}, "leave DB_APP_USER and"),
        ({"DB_APP_SECRET_ARN": "not-an-arn"}, "String should match pattern"),
        ({"DB_APP_USER": "x" * 33, "DB_APP_PASSWORD": "pw"}, "at most 32 characters"),
    ],
)
def test_an_app_user_configured_two_ways_or_half_is_refused(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SeederSettings.from_environment({"LEASES_TABLE_NAME": "t-1"} | variables)
