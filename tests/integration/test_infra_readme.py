"""infra/README.md's walkthrough beside an existing database: its handler runs as written on
the local stack, through the helper and in direct mode, with the environment step 5 names.
(That its connections stay within the quota is test_example.py's: the same function, whose
answers carry their waits; MariaDB's connection count here is the whole server's, which
other clients of a shared server move.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest

from tests.snippets import assert_runs_within_its_quota, python_blocks

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "infra" / "README.md"
SECTION = "## Beside your own database: hook up an existing function"


def walkthrough() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n## ", start + len(SECTION))]


def readme_handler() -> str:
    (code,) = (block for block in python_blocks(walkthrough()) if "def handler" in block)
    return code


def test_the_walkthrough_names_the_environment_its_handler_reads() -> None:
    code = readme_handler()
    read = set(re.findall(r'os\.environ(?:\.get\(|\[)"([A-Z_]+)"', code))
    assert {"QUOTA_DATABASE", "HELPER_FUNCTION", "LEASES_TABLE_NAME"} <= read
    # Step 5's table names what the client reads; the DB_* ones are the function's own.
    for variable in ("QUOTA_DATABASE", "HELPER_FUNCTION", "LEASES_TABLE_NAME"):
        assert f"| `{variable}` |" in walkthrough(), variable
    assert read - {"QUOTA_DATABASE", "HELPER_FUNCTION", "LEASES_TABLE_NAME"} == {
        "DB_HOST",
        "DB_PORT",
        "DB_USER",
        "DB_PASSWORD",
        "DB_NAME",
    }


@pytest.mark.parametrize("mode", ["lambda", "direct"])
def test_the_walkthroughs_handler_runs_as_written_within_its_quota(
    tmp_path: Path, mode: Literal["lambda", "direct"]
) -> None:
    assert_runs_within_its_quota(readme_handler(), tmp_path, mode)
