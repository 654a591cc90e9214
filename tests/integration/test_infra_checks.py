"""The checks CI runs on the deployable side: cfn-lint (with the SAM transform) and checkov
on infra/template.yaml in both its modes (the demo stack, and beside an existing database),
`sam validate --lint` where the SAM CLI is installed, bandit on the code, and the
template's DynamoDB grants against the calls the helper, the seeder and the client library
in direct mode really make (on the embedded DynamoDB).

cfn-lint and checkov live in their own virtualenv (checkov pins boto3 and packaging, and
the SAM translator pins pydantic, to versions the project does not use): `.venv/infra`,
made by `make infra-tools`, or the bin folder named by CONNLEASE_INFRA_BIN. The SAM CLI is
not installed by the project (it is large, and cfn-lint with the SAM translator is what
`sam validate --lint` runs): the test finds it as CONNLEASE_SAM, in that bin folder or on
the PATH, and is skipped without it. Nothing here touches the network.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
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
from domain.groups import Reservation
from domain.model import SKEW_MARGIN_MS
from local.context import LOCAL_REGION
from local.dynamodb import (
    LOCAL_ACCESS_KEY,
    LOCAL_SECRET_KEY,
    EmbeddedDynamoDB,
    create_idempotency_table,
)
from service import bootstrap
from service.bootstrap import build_helper
from service.client import ConnectionLeases, direct_leases
from service.helper import metrics, respond
from service.settings import HelperSettings
from tests.fakes import FakeClock, FakeContext
from tests.unit.test_template import (
    EXISTING_DATABASE,
    MODES,
    TEMPLATE,
    Stack,
    as_list,
    grants,
    load_template,
)

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


def rendered(mode: str, directory: Path, *, only_its_resources: bool = False) -> Path:
    """The template as the tools should see it in `mode`: the file itself for the demo
    stack (its defaults), and for a stack beside an existing database the same template
    with MODES' example values as its defaults (JSON, as load_template reads it), so that
    every tool checks what that deploy would resolve. `only_its_resources`: without the
    resources and outputs whose Condition is false there, for a tool that does not
    evaluate conditions (checkov checks every resource it finds)."""
    if mode == "demo":
        return TEMPLATE
    template = load_template()
    for name, value in MODES[mode].items():
        parameter = template["Parameters"][name]
        parameter["Default"] = int(value) if parameter["Type"] == "Number" else value
    if only_its_resources:
        stack = Stack(template)
        template["Resources"] = stack.resources
        template["Outputs"] = {
            name: output
            for name, output in template["Outputs"].items()
            if "Condition" not in output or stack.condition(output["Condition"])
        }
    path = directory / f"template-{mode}{'-only' if only_its_resources else ''}.json"
    path.write_text(json.dumps(template, indent=1))
    return path


def test_the_rendered_existing_database_template_is_the_template_with_other_defaults(
    tmp_path: Path,
) -> None:
    copy = json.loads(rendered("existing", tmp_path).read_text())
    assert copy["Resources"] == load_template()["Resources"]
    stack = Stack(copy)
    assert not stack.condition("CreatesDatabase")
    endpoint = EXISTING_DATABASE["ExistingDatabaseEndpoint"]
    assert stack.parameter("ExistingDatabaseEndpoint") == endpoint
    only = json.loads(rendered("existing", tmp_path, only_its_resources=True).read_text())
    assert only["Resources"] == Stack(load_template(), EXISTING_DATABASE).resources
    assert "Database" not in only["Resources"]


@pytest.mark.parametrize("mode", list(MODES))
def test_cfn_lint_finds_no_error_or_warning_in_the_template(mode: str, tmp_path: Path) -> None:
    result = run(tool("cfn-lint"), "--regions", *REGIONS, "--", str(rendered(mode, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def sam_cli() -> str | None:
    for candidate in (os.environ.get("CONNLEASE_SAM"), str(INFRA_BIN / "sam"), shutil.which("sam")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.mark.parametrize("mode", list(MODES))
def test_sam_validate_lint_passes_where_the_sam_cli_is_installed(mode: str, tmp_path: Path) -> None:
    sam = sam_cli()
    if sam is None:
        pytest.skip("no SAM CLI (CONNLEASE_SAM, .venv/infra/bin/sam or sam on the PATH)")
    template = rendered(mode, tmp_path)
    result = subprocess.run(
        [sam, "validate", "--lint", "--template-file", str(template)],
        cwd=tmp_path,  # no samconfig.toml of the repository's
        env=os.environ | {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": REGIONS[0]},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


@pytest.mark.parametrize("mode", list(MODES))
def test_checkov_fails_no_check_and_every_skip_says_why(mode: str, tmp_path: Path) -> None:
    result = run(
        tool("checkov"),
        "--file",
        str(rendered(mode, tmp_path, only_its_resources=True)),
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
    assert summary["resource_count"] == len(Stack(load_template(), MODES[mode]).resources)
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


class _Connection:
    """What the client opens and closes in place of MySQL: no server is needed here."""

    def close(self) -> None:
        pass


@pytest.mark.integration
@pytest.mark.parametrize("mode", list(MODES))
def test_the_client_in_direct_mode_calls_only_what_the_direct_leases_policy_grants(
    aws_environment: None, dynamodb_client: DynamoDBClient, tables: dict[str, str], mode: str
) -> None:
    # Your function with DirectLeasesPolicy attached, as infra/README.md hooks it up: the
    # client library on the leases table in-process, on a quota split over shards with a
    # group's reservation, so every kind of item it touches is touched.
    admin = DynamoDBLeaseStore(dynamodb_client, tables["LeasesTable"], SystemClock())
    admin.set_quota(SERVED, Quota(limit=40, default_ttl_ms=30_000), [Reservation("orders-fn", 2)])
    calls = Calls()
    store = direct_leases(tables["LeasesTable"], calls.watch(dynamodb_client))
    for group in ("orders-fn", "reports-fn"):  # its reservation, and the unreserved pool
        leases = ConnectionLeases(store, SERVED, group=group)
        with leases.connect(_Connection, wait_budget_ms=0, ttl_ms=30_000):
            pass
        assert store.status(SERVED).in_use == 0
    stack = Stack(load_template(), MODES[mode] | {"QuotaDatabase": SERVED})
    made = in_template_terms(stack, tables, calls.made)
    granted = grants(stack.statements(stack.resources["DirectLeasesPolicy"]))
    assert made <= granted, sorted(made - granted)
    on_leases = {(a, key) for a, table, key in calls.keys if table == tables["LeasesTable"]}
    assert {key for _, key in on_leases} > {SERVED}  # shards or shares too
    denied = [
        (action, key)
        for action, key in on_leases
        if not leading_keys_allowed(stack, "DirectLeasesPolicy", action, key)
    ]
    assert not denied, denied
