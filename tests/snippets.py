"""A handler a doc shows, run as written on the local stack (README.md, infra/README.md)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Literal

from local.run import RunOptions, run_function


def python_blocks(text: str) -> list[str]:
    return [str(block) for block in re.findall(r"```python\n(.*?)```", text, re.S)]


def assert_runs_within_its_quota(
    code: str, tmp_path: Path, mode: Literal["lambda", "direct"]
) -> None:
    """Eight invocations, four at once, on a quota of two: the handler answers every one
    with its own connection, the others having waited for a lease rather than failing."""
    code_dir = tmp_path / "function"
    code_dir.mkdir()
    (code_dir / "handler.py").write_text(code)
    options = RunOptions(
        handler="handler.handler",
        code_dir=code_dir,
        event={},
        invocations=8,
        concurrency=4,
        quota=2,
        log_dir=tmp_path / "logs",
    )

    report = run_function(replace(options, mode=mode))

    assert report.function_errors == []
    assert [answer["statusCode"] for answer in report.answers] == [200] * 8
    assert len({answer["connection_id"] for answer in report.answers}) == 8
    assert report.quota_after.in_use == 0
