"""The operator's command line (`connlease status|leases|set|release`) through Typer's test
runner, against the embedded DynamoDB (which serves CloudFormation, CloudWatch and Secrets
Manager too) and MariaDB: what an operator sees, what each command changes, and that a bad
argument is one line, an exit code and no write."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
import pymysql
import pytest
from typer.testing import CliRunner, Result

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore
from adapters.dynamodb_item import entries_per_shard
from cli.commands import app
from domain import Granted, LeaseLost, Quota, Rejected, Renewed
from domain.groups import Reservation
from domain.tokens import label
from local.context import LOCAL_REGION
from local.dynamodb import EmbeddedDynamoDB
from tests.fakes import FakeClock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

TTL = 30_000
NAMESPACE = "connlease"
Service = Literal["cloudformation", "cloudwatch", "secretsmanager"]
MYSQL = ("--mysql-host", "127.0.0.1", "--mysql-port", "3306")


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The local stack's credentials, and nothing else that says where to act (no profile,
    endpoint, table, stack or MySQL of the machine's, nor its AWS configuration files)."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "DB_")) or name in {"LEASES_TABLE_NAME", "CONNLEASE_STACK"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_REGION", LOCAL_REGION)


@dataclass
class Cli:
    """The app as an operator runs it on the embedded server, and the server's clients."""

    embedded: EmbeddedDynamoDB
    client: DynamoDBClient
    table: str
    runner: CliRunner

    @property
    def endpoint_url(self) -> str:
        return self.embedded.endpoint_url

    def items(self) -> list[str]:
        """Every item of the table, to compare before and after."""
        found = self.client.scan(TableName=self.table, ConsistentRead=True)["Items"]
        return sorted(repr(sorted(item.items())) for item in found)

    def aws(self, service: Service) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=LOCAL_REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def where(self) -> list[str]:
        return ["--endpoint-url", self.endpoint_url, "--table", self.table]

    def run(self, *args: str, input: str | None = None) -> Result:
        """`args` on this table (a command first)."""
        return self.runner.invoke(app, [*args, *self.where()], input=input)

    def bare(self, *args: str, input: str | None = None) -> Result:
        """`args` as given, with the endpoint but no table."""
        return self.runner.invoke(app, [*args, "--endpoint-url", self.endpoint_url], input=input)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def cli(
    embedded_dynamodb: EmbeddedDynamoDB, dynamodb_client: DynamoDBClient, leases_table: str
) -> Cli:
    return Cli(embedded_dynamodb, dynamodb_client, leases_table, CliRunner())


@pytest.fixture
def store(dynamodb_client: DynamoDBClient, leases_table: str) -> DynamoDBLeaseStore:
    return DynamoDBLeaseStore(dynamodb_client, leases_table, SystemClock())


@pytest.fixture
def db() -> str:
    """A database name of this test's own (moto's CloudWatch outlives a test), short
    enough for an 80-column table."""
    return f"db-{uuid.uuid4().hex[:5]}"


