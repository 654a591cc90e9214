"""The checks CI runs on the deployable side: cfn-lint (with the SAM transform) and checkov
on infra/template.yaml, bandit on the code, and the template's DynamoDB grants against the
calls the helper and the seeder really make (on the embedded DynamoDB).

cfn-lint and checkov live in their own virtualenv (checkov pins boto3 and packaging, and
the SAM translator pins pydantic, to versions the project does not use): `.venv/infra`,
made by `make infra-tools`, or the bin folder named by CONNLEASE_INFRA_BIN. Nothing here
touches the network.
"""

from __future__ import annotations

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
from tests.unit.test_template import TEMPLATE, Stack, grants, load_template

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
PACKAGES = ("domain", "adapters", "service", "local")


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
    """The DynamoDB operations a client makes, as (IAM action, table name)."""

    def __init__(self) -> None:
        self.made: set[tuple[str, str]] = set()

    def watch(self, client: DynamoDBClient) -> DynamoDBClient:
        client.meta.events.register("before-parameter-build.dynamodb", self._on_call)
        return client

    def _on_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.made.add((f"dynamodb:{model.name}", params["TableName"]))


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
    )
    yield build_helper(settings, metrics), calls
    metrics.clear_metrics()


def in_template_terms(
    stack: Stack, tables: dict[str, str], made: set[tuple[str, str]]
) -> set[tuple[str, str]]:
    arns = {name: stack._attribute(logical, "Arn") for logical, name in tables.items()}
    return {(action, arns[table]) for action, table in made}


@pytest.mark.integration
def test_the_helper_calls_only_what_the_template_grants_it(
    watched_helper: tuple[Helper, Calls], tables: dict[str, str], dynamodb_client: DynamoDBClient
) -> None:
    app, calls = watched_helper
    DynamoDBLeaseStore(dynamodb_client, tables["LeasesTable"], SystemClock()).set_quota(
        "orders-mysql", Quota(limit=1, default_ttl_ms=30_000)
    )
    context = FakeContext(FakeClock())

    def ask(**event: Any) -> dict[str, Any]:
        return respond({"database": "orders-mysql"} | event, context, app)

    held = ask(action="acquire", ttl_ms=100)["lease"]["id"]
    assert ask(action="acquire")["outcome"] == "no_capacity"
    time.sleep(0.2)
    taken = ask(action="acquire", ttl_ms=30_000)  # reclaims the expired lease
    assert [lease["id"] for lease in taken["reclaimed"]] == [held]
    lease = taken["lease"]["id"]
    assert ask(action="renew", lease_id=lease, renewal=1)["outcome"] == "renewed"
    assert ask(action="renew", lease_id=lease, renewal=1)["outcome"] == "renewed"  # replayed
    assert ask(action="renew", lease_id=held, renewal=1)["outcome"] == "lost"
    assert ask(action="status")["in_use"] == 1
    assert ask(action="release", lease_id=lease)["outcome"] == "released"
    assert ask(action="release", lease_id=lease)["outcome"] == "released"  # replayed
    failed = ask(action="release", lease_id=lease, database="inventory-mysql")
    assert failed["error"]["type"] == "UnknownDatabase"  # the in-progress record is deleted

    stack = Stack(load_template())
    made = in_template_terms(stack, tables, calls.made)
    granted = grants(stack.statements(stack.resources["HelperFunction"]))
    assert made <= granted, sorted(made - granted)
    # Powertools reads a record with GetItem only when a refused write returns none, and
    # DynamoDB returns it; every other grant is used.
    unused = granted - made
    assert unused <= {("dynamodb:GetItem", stack._attribute("IdempotencyTable", "Arn"))}


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

    stack = Stack(load_template())
    made = in_template_terms(stack, tables, calls.made)
    granted = grants(stack.statements(stack.resources["SeederFunction"]))
    assert made <= granted, sorted(made - granted)
