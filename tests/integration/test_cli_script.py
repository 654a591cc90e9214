"""The installed `connlease` console script, run as an operator runs it: a process of its
own, against the embedded DynamoDB, with credentials in its environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local.context import LOCAL_REGION
from local.dynamodb import EmbeddedDynamoDB

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "connlease"
COMMANDS = ("status", "leases", "set", "release", "watch", "reconcile")
ROOT = Path(__file__).parents[2]
# What `make cli` installs from: the Makefile and the distribution's sources.
CHECKOUT = ("Makefile", "pyproject.toml", "README.md")
PACKAGES = ("domain", "adapters", "service", "connlease_client", "local", "cli")


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
        "set", "scripted", "--limit", "4", "--ttl", "45s", "--create", "--yes", *where,
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


@pytest.mark.timeout(600)
def test_make_cli_installs_the_script_at_venv_bin_connlease(
    environment: dict[str, str], tmp_path: Path
) -> None:
    """Where README says the script is: `make cli` (or `make dev`) in a checkout puts it at
    .venv/bin/connlease, which runs as it is and, after `source .venv/bin/activate`, as
    `connlease`. A copy of the checkout, so the repository's own .venv is not touched."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in CHECKOUT:
        shutil.copy2(ROOT / name, checkout / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The installed script must run from its own venv, not from this test's import path.
    isolated = {
        name: value
        for name, value in environment.items()
        if name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=checkout,
            env=isolated,
            capture_output=True,
            text=True,
            timeout=540,
            check=False,
        )

    made = run("make", "--no-print-directory", "cli", f"PYTHON={sys.executable}")

    assert made.returncode == 0, made.stdout + made.stderr
    script = checkout / ".venv" / "bin" / "connlease"
    assert script.is_file()
    assert os.access(script, os.X_OK)
    assert (
        "connlease is .venv/bin/connlease: run .venv/bin/connlease --help, or source"
        " .venv/bin/activate first" in made.stdout.splitlines()
    )
    shown = run(".venv/bin/connlease", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "Usage: connlease" in shown.stdout
    activated = run(
        "bash", "-c", "source .venv/bin/activate && command -v connlease && connlease --help"
    )
    assert activated.returncode == 0, activated.stderr
    found, *helped = activated.stdout.splitlines()
    assert Path(found) == script
    assert "Usage: connlease" in "\n".join(helped)
    again = run("make", "--no-print-directory", "cli", f"PYTHON={sys.executable}")
    assert again.returncode == 0, again.stderr
    assert "pip" not in again.stdout  # installed once: a second `make cli` only says where