def rows(text: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell (wrapped continuation lines left out)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            if cells[0]:
                found[cells[0]] = cells[1:]
    return found


def grant(store: DynamoDBLeaseStore, database: str, holder: str, **kwargs: Any) -> Granted:
    result = store.acquire(database, holder, **kwargs)
    assert isinstance(result, Granted), result
    return result


def one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("connlease: error: "), lines[0]
    return lines[0]


def answered_then_refused(result: Result, question: str) -> str:
    """The question, then one error line, on stderr (stdout is the command's output)."""
    asked, refused = result.stderr.splitlines()
    assert asked.startswith(question), result.stderr
    assert refused.startswith("connlease: error: "), result.stderr
    return refused


def max_connections() -> int:
    root = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    with closing(root), root.cursor() as cursor:
        cursor.execute("SELECT @@GLOBAL.max_connections")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


# status


def test_status_of_one_database_shows_its_use_its_groups_and_its_oldest_lease(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(
        db,
        Quota(limit=6, default_ttl_ms=TTL),
        [Reservation("api", 2), Reservation("batch", 0, max=3)],
    )
    now_ms = SystemClock().now_ms()
    past = DynamoDBLeaseStore(cli.client, cli.table, FakeClock(now_ms - 120_000))
    grant(past, db, "gone-1", ttl_ms=TTL)  # ended 90 s ago, not reclaimed yet
    before = DynamoDBLeaseStore(cli.client, cli.table, FakeClock(now_ms - 20_000))
    grant(before, db, "old-1", ttl_ms=60_000, group="api")  # held for 20 s
    grant(store, db, "api-2", group="api")
    grant(store, db, "batch-1", group="batch")

    document = cli.json("status", db)

    assert {key: document[key] for key in ("database", "limit", "in_use", "remaining")} == {
        "database": db,
        "limit": 6,
        "in_use": 3,
        "remaining": 3,
    }
    assert document["expired"] == 1
    assert document["default_ttl_ms"] == TTL
    assert (document["pool_limit"], document["pool_in_use"]) == (4, 1)
    groups = {group["group"]: group for group in document["groups"]}
    assert set(groups) == {"api", "batch"}
    assert (groups["api"]["reserved"], groups["api"]["reserved_in_use"]) == (2, 2)
    assert (groups["batch"]["reserved"], groups["batch"]["reserved_in_use"]) == (0, 0)
    assert (groups["batch"]["borrowed"], groups["batch"]["max"]) == (1, 3)
    oldest = document["oldest"]
    assert (oldest["holder"], oldest["group"], oldest["live"]) == ("old-1", "api", True)
    assert 19_000 <= oldest["held_ms"] <= 60_000
    assert "leases" not in document

    shown = cli.run("status", db)

    assert shown.exit_code == 0, shown.output
    table = rows(shown.stdout)
    assert table[db][:5] == ["6", "3", "3", "1", "30s"]
    assert "old-1" in table[db][5]
    assert "api-2" not in shown.stdout
    assert table["(pool)"][:2] == ["4", "1"]
    assert table["api"][:2] == ["2", "2"]
    assert table["batch"][:5] == ["0", "0", "1", "3", "yes"]


def test_status_of_every_database_lists_each_quota(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    assert cli.json("status") == []
    empty = cli.run("status")
    assert empty.exit_code == 0
    assert "no quotas" in empty.stdout
    assert "--create makes one" in " ".join(empty.stdout.split())

    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL), [Reservation("api", 1)])
    split = 2 * entries_per_shard("billing") + 3
    store.set_quota("billing", Quota(limit=split, default_ttl_ms=45_000))
    grant(store, db, "api-1", group="api")
    grant(store, "billing", "bill-1")
    grant(store, "billing", "bill-2")

    documents = cli.json("status")

    assert [document["database"] for document in documents] == sorted(["billing", db])
    by_name = {document["database"]: document for document in documents}
    assert (by_name[db]["limit"], by_name[db]["in_use"], by_name[db]["remaining"]) == (5, 1, 4)
    assert by_name[db]["groups"][0]["reserved_in_use"] == 1
    assert (by_name["billing"]["limit"], by_name["billing"]["in_use"]) == (split, 2)
    assert by_name["billing"]["oldest"]["holder"] in {"bill-1", "bill-2"}
    assert by_name["billing"].get("groups") is None

    shown = cli.run("status")

    assert shown.exit_code == 0, shown.output
    table = rows(shown.stdout)
    assert table[db][:4] == ["5", "1", "4", "0"]
    assert table["billing"][:5] == [str(split), "2", str(split - 2), "0", "45s"]
    assert "api" in table  # the groups table of the quota that has groups


# leases


def test_leases_shows_holders_and_labels_never_a_token_or_a_key(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(db, Quota(limit=6, default_ttl_ms=TTL), [Reservation("api", 1)])
    granted = [
        grant(store, db, "api-1", group="api"),
        grant(store, db, "api-2", group="api"),  # borrowed: the reservation is in use
        grant(store, db, "batch-7"),
        grant(store, db, "orders-service-prod-api/8f14e45f"),  # the longest a client writes
    ]

    document = cli.json("leases", db)
    shown = cli.run("leases", db)

    assert (document["database"], document["limit"], document["in_use"]) == (db, 6, 4)
    listed = {lease["holder"]: lease for lease in document["leases"]}
    assert set(listed) == {g.lease.holder for g in granted}
    for found in granted:
        doc = listed[found.lease.holder]
        assert doc["lease"] == label(found.lease)
        assert doc["live"] is True
        assert doc["expires_at_ms"] == found.lease.expires_at_ms
        assert doc["granted_at_ms"] == found.lease.granted_at_ms
    assert (listed["api-1"]["group"], listed["api-1"]["borrowed"]) == ("api", False)
    assert (listed["api-2"]["group"], listed["api-2"]["borrowed"]) == ("api", True)
    assert listed["batch-7"]["group"] is None

    assert shown.exit_code == 0, shown.output
    table = rows(shown.stdout)
    for found in granted[:3]:
        assert table[label(found.lease)][0] == found.lease.holder
    for text in (json.dumps(document), shown.output):
        for found in granted:
            secret = found.token.partition(".")[0]
            assert found.token not in text
            assert secret not in text
            assert found.lease.id not in text


def test_leases_of_a_quota_that_holds_none(cli: Cli, store: DynamoDBLeaseStore, db: str) -> None:
    store.set_quota(db, Quota(limit=3, default_ttl_ms=TTL))

    assert cli.json("leases", db) == {"database": db, "limit": 3, "in_use": 0, "leases": []}
    shown = cli.run("leases", db)
    assert shown.exit_code == 0
    assert f"{db}: 0 of 3 in use" in shown.stdout


# set


def test_set_limit_changes_the_limit_and_keeps_live_leases(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    held = [grant(store, db, "api-1"), grant(store, db, "api-2")]

    result = cli.run("set", db, "--limit", "8", "--yes")

    assert result.exit_code == 0, result.output
    assert "limit 5 -> 8" in result.stdout
    assert "2 in use now" in result.stdout
    assert rows(result.stdout)[db][:3] == ["8", "2", "6"]
    status = store.status(db)
    assert (status.limit, status.in_use, status.default_ttl_ms) == (8, 2, TTL)
    assert sorted(lease.id for lease in status.leases) == sorted(g.lease.id for g in held)
    for found in held:
        assert isinstance(store.renew(db, found.token), Renewed)


def test_set_below_what_is_in_use_says_the_quota_will_drain_and_applies(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    held = [grant(store, db, f"api-{index}") for index in range(3)]

    result = cli.run("set", db, "--limit", "1", "--yes")

    assert result.exit_code == 0, result.output
    assert "will drain" in result.stdout
    status = store.status(db)
    assert (status.limit, status.in_use, status.remaining) == (1, 3, 0)
    assert isinstance(store.acquire(db, "api-9"), Rejected)
    for found in held:
        assert isinstance(store.renew(db, found.token), Renewed)


def test_set_create_makes_a_new_quota_with_a_default_ttl(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    created = cli.run("set", db, "--limit", "4", "--ttl", "90s", "--create", "--yes")

    assert created.exit_code == 0, created.output
    assert f"{db}: a new quota of 4, leases 1m30s" in created.stdout
    status = store.status(db)
    assert (status.limit, status.default_ttl_ms) == (4, 90_000)

    changed = cli.run("set", db, "--limit", "4", "--ttl", "30s", "--yes")

    assert changed.exit_code == 0, changed.output
    assert f"{db}: limit 4 (kept), default TTL 1m30s -> 30s" in changed.stdout
    assert store.status(db).default_ttl_ms == 30_000
    kept = cli.run("set", db, "--limit", "5", "--yes")  # no --ttl: the quota's own is kept
    assert kept.exit_code == 0, kept.output
    assert store.status(db).default_ttl_ms == 30_000


def test_set_without_create_refuses_a_database_that_has_no_quota(cli: Cli, db: str) -> None:
    """A mistyped name must not become a quota no function uses."""
    before = cli.items()

    result = cli.run("set", db, "--limit", "4", "--yes")

    assert result.exit_code == 1, result.output
    assert one_error_line(result) == (
        f"connlease: error: no quota for database {db!r}: --create makes one (with --limit N"
        " or --percent P); connlease status lists the quotas there are"
    )
    assert result.stdout == ""
    assert cli.items() == before


def test_set_create_on_a_quota_that_exists_changes_it(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    grant(store, db, "api-1")

    result = cli.run("set", db, "--limit", "6", "--create", "--yes")

    assert result.exit_code == 0, result.output
    assert "limit 5 -> 6" in result.stdout
    status = store.status(db)
    assert (status.limit, status.in_use, status.default_ttl_ms) == (6, 1, TTL)


@pytest.mark.parametrize(("ttl", "ms"), [("5min", 300_000), ("5m", 300_000), ("90s", 90_000)])
def test_set_ttl_alone_changes_only_the_ttl(
    cli: Cli, store: DynamoDBLeaseStore, db: str, ttl: str, ms: int
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL), [Reservation("api", 2)])
    held = grant(store, db, "api-1", group="api")

    result = cli.run("set", db, "--ttl", ttl, "--yes")

    assert result.exit_code == 0, result.output
    assert f"{db}: limit 5 (kept), default TTL 30s -> " in result.stdout
    status = store.status(db)
    assert (status.limit, status.default_ttl_ms, status.in_use) == (5, ms, 1)
    assert status.groups is not None
    assert [(g.group, g.reserved) for g in status.groups.groups] == [("api", 2)]
    assert isinstance(store.renew(db, held.token), Renewed)


def test_set_reserve_alone_keeps_the_limit_and_ttl(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))

    result = cli.run("set", db, "--reserve", "api=2", "--yes")

    assert result.exit_code == 0, result.output
    status = store.status(db)
    assert (status.limit, status.default_ttl_ms) == (5, TTL)
    assert status.groups is not None
    assert [(g.group, g.reserved) for g in status.groups.groups] == [("api", 2)]


def test_set_reserve_sets_groups_and_no_groups_removes_them(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(db, Quota(limit=6, default_ttl_ms=TTL))

    result = cli.run(
        "set", db, "--limit", "6", "--reserve", "api=2", "--reserve", "batch=0:max=3", "--yes"
    )

    assert result.exit_code == 0, result.output
    assert "groups: api=2" in result.stdout
    groups = store.status(db).groups
    assert groups is not None
    assert groups.pool_limit == 4
    assert [(g.group, g.reserved, g.max, g.borrow) for g in groups.groups] == [
        ("api", 2, None, True),
        ("batch", 0, 3, True),
    ]
    table = rows(result.stdout)
    assert table["api"][0] == "2"
    assert table["batch"][3] == "3"
    # Kept when --reserve is not given.
    assert cli.run("set", db, "--limit", "7", "--yes").exit_code == 0
    kept = store.status(db).groups
    assert kept is not None
    assert [(g.group, g.reserved) for g in kept.groups] == [("api", 2), ("batch", 0)]

    removed = cli.run("set", db, "--limit", "6", "--no-groups", "--yes")

    assert removed.exit_code == 0, removed.output
    assert "groups: none" in removed.stdout
    after = store.status(db)
    assert after.groups is None
    assert after.limit == 6


def test_set_json_prints_the_document_alone_on_stdout(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    """A script reads `--json` stdout as one document; what the change does is for people."""
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))

    result = cli.run("set", db, "--limit", "7", "--ttl", "45s", "--yes", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["database"], document["limit"], document["default_ttl_ms"]) == (
        db,
        7,
        45_000,
    )


def test_tables_show_database_and_holder_names_whole_at_80_columns(
    cli: Cli, store: DynamoDBLeaseStore
) -> None:
    """An operator copies these names into `set` and `release --holder`; output that is not
    a terminal (a pipe, a CI log) is 80 columns wide."""
    db = "orders-prod-mysql"
    holder = "orders-service-prod-api/8f14e45f"  # the longest a client writes
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    grant(store, db, holder)

    status = cli.run("status")
    leases = cli.run("leases", db)

    assert status.exit_code == 0, status.output
    assert leases.exit_code == 0, leases.output
    assert db in rows(status.stdout), status.stdout
    assert holder in [cells[0] for cells in rows(leases.stdout).values()], leases.stdout


@pytest.mark.parametrize("holder", ["[bold]api[/bold]", "job[/]", "api:fire:"])
def test_a_holder_is_shown_as_written(cli: Cli, store: DynamoDBLeaseStore, holder: str) -> None:
    """A holder is any printable ASCII a caller chose: shown as it is, never read as markup
    (the operator types it back into `release --holder`)."""
    db = "orders"
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    found = grant(store, db, holder)

    leases = cli.run("leases", db)
    status = cli.run("status", db)

    assert leases.exit_code == 0, (leases.output, leases.exception)
    assert rows(leases.stdout)[label(found.lease)][0] == holder
    assert status.exit_code == 0, (status.output, status.exception)  # its oldest lease


@pytest.mark.parametrize("answer", ["n\n", "no\n", ""])
def test_set_asks_first_and_changes_nothing_without_a_yes(
    cli: Cli, store: DynamoDBLeaseStore, db: str, answer: str
) -> None:
    """No answer (end of input) is a no, as much as `n`."""
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    before = cli.items()

    result = cli.run("set", db, "--limit", "9", input=answer)

    assert result.exit_code == 1, result.output
    assert "limit 5 -> 9" in result.stdout
    assert "not changed" in answered_then_refused(result, "Apply? [y/N]")
    assert cli.items() == before


def test_set_applies_when_the_answer_is_yes(cli: Cli, store: DynamoDBLeaseStore, db: str) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))

    result = cli.run("set", db, "--limit", "9", input="y\n")

    assert result.exit_code == 0, result.output
    assert "Apply?" in result.stderr
    assert store.status(db).limit == 9


def test_set_percent_of_mysqls_max_connections(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    ceiling = max_connections()
    expected = ceiling * 50 // 100

    result = cli.run("set", db, "--percent", "50", *MYSQL, "--mysql-user", "root", "--yes")

    assert result.exit_code == 0, result.output
    assert f"max_connections {ceiling}" in result.stdout
    assert f"limit of {expected}" in result.stdout
    assert store.status(db).limit == expected


def test_set_percent_local_reaches_the_local_stacks_mysql(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    """--local: MySQL at 127.0.0.1:3306 as root, as `make local` has it, with no option."""
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))

    result = cli.run("set", db, "--percent", "50", "--local", "--yes")

    assert result.exit_code == 0, result.output
    assert "MySQL root@127.0.0.1:3306/test: max_connections" in result.stdout
    assert store.status(db).limit == max_connections() * 50 // 100


@pytest.fixture
def mysql_login() -> Iterator[tuple[str, str]]:
    """A MariaDB user with a password (a secret in the RDS format has one)."""
    user, password = f"cli_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(12)
    root = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with closing(root):
        with root.cursor() as cursor:
            cursor.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
            cursor.execute(f"GRANT SELECT ON test.* TO '{user}'@'%'")
        try:
            yield user, password
        finally:
            with root.cursor() as cursor:
                cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_set_percent_logs_in_with_the_secret_in_secrets_manager(
    cli: Cli,
    store: DynamoDBLeaseStore,
    mysql_login: tuple[str, str],
    db: str,
) -> None:
    user, password = mysql_login
    manager = cli.aws("secretsmanager")
    good = manager.create_secret(
        Name=f"connlease/{db}/good",
        SecretString=json.dumps({"username": user, "password": password, "engine": "mysql"}),
    )["ARN"]
    wrong = manager.create_secret(
        Name=f"connlease/{db}/wrong",
        SecretString=json.dumps({"username": user, "password": password + "-not"}),
    )["ARN"]
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    before = cli.items()

    refused = cli.run("set", db, "--percent", "20", *MYSQL, "--mysql-secret", wrong, "--yes")

    assert refused.exit_code == 1, refused.output
    assert one_error_line(refused).startswith("connlease: error: MySQL: ")
    assert cli.items() == before

    result = cli.run("set", db, "--percent", "20", *MYSQL, "--mysql-secret", good, "--yes")

    assert result.exit_code == 0, result.output
    expected = max_connections() * 20 // 100
    assert f"limit of {expected}" in result.stdout
    assert store.status(db).limit == expected


def test_an_error_line_shows_a_secrets_arn_as_it_is(
    cli: Cli, store: DynamoDBLeaseStore, db: str
) -> None:
    """An ARN has `:secret:` in it, which a terminal library may read as an emoji code."""
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    arn = f"arn:aws:secretsmanager:{LOCAL_REGION}:123456789012:secret:{db}-AbCdEf"

    result = cli.run("set", db, "--percent", "20", *MYSQL, "--mysql-secret", arn, "--yes")

    assert result.exit_code == 1, result.output
    assert arn in one_error_line(result)


# release


@pytest.fixture
def stuck(store: DynamoDBLeaseStore, db: str) -> tuple[list[Granted], list[Granted]]:
    """Two leases of a stuck holder, and one of a healthy one."""
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL), [Reservation("api", 1)])
    stuck = [grant(store, db, "stuck-fn/1", group="api"), grant(store, db, "stuck-fn/1")]
    return stuck, [grant(store, db, "healthy-fn/2")]


