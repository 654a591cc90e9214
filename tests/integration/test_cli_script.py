"""The installed `connlease` console script, run as an operator runs it: a process of its
own, against the embedded DynamoDB, with credentials in its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local.context import LOCAL_REGION
from local.dynamodb import EmbeddedDynamoDB

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "connlease"
COMMANDS = ("status", "leases", "set", "release")


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """The process's environment with the local stack's credentials, and nothing else that
    says where to act (no AWS configuration files of the machine's either)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "DB_"))
        and name not in {"LEASES_TABLE_NAME", "CONNLEASE_STACK"}
    }
    env |= {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": LOCAL_REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    return env


def connlease(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_installed_script_sets_a_quota_and_reads_it_back(
    embedded_dynamodb: EmbeddedDynamoDB,
    leases_table: str,
    environment: dict[str, str],
    tmp_path: Path,
) -> None:
    assert SCRIPT.is_file()
    where = ("--endpoint-url", embedded_dynamodb.endpoint_url, "--table", leases_table)

    empty = connlease("status", "--json", *where, env=environment, cwd=tmp_path)

    assert (empty.returncode, empty.stderr) == (0, "")
    assert json.loads(empty.stdout) == []

    changed = connlease(
        "set", "scripted", "--limit", "4", "--ttl", "45s", "--yes", *where,
        env=environment, cwd=tmp_path,
    )  # fmt: skip

    assert changed.returncode == 0, changed.stderr
    assert "scripted: a new quota of 4" in changed.stdout

    listed = connlease("status", "--json", *where, env=environment, cwd=tmp_path)
    one = connlease("status", "scripted", "--json", *where, env=environment, cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    (document,) = json.loads(listed.stdout)
    assert json.loads(one.stdout) == document
    assert {key: document[key] for key in ("database", "limit", "in_use", "remaining")} == {
        "database": "scripted",
        "limit": 4,
        "in_use": 0,
        "remaining": 4,
    }
    assert (document["default_ttl_ms"], document["expired"], document["oldest"]) == (
        45_000,
        0,
        None,
    )

    unknown = connlease("leases", "nope", *where, env=environment, cwd=tmp_path)

    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr.splitlines() == [
        "connlease: error: no quota for database 'nope' (connlease status lists them)"
    ]


def test_the_script_with_no_arguments_prints_its_usage_and_exits_2(
    environment: dict[str, str], tmp_path: Path
) -> None:
    bare = connlease(env=environment, cwd=tmp_path)

    assert bare.returncode == 2, bare.stderr
    assert "Usage: connlease" in bare.stderr + bare.stdout
    assert "Traceback" not in bare.stderr


def test_the_scripts_help_lists_its_commands(environment: dict[str, str], tmp_path: Path) -> None:
    shown = connlease("--help", env=environment, cwd=tmp_path)

    assert shown.returncode == 0, shown.stderr
    assert "Usage: connlease" in shown.stdout
    listed = shown.stdout.partition("Commands:")[2].split()
    for command in COMMANDS:
        assert command in listed
