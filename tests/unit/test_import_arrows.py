"""The packages' arrows point inwards: adapters import neither the Lambda side (service) nor
the local stand-ins (local), the helper's answers (connlease_client.contract) need only the
domain and the standard library, and no package outside the domain has an import circle.
Every import counts, those under TYPE_CHECKING and inside functions included."""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# adapters/memory.py still meters with the local capacity model; the store rewrite
# (issue 22) takes the simulator out of it, and this exception with it.
ADAPTERS_MAY_IMPORT = {("adapters.memory", "local.capacity_model")}


def modules(package: str) -> dict[str, Path]:
    """Every module of `package` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The absolute modules (and `from` names, which may be modules) that `path` imports."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def allowed(name: str, imported: str) -> bool:
    return any(
        name == importer and (imported == module or imported.startswith(f"{module}."))
        for importer, module in ADAPTERS_MAY_IMPORT
    )


def test_adapters_import_neither_the_service_nor_the_local_stand_ins() -> None:
    wrong = sorted(
        (name, imported)
        for name, path in modules("adapters").items()
        for imported in imports(name, path)
        if top(imported) in {"service", "local"} and not allowed(name, imported)
    )
    assert wrong == []


def test_the_helpers_answers_need_only_the_domain_and_the_standard_library() -> None:
    # A caller reads them: no pydantic (the helper's requests are validated with it, in
    # service/helper_requests.py), so that the client installs with botocore alone.
    allowed = {"connlease_client", "domain", "__future__", *sys.stdlib_module_names}
    path = ROOT / "connlease_client" / "contract.py"
    wrong = sorted(
        imported
        for imported in imports("connlease_client.contract", path)
        if top(imported) not in allowed
    )
    assert wrong == []


@pytest.mark.parametrize(
    "package", ["adapters", "service", "connlease_client", "local", "cli", "benchmarks"]
)
def test_no_import_circle_in(package: str) -> None:
    found = modules(package)
    graph = {
        name: {m for m in imports(name, path) if m in found and m not in {name, package}}
        for name, path in found.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")