def test_release_by_holder_removes_that_holders_leases_and_counts_them(
    cli: Cli,
    store: DynamoDBLeaseStore,
    stuck: tuple[list[Granted], list[Granted]],
    db: str,
) -> None:
    mine, others = stuck
    started = datetime.now(UTC)

    result = cli.run("release", db, "--holder", "stuck-fn/1", "--yes")

    assert result.exit_code == 0, result.output
    assert f"released 2 lease(s) of {db}" in result.stdout
    status = store.status(db)
    assert [lease.id for lease in status.leases] == [g.lease.id for g in others]
    for found in mine:
        assert isinstance(store.renew(db, found.token), LeaseLost)
    for found in others:
        assert isinstance(store.renew(db, found.token), Renewed)
    for found in mine:
        assert found.lease.id not in result.output
        assert found.token.partition(".")[0] not in result.output

    cloudwatch = cli.aws("cloudwatch")
    dimensions = [
        {"Name": "service", "Value": "connlease-cli"},
        {"Name": "database", "Value": db},
    ]
    listed = cloudwatch.list_metrics(
        Namespace=NAMESPACE,
        MetricName="LeasesForceReleased",
        Dimensions=[{"Name": "database", "Value": db}],
    )["Metrics"]
    assert [sorted(m["Dimensions"], key=lambda d: d["Name"]) for m in listed] == [
        sorted(dimensions, key=lambda d: d["Name"])
    ]
    points = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName="LeasesForceReleased",
        Dimensions=dimensions,
        StartTime=started - timedelta(minutes=2),
        EndTime=datetime.now(UTC) + timedelta(minutes=2),
        Period=60,
        Statistics=["Sum"],
    )["Datapoints"]
    assert sum(point["Sum"] for point in points) == 2


