"""The domain imports only itself and the standard library, and has no hidden clock or env."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import domain

DOMAIN_DIR = Path(domain.__file__).parent
DOMAIN_FILES = sorted(DOMAIN_DIR.rglob("*.py"))
# Time and environment must come in through the ports (Clock) and explicit arguments.
FORBIDDEN_MODULES = frozenset({"os", "time", "datetime"})


def imported_modules(node: ast.AST) -> list[tuple[int, str]]:
    """The absolute modules `node` imports, with its line; relative imports stay in-package."""
    if isinstance(node, ast.Import):
        return [(node.lineno, alias.name) for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return [(node.lineno, node.module or "")]
    return []


def impurities(source: str, filename: str) -> list[str]:
    """Every import or reference in `source` that would make the domain impure."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            problems.append(f"{filename}:{node.lineno} references os.environ")
        for line, module in imported_modules(node):
            top = module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                problems.append(
                    f"{filename}:{line} imports {module!r}: no clock or env in the domain"
                )
            elif top not in sys.stdlib_module_names:
                problems.append(
                    f"{filename}:{line} imports {module!r}, "
                    "which is neither relative nor the standard library"
                )
    return problems


def test_the_domain_package_has_the_modules_this_check_is_meant_to_cover() -> None:
    names = {path.name for path in DOMAIN_FILES}
    assert {"model.py", "decisions.py", "backoff.py", "ports.py", "services.py"} <= names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda path: path.name)
def test_each_domain_module_imports_only_relative_or_standard_library_modules(
    path: Path,
) -> None:
    problems = impurities(path.read_text(encoding="utf-8"), str(path.relative_to(DOMAIN_DIR)))
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\n", "imports 'os'"),
        ("import time\n", "imports 'time'"),
        ("from datetime import datetime\n", "imports 'datetime'"),
        ("import os.path\n", "imports 'os.path'"),
        ("import boto3\n", "imports 'boto3', which is neither"),
        ("from adapters import memory\n", "imports 'adapters'"),
        ("x = os.environ['TABLE']\n", "references os.environ"),
    ],
)
def test_the_check_names_the_file_and_the_offending_import(source: str, expected: str) -> None:
    problems = impurities(source, "bad.py")

    assert len(problems) == 1, problems
    assert problems[0].startswith("bad.py:1 ")
    assert expected in problems[0]


def test_the_check_accepts_relative_and_standard_library_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "import random\n"
        "from collections.abc import Iterator\n"
        "from .errors import InvalidInput\n"
        "from . import model\n"
    )

    assert impurities(source, "good.py") == []
