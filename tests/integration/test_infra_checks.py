"""The checks CI runs on the deployable side: cfn-lint (with the SAM transform) and checkov
on infra/template.yaml, bandit on the code, and the template's DynamoDB grants against the
calls the helper and the seeder really make (on the embedded DynamoDB).

cfn-lint and checkov live in their own virtualenv (checkov pins boto3 and packaging, and
the SAM translator pins pydantic, to versions the project does not use): `.venv/infra`,
made by `make infra-tools`, or the bin folder named by CONNLEASE_INFRA_BIN. Nothing here
touches the network.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from adapters.clock import SystemClock
from adapters.dynamodb import DynamoDBLeaseStore, create_table
from domain import Quota
from domain.model import SKEW_MARGIN_MS
from local.dynamodb import (
    LOCAL_ACCESS_KEY,
    LOCAL_REGION,
    LOCAL_SECRET_KEY,
    EmbeddedDynamoDB,
    create_idempotency_table,
)
from service import bootstrap
from service.bootstrap import build_helper
from service.helper import metrics, respond
from service.settings import HelperSettings
from tests.fakes import FakeClock, FakeContext
from tests.unit.test_template import TEMPLATE, Stack, as_list, grants, load_template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from service.bootstrap import Helper

ROOT = TEMPLATE.parents[1]
INFRA_BIN = Path(os.environ.get("CONNLEASE_INFRA_BIN", ROOT / ".venv" / "infra" / "bin"))
# Regions whose engine versions and zones cfn-lint checks the template against.
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"]
# The checkov checks the template skips, each with its reason beside it in the template.
# A new skip is a decision: add it here in the same change.
SKIPPED_CHECKS = {
    "CKV_AWS_115",  # reserved concurrency
    "CKV_AWS_116",  # dead-letter queues
    "CKV_AWS_119",  # DynamoDB with a customer managed key
    "CKV_AWS_149",  # Secrets Manager secret with a customer managed key
    "CKV_AWS_157",  # RDS Multi-AZ (a parameter)
    "CKV_AWS_158",  # log groups with a customer managed key
    "CKV_AWS_161",  # RDS IAM authentication
    "CKV_AWS_173",  # Lambda environment with a customer managed key
}


def tool(name: str) -> str:
    path = INFRA_BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: `make infra-tools` installs cfn-lint and checkov there")
    return str(path)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_cfn_lint_finds_no_error_or_warning_in_the_template() -> None:
    result = run(tool("cfn-lint"), "--regions", *REGIONS, "--", str(TEMPLATE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_checkov_fails_no_check_and_every_skip_says_why() -> None:
    result = run(
        tool("checkov"),
        "--file",
        str(TEMPLATE),
        "--framework",
        "cloudformation",
        "--skip-download",  # no call home: offline, and no guidelines fetched
        "--output",
        "json",
        "--soft-fail",  # the assertions below judge, with the findings in the message
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    summary, results = report["summary"], report["results"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]
    ]
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0, result.stdout
    # Every resource was read, so a template checkov could not parse cannot pass quietly.
    assert summary["resource_count"] == len(load_template()["Resources"]), summary
    assert summary["passed"] > 0, summary
    skipped = results["skipped_checks"]
    assert {c["check_id"] for c in skipped} <= SKIPPED_CHECKS, summary
    for check in skipped:
        reason = check.get("check_result", {}).get("suppress_comment") or ""
        assert len(reason) > 40, f"{check['check_id']} on {check['resource']}: {reason!r}"


# What the distribution installs: the Lambda code and the local stack.
PACKAGES = ("domain", "adapters", "service", "connlease_client", "local")


def test_bandit_finds_nothing_of_medium_or_high_severity_in_the_code() -> None:
    result = run(
        sys.executable, "-m", "bandit", "--recursive", *PACKAGES, "-ll", "--format", "json", "-q"
    )
    report = json.loads(result.stdout)
    findings = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_severity']}: "
        f"{r['issue_text']}"
        for r in report["results"]
    ]
    assert not findings, "\n".join(findings)
    assert not report["errors"], report["errors"]
    assert report["metrics"]["_totals"]["loc"] > 1000, "bandit scanned no code"
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ grants vs calls


class Calls:
    """The DynamoDB operations a client makes, as (IAM action, table name), and the
    partition keys each names, as (IAM action, table name, key)."""

    def __init__(self) -> None:
        self.made: set[tuple[str, str]] = set()
        self.keys: set[tuple[str, str, str]] = set()

    def watch(self, client: DynamoDBClient) -> DynamoDBClient:
        client.meta.events.register("before-parameter-build.dynamodb", self._on_call)
        return client

    def _on_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        action = f"dynamodb:{model.name}"
        if "RequestItems" in params:  # BatchGetItem names its tables and keys per table
            requests = {table: r.get("Keys", []) for table, r in params["RequestItems"].items()}
        else:
            requests = {params["TableName"]: [params.get("Key", params.get("Item", {}))]}
        for table, keys in requests.items():
            self.made.add((action, table))
            for key in keys:
                if "pk" in key:  # the leases table's partition key
                    self.keys.add((action, table, key["pk"]["S"]))


@pytest.fixture
def tables(dynamodb_client: DynamoDBClient) -> dict[str, str]:
    """Fresh tables, keyed by their logical ids in the template."""
    names = {
        "LeasesTable": f"leases-{uuid.uuid4().hex[:8]}",
        "IdempotencyTable": f"idempotency-{uuid.uuid4().hex[:8]}",
    }
    create_table(dynamodb_client, names["LeasesTable"])
    create_idempotency_table(dynamodb_client, names["IdempotencyTable"])
    return names


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", LOCAL_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", LOCAL_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", LOCAL_REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


@pytest.fixture
def watched_helper(
    monkeypatch: pytest.MonkeyPatch,
    aws_environment: None,
    embedded_dynamodb: EmbeddedDynamoDB,
    tables: dict[str, str],
) -> Iterator[tuple[Helper, Calls]]:
    calls = Calls()
    unwatched = bootstrap.dynamodb_client
    monkeypatch.setattr(bootstrap, "dynamodb_client", lambda s: calls.watch(unwatched(s)))
    settings = HelperSettings(
        leases_table_name=tables["LeasesTable"],
        idempotency_table_name=tables["IdempotencyTable"],
        dynamodb_endpoint_url=embedded_dynamodb.endpoint_url,
        served_databases=SERVED,  # as the template sets it: the stack's QuotaDatabase
    )
    yield build_helper(settings, metrics), calls
    metrics.clear_metrics()


SERVED = "orders-mysql"


def in_template_terms(
    stack: Stack, tables: dict[str, str], made: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    arns = {name: stack._attribute(logical, "Arn") for logical, name in tables.items()}
    return {(action, arns[table]) for action, table in made}


def leading_keys_allowed(stack: Stack, function: str, action: str, key: str) -> bool:
    """Whether a statement of `function` on the leases table allows `action` on an item
    whose partition key is `key`, its dynamodb:LeadingKeys condition included."""
    leases = stack._attribute("LeasesTable", "Arn")
    for statement in stack.statements(stack.resources[function]):
        if leases not in as_list(statement["Resource"]):
            continue
        if action not in as_list(statement["Action"]):
            continue
        condition = statement.get("Condition")
        if condition is None:
            return True
        (operator,) = condition
        assert operator == "ForAllValues:StringLike", condition
        patterns = as_list(condition[operator]["dynamodb:LeadingKeys"])
        # IAM's StringLike: * and ? are the only wildcards (no [] in a database name).
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            return True
    return False


@pytest.mark.integration
def test_the_helper_calls_only_what_the_template_grants_it(
    watched_helper: tuple[Helper, Calls], tables: dict[str, str], dynamodb_client: DynamoDBClient
) -> None:
    app, calls = watched_helper
    store = DynamoDBLeaseStore(dynamodb_client, tables["LeasesTable"], SystemClock())
    store.set_quota(SERVED, Quota(limit=1, default_ttl_ms=30_000))
    context = FakeContext(FakeClock())

    def ask(**event: Any) -> dict[str, Any]:
        return respond({"database": SERVED} | event, context, app)

    held = ask(action="acquire", ttl_ms=100)["token"]
    assert ask(action="acquire")["outcome"] == "no_capacity"
    time.sleep((100 + SKEW_MARGIN_MS + 100) / 1000)  # past its expiry and the reclaim grace
    taken = ask(action="acquire", ttl_ms=30_000)  # reclaims the expired lease
    assert len(taken["reclaimed"]) == 1
    token = taken["token"]
    assert ask(action="renew", token=token, renewal=1)["outcome"] == "renewed"
    assert ask(action="renew", token=token, renewal=1)["outcome"] == "renewed"  # replayed
    assert ask(action="renew", token=held, renewal=1)["outcome"] == "lost"
    assert ask(action="status")["in_use"] == 1
    assert ask(action="release", token=token)["outcome"] == "released"
    assert ask(action="release", token=token)["outcome"] == "released"  # replayed
    # Another database is refused before any call to DynamoDB.
    other = ask(action="status", database="inventory-mysql")
    assert other["error"]["type"] == "InvalidInput"

    # Split over shard items (what a limit past one item's room does): their keys are
    # <database>#<i>, read together with BatchGetItem.
    store.set_quota(SERVED, Quota(limit=40, default_ttl_ms=30_000))
    split = ask(action="acquire", ttl_ms=30_000)
    assert split["outcome"] == "granted"
    assert ask(action="status")["in_use"] == 1
    assert ask(action="renew", token=split["token"], renewal=1)["outcome"] == "renewed"
    store.delete_quota(SERVED)
    failed = ask(action="release", token=split["token"])
    assert failed["error"]["type"] == "UnknownDatabase"  # the in-progress record is deleted

    stack = Stack(load_template(), {"QuotaDatabase": SERVED})
    made = in_template_terms(stack, tables, calls.made)
    granted = grants(stack.statements(stack.resources["HelperFunction"]))
    assert made <= granted, sorted(made - granted)
    # Powertools reads a record with GetItem only when a refused write returns none, and
    # DynamoDB returns it; every other grant is used.
    unused = granted - made
    assert unused <= {("dynamodb:GetItem", stack._attribute("IdempotencyTable", "Arn"))}
    # Every item it touched is one the template's dynamodb:LeadingKeys condition allows.
    on_leases = {(a, key) for a, table, key in calls.keys if table == tables["LeasesTable"]}
    assert {key for _, key in on_leases} >= {SERVED, f"{SERVED}#0"}
    denied = [
        (action, key)
        for action, key in on_leases
        if not leading_keys_allowed(stack, "HelperFunction", action, key)
    ]
    assert not denied, denied
    # And no other database's item would be.
    for action, _ in on_leases:
        assert not leading_keys_allowed(stack, "HelperFunction", action, "inventory-mysql")
        assert not leading_keys_allowed(stack, "HelperFunction", action, f"{SERVED}2")


@pytest.mark.integration
def test_the_seeder_calls_only_what_the_template_grants_it(
    aws_environment: None, dynamodb_client: DynamoDBClient, tables: dict[str, str]
) -> None:
    calls = Calls()
    store = DynamoDBLeaseStore(calls.watch(dynamodb_client), tables["LeasesTable"], SystemClock())

    store.set_quota("orders-mysql", Quota(limit=4, default_ttl_ms=30_000))  # Create
    store.set_quota("orders-mysql", Quota(limit=5, default_ttl_ms=30_000))  # Update
    assert store.delete_quota("orders-mysql")  # Delete
    assert not store.delete_quota("orders-mysql")  # Delete again
    # A limit past one item's room: split over shard items, then grown and deleted.
    store.set_quota("orders-mysql", Quota(limit=40, default_ttl_ms=30_000))
    store.set_quota("orders-mysql", Quota(limit=60, default_ttl_ms=30_000))
    assert store.delete_quota("orders-mysql")
    assert ("dynamodb:BatchGetItem", tables["LeasesTable"]) in calls.made

    stack = Stack(load_template())
    made = in_template_terms(stack, tables, calls.made)
    granted = grants(stack.statements(stack.resources["SeederFunction"]))
    assert made <= granted, sorted(made - granted)