def test_release_logs_each_lease_as_an_operator_force_release_on_stderr(
    cli: Cli, stuck: tuple[list[Granted], list[Granted]], db: str
) -> None:
    mine, _ = stuck

    result = cli.run("release", db, "--holder", "stuck-fn/1", "--yes")

    assert result.exit_code == 0, result.output
    logged = [
        json.loads(line) for line in result.stderr.splitlines() if line.lstrip().startswith("{")
    ]
    assert len(logged) == 2, result.stderr
    for line in logged:
        assert line["level"] == "WARNING"
        assert line["message"] == "operator force-release"
        assert (line["holder"], line["database"]) == ("stuck-fn/1", db)
        assert line["service"] == "connlease-cli"
        assert line["operator"]
    assert sorted(line["lease"] for line in logged) == sorted(label(g.lease) for g in mine)
    for found in mine:
        assert found.lease.id not in result.stderr
        assert found.token.partition(".")[0] not in result.stderr


def test_release_one_lease_by_its_label(
    cli: Cli, store: DynamoDBLeaseStore, stuck: tuple[list[Granted], list[Granted]], db: str
) -> None:
    mine, others = stuck
    listed = cli.json("leases", db)["leases"]
    target = mine[1]
    shown = label(target.lease)
    assert shown in [lease["lease"] for lease in listed]

    result = cli.run("release", db, "--lease", shown, "--yes")

    assert result.exit_code == 0, result.output
    assert f"released 1 lease(s) of {db}" in result.stdout
    left = sorted(lease.id for lease in store.status(db).leases)
    assert left == sorted([mine[0].lease.id, others[0].lease.id])
    assert isinstance(store.renew(db, target.token), LeaseLost)
    assert isinstance(store.renew(db, mine[0].token), Renewed)


