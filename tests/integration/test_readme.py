"""README's snippet runs as written on the local stack, through the helper and in direct
mode, and README stays a five-minute read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from tests.snippets import assert_runs_within_its_quota, python_blocks

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "README.md"


def test_readme_is_short_and_its_only_python_is_a_whole_function() -> None:
    assert len(README.read_text().splitlines()) <= 220
    (snippet,) = python_blocks(README.read_text())
    assert "def handler(event, context)" in snippet


@pytest.mark.parametrize("mode", ["lambda", "direct"])
def test_the_readme_function_runs_as_written_and_waits_rather_than_fails(
    tmp_path: Path, mode: Literal["lambda", "direct"]
) -> None:
    (snippet,) = python_blocks(README.read_text())

    assert_runs_within_its_quota(snippet, tmp_path, mode)