def test_release_asks_first_and_removes_nothing_without_a_yes(
    cli: Cli, stuck: tuple[list[Granted], list[Granted]], db: str
) -> None:
    before = cli.items()

    result = cli.run("release", db, "--holder", "stuck-fn/1", input="n\n")

    assert result.exit_code == 1, result.output
    assert "not released" in answered_then_refused(result, "Force-release")
    assert cli.items() == before

    agreed = cli.run("release", db, "--holder", "stuck-fn/1", input="y\n")

    assert agreed.exit_code == 0, agreed.output
    assert cli.items() != before


# --stack


def create_stack(cli: Cli, name: str, outputs: dict[str, str]) -> None:
    template = {
        "Resources": {"Alarms": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cli.aws("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def test_stack_outputs_name_the_table(
    cli: Cli,
    store: DynamoDBLeaseStore,
    db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL))
    grant(store, db, "api-1")
    stack = f"connlease-{uuid.uuid4().hex[:8]}"
    create_stack(cli, stack, {"LeasesTableName": cli.table, "QuotaDatabase": f"{db}: 5 leases"})

    result = cli.bare("status", "--json", "--stack", stack)

    assert result.exit_code == 0, result.output
    (document,) = json.loads(result.stdout)
    assert (document["database"], document["limit"], document["in_use"]) == (db, 5, 1)
    listed = cli.bare("leases", db, "--json", "--stack", stack)
    assert listed.exit_code == 0, listed.output
    assert [lease["holder"] for lease in json.loads(listed.stdout)["leases"]] == ["api-1"]

    monkeypatch.setenv("CONNLEASE_STACK", stack)
    from_env = cli.bare("status", db, "--json")
    assert from_env.exit_code == 0, from_env.output
    assert json.loads(from_env.stdout)["database"] == db


def test_a_table_that_does_not_exist_is_named_with_where_it_came_from(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB's own answer (ResourceNotFoundException) names no table: the line does, with
    the option or variable that named it and how to name another."""
    stack = f"connlease-{uuid.uuid4().hex[:8]}"
    create_stack(cli, stack, {"LeasesTableName": "gone-leases"})

    by_stack = cli.bare("status", "--stack", stack)
    monkeypatch.setenv("LEASES_TABLE_NAME", "typo-leases")
    by_variable = cli.bare("leases", "orders")

    assert (by_stack.exit_code, by_variable.exit_code) == (1, 1)
    assert one_error_line(by_stack) == (
        f"connlease: error: no leases table 'gone-leases' in {LOCAL_REGION} at"
        f" {cli.endpoint_url} (from stack {stack}'s LeasesTableName output): name it with"
        " --table NAME (or LEASES_TABLE_NAME) or --stack NAME, in its --region"
    )
    assert one_error_line(by_variable) == (
        f"connlease: error: no leases table 'typo-leases' in {LOCAL_REGION} at"
        f" {cli.endpoint_url} (from --table or LEASES_TABLE_NAME): name it with"
        " --table NAME (or LEASES_TABLE_NAME) or --stack NAME, in its --region"
    )
    assert "ResourceNotFoundException" not in by_stack.stderr + by_variable.stderr


# Bad arguments: one line, the exit code scripts rely on, and nothing written.

BAD_USAGE, REFUSED = 2, 1


@dataclass(frozen=True)
class Bad:
    args: tuple[str, ...]
    code: int
    with_table: bool = True
    says: str | tuple[str, ...] = ""  # in the error line: the flag typed, the unit


BAD_ARGUMENTS = {
    "status of an unknown database": Bad(("status", "nope"), REFUSED, says="'nope'"),
    "leases of an unknown database": Bad(("leases", "nope"), REFUSED, says="'nope'"),
    "release in an unknown database": Bad(
        ("release", "nope", "--holder", "api-1", "--yes"), REFUSED, says="'nope'"
    ),
    "release of an unknown holder": Bad(
        ("release", "{db}", "--holder", "ghost", "--yes"), REFUSED, says="ghost"
    ),
    "release of an unknown lease": Bad(
        ("release", "{db}", "--lease", "zz_", "--yes"), REFUSED, says="zz_"
    ),
    "release with --holder and --lease": Bad(
        ("release", "{db}", "--holder", "api-1", "--lease", "abc", "--yes"), BAD_USAGE
    ),
    "release with neither --holder nor --lease": Bad(("release", "{db}", "--yes"), BAD_USAGE),
    "release of a holder that is not printable ASCII": Bad(
        ("release", "{db}", "--holder", "api\u00e9", "--yes"),
        BAD_USAGE,
        says="--holder: must be printable ASCII",
    ),
    "a negative limit": Bad(
        ("set", "{db}", "--limit", "-1", "--yes"),
        BAD_USAGE,
        says="--limit: must be from 1 to 2000 leases, got -1",
    ),
    "a zero limit": Bad(
        ("set", "{db}", "--limit", "0", "--yes"),
        BAD_USAGE,
        says="--limit: must be from 1 to 2000 leases, got 0",
    ),
    "a limit past the most": Bad(
        ("set", "{db}", "--limit", "2001", "--yes"), BAD_USAGE, says="--limit: must be from 1"
    ),
    "a limit that is not a number": Bad(
        ("set", "{db}", "--limit", "ten", "--yes"), BAD_USAGE, says="'--limit'"
    ),
    "reservations above the limit": Bad(
        ("set", "{db}", "--limit", "3", "--reserve", "api=2", "--reserve", "batch=2", "--yes"),
        BAD_USAGE,
        says="--reserve: reservations sum to 4, above the quota's limit of 3",
    ),
    "a limit below the quota's reservations": Bad(
        ("set", "{db}", "--limit", "1", "--yes"),
        BAD_USAGE,
        says="--limit: a limit of 1 is below the 2 leases reserved for groups",
    ),
    "a reservation not written as group=N": Bad(
        ("set", "{db}", "--limit", "5", "--reserve", "api", "--yes"),
        BAD_USAGE,
        says="--reserve: 'api': write group=reserved",
    ),
    "a reservation that is no number": Bad(
        ("set", "{db}", "--reserve", "api=two", "--yes"),
        BAD_USAGE,
        says="--reserve: api.reserved: 'two' is not a whole number",
    ),
    "--reserve with --no-groups": Bad(
        ("set", "{db}", "--limit", "5", "--reserve", "api=1", "--no-groups", "--yes"), BAD_USAGE
    ),
    "a percent over 100": Bad(
        ("set", "{db}", "--percent", "101", *MYSQL, "--yes"),
        BAD_USAGE,
        says="--percent: must be from 1 to 100 (percent of MySQL's max_connections), got 101",
    ),
    "a percent of 0": Bad(
        ("set", "{db}", "--percent", "0", *MYSQL, "--yes"), BAD_USAGE, says="--percent: must"
    ),
    "both --limit and --percent": Bad(
        ("set", "{db}", "--limit", "5", "--percent", "50", *MYSQL, "--yes"),
        BAD_USAGE,
        says=("--limit", "--percent"),
    ),
    "nothing to change": Bad(
        ("set", "{db}", "--yes"),
        BAD_USAGE,
        says=("nothing to change", "--limit", "--percent", "--ttl", "--reserve", "--no-groups"),
    ),
    "--percent without MySQL": Bad(
        ("set", "{db}", "--percent", "50", "--yes"), BAD_USAGE, says="--mysql-host"
    ),
    "--percent with a port that is none": Bad(
        ("set", "{db}", "--percent", "50", *MYSQL[:2], "--mysql-port", "0", "--yes"),
        BAD_USAGE,
        says="--mysql-port: must be from 1 to 65535, got 0",
    ),
    "--percent with a port past 65535": Bad(
        ("set", "{db}", "--percent", "50", *MYSQL[:2], "--mysql-port", "70000", "--yes"),
        BAD_USAGE,
        says="--mysql-port: must be from 1 to 65535, got 70000",
    ),
    "--percent with MySQL not there": Bad(
        ("set", "{db}", "--percent", "50", *MYSQL[:2], "--mysql-port", "9", "--yes"),
        REFUSED,
        says="MySQL",
    ),
    "a --ttl that is no duration": Bad(
        ("set", "{db}", "--limit", "5", "--ttl", "soon", "--yes"),
        BAD_USAGE,
        says="--ttl: 'soon' is no duration; write 900ms, 30s, 5m or 1h",
    ),
    "a --ttl too short": Bad(
        ("set", "{db}", "--limit", "5", "--ttl", "10ms", "--yes"),
        BAD_USAGE,
        says="--ttl: must be at least 100ms, got 10ms",
    ),
    "a --ttl of 0": Bad(
        ("set", "{db}", "--ttl", "0", "--yes"),
        BAD_USAGE,
        says="--ttl: must be at least 100ms, got 0ms",
    ),
    "a --ttl too long": Bad(
        ("set", "{db}", "--ttl", "25h", "--yes"),
        BAD_USAGE,
        says="--ttl: must be at most 24h, got 25h",
    ),
    "set on a database that has no quota": Bad(
        ("set", "nosuch-db", "--limit", "4", "--yes"), REFUSED, says=("'nosuch-db'", "--create")
    ),
    "set --ttl alone on a database that has no quota": Bad(
        ("set", "nosuch-db", "--ttl", "5m", "--yes"), REFUSED, says="--create"
    ),
    "--create without a limit": Bad(
        ("set", "nosuch-db", "--create", "--ttl", "5m", "--yes"),
        BAD_USAGE,
        says="--create: a new quota needs --limit N or --percent P",
    ),
    "a database name no quota may have": Bad(
        ("set", "bad name!", "--limit", "5", "--yes"), BAD_USAGE
    ),
    "a stack without the outputs": Bad(
        ("status", "--stack", "{bare_stack}"), REFUSED, with_table=False, says="LeasesTableName"
    ),
    "a stack that does not exist": Bad(
        ("status", "--stack", "no-such-stack"), REFUSED, with_table=False, says="no-such-stack"
    ),
    "no table given at all": Bad(("status",), BAD_USAGE, with_table=False, says="--table"),
    "a table that does not exist": Bad(
        ("status", "--table", "no-such-table"),
        REFUSED,
        with_table=False,
        says=("no leases table 'no-such-table' in us-east-1 at http://", "--table NAME"),
    ),
    "a table that does not exist, to set": Bad(
        ("set", "{db}", "--limit", "4", "--yes", "--table", "no-such-table"),
        REFUSED,
        with_table=False,
        says=("'no-such-table'", "LEASES_TABLE_NAME", "--stack NAME"),
    ),
    "an unknown AWS profile": Bad(("status", "--profile", "no-such-profile"), BAD_USAGE),
    "an unknown option": Bad(("status", "--colour"), BAD_USAGE),
    "a missing database": Bad(("leases",), BAD_USAGE),
    "an unknown command": Bad(("drain", "{db}"), BAD_USAGE),
}


@pytest.mark.parametrize("bad", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_a_bad_argument_is_one_line_an_exit_code_and_no_write(
    cli: Cli, store: DynamoDBLeaseStore, db: str, bad: Bad
) -> None:
    store.set_quota(db, Quota(limit=5, default_ttl_ms=TTL), [Reservation("api", 2)])
    grant(store, db, "api-1", group="api")
    grant(store, db, "batch-1")
    bare_stack = f"not-connlease-{uuid.uuid4().hex[:8]}"
    create_stack(cli, bare_stack, {"Topic": "arn:aws:sns:us-east-1:1:alarms"})
    args = [arg.format(db=db, bare_stack=bare_stack) for arg in bad.args]
    before = cli.items()

    result = cli.run(*args) if bad.with_table else cli.bare(*args)

    assert result.exit_code == bad.code, (result.exit_code, result.output, result.exception)
    line = one_error_line(result)
    for said in (bad.says,) if isinstance(bad.says, str) else bad.says:
        assert said in line
    assert result.stdout == ""
    assert cli.items() == before
