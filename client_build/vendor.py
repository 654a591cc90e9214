"""The client's import closure, vendored under `connlease_client._core`.

`Closure.of(root)` follows every import of the package `connlease_client` (at module
level, inside functions and under TYPE_CHECKING alike) through the repository's own
packages: the modules it reaches are what the client runs on, computed from the imports,
never listed by hand. It refuses, each time with the chain of imports that led there:

- the local stack (`local/`) and the operator's command line (`cli/`);
- the modules the template runs as Lambda handlers (`Handler:` in infra/template.yaml):
  the helper, the demo functions and the seeder, with Powertools and their settings;
- a third-party module imported at run time that is not in REQUIREMENTS (Powertools,
  pydantic, anything): the wheel's `Requires-Dist` is the REQUIREMENTS the closure does
  import, so a new dependency is a decision, not an accident;
- a plain `import domain.x` of a vendored package (only from-imports are rewritten: a
  rewritten plain import would bind another name) and an `import_module("domain.x")`,
  which no rewrite can see.

`vendored_source` then rewrites the absolute imports of the vendored packages (`domain`,
`adapters`, `service`) to `connlease_client._core.<package>`, as pip's vendoring rewrites
its dependencies' imports: relative imports and those of `connlease_client` itself stay as
they are, and everything else in a module is left byte for byte.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "connlease_client"
CORE = f"{PACKAGE}._core"
# The repository's top-level packages the client may run on; they go under CORE.
VENDORED = frozenset({"domain", "adapters", "service"})
FIRST_PARTY = VENDORED | {PACKAGE}
NEVER = {"local": "the local stack", "cli": "the operator's command line"}
TEMPLATE = Path("infra", "template.yaml")

# The third-party modules the client may import at run time, by import name: the
# requirement each becomes, and the extra it is under (None: always required).
REQUIREMENTS: dict[str, tuple[str, str | None]] = {
    # The AWS SDK's core (the client makes botocore clients; boto3 would add s3transfer
    # and its resources to every cold start). In every Lambda Python runtime, with boto3.
    "botocore": ("botocore>=1.34", None),
    # Only to bound a pymysql connection by its lease: service.lease_bound loads it for a
    # connection of pymysql's alone, so a function that connects with pymysql has it.
    "pymysql": ("pymysql>=1.1", "mysql"),
}


class ClosureError(Exception):
    """What keeps the client from being built, every problem found at once."""

    def __init__(self, problems: list[str]) -> None:
        listed = "\n".join(f"- {problem}" for problem in problems)
        super().__init__(f"the client cannot be built:\n{listed}")
        self.problems = problems


@dataclass(frozen=True)
class Import:
    module: str  # absolute
    names: tuple[str, ...]  # a from-import's names, which may be submodules
    runtime: bool  # False under `if TYPE_CHECKING:`
    plain: bool  # `import x` rather than `from x import y`


def module_name(root: Path, path: Path) -> str:
    """The dotted name of the module (or package, by its __init__.py) at `path`."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def source_of(root: Path, module: str) -> Path | None:
    path = root.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imports_of(module: str, path: Path, tree: ast.Module) -> list[Import]:
    """Every import in the module, wherever it is, with whether it runs."""
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(nodes: Iterable[ast.AST], runtime: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.body, False)
                visit(node.orelse, runtime)
                continue
            if isinstance(node, ast.Import):
                found.extend(Import(alias.name, (), runtime, True) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names = tuple(alias.name for alias in node.names)
                target = _absolute(module, is_package, node)
                found.append(Import(target, names, runtime, False))
            visit(ast.iter_child_nodes(node), runtime)

    visit(tree.body, True)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def template_handlers(root: Path) -> frozenset[str]:
    """The modules the template runs as handlers (`Handler: service.helper.handler`)."""
    text = (root / TEMPLATE).read_text()
    handlers = re.findall(r"^\s*Handler:\s*([\w.]+)\s*$", text, flags=re.MULTILINE)
    if not handlers:
        raise ClosureError([f"{TEMPLATE} names no Handler: the build refuses handlers by it"])
    return frozenset(handler.rpartition(".")[0] for handler in handlers)


@dataclass(frozen=True)
class Closure:
    root: Path
    modules: dict[str, Path]  # every first-party module the client runs on, by name
    third_party: dict[str, str]  # each third-party module imported at run time: by whom

    @classmethod
    def of(cls, root: Path, handlers: frozenset[str] | None = None) -> Closure:
        root = root.resolve()
        refused = template_handlers(root) if handlers is None else handlers
        via: dict[str, str | None] = {}  # each module reached: the first module importing it
        queue: deque[str] = deque()
        problems: list[str] = []

        def reach(module: str, importer: str | None) -> None:
            if module not in via:
                via[module] = importer
                queue.append(module)

        def chain(module: str) -> str:
            names: list[str] = []
            at: str | None = module
            while at is not None:
                names.append(at)
                at = via[at]
            return " -> ".join(reversed(names))

        if (root / PACKAGE / "_core").exists():
            problems.append(f"{PACKAGE}/_core is the build's: the repository must not have one")
        for own in sorted((root / PACKAGE).rglob("*.py")):
            reach(module_name(root, own), None)
        modules: dict[str, Path] = {}
        third_party: dict[str, str] = {}
        while queue:
            name = queue.popleft()
            path = source_of(root, name)
            assert path is not None  # only modules that exist are reached
            modules[name] = path
            tree = ast.parse(path.read_text(), filename=str(path))
            for package in _packages_of(name):
                reach(package, name)  # a module's packages run before it
            for found in imports_of(name, path, tree):
                problems += _check(root, name, found, refused, chain, reach, third_party)
            problems += [f"{chain(name)}: {problem}" for problem in _dynamic_imports(tree)]
        if problems:
            raise ClosureError(problems)
        return cls(root, modules, third_party)

    def requires(self) -> list[str]:
        """The wheel's Requires-Dist: what the closure imports, extras marked."""
        lines = []
        for name in sorted(self.third_party):
            requirement, extra = REQUIREMENTS[name]
            lines.append(requirement if extra is None else f'{requirement}; extra == "{extra}"')
        return lines

    def extras(self) -> list[str]:
        return sorted({REQUIREMENTS[name][1] or "" for name in self.third_party} - {""})

    def files(self) -> Iterator[tuple[str, str]]:
        """Each module's path in the wheel and its source, imports rewritten."""
        for name, path in sorted(self.modules.items()):
            relative = path.relative_to(self.root).as_posix()
            if name.split(".")[0] != PACKAGE:
                relative = f"{CORE.replace('.', '/')}/{relative}"
            yield relative, vendored_source(path.read_text(), str(path))


def _packages_of(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def _check(  # noqa: PLR0917 - the walk's state, passed down
    root: Path,
    name: str,
    found: Import,
    refused: frozenset[str],
    chain: Callable[[str], str],
    reach: Callable[[str, str | None], None],
    third_party: dict[str, str],
) -> list[str]:
    """The problems with one import of `name`; reaches what it imports of the repository."""
    top = found.module.split(".")[0]
    if top in NEVER:
        return [f"{chain(name)} -> {found.module}: {NEVER[top]} is no part of the client"]
    if top not in FIRST_PARTY:
        if top == "__future__" or top in sys.stdlib_module_names or not found.runtime:
            return []  # type-only imports (the SDK's stubs) need nothing at run time
        if top not in REQUIREMENTS:
            return [
                f"{chain(name)} -> {found.module}: not a dependency of the client "
                f"(client_build/vendor.py REQUIREMENTS names those it may have)"
            ]
        third_party.setdefault(top, name)
        return []
    if found.plain and top in VENDORED:
        return [
            f"{chain(name)}: `import {found.module}` cannot be vendored; write it as a from-import"
        ]
    problems = []
    submodules = [f"{found.module}.{each}" for each in found.names]
    for target in [found.module, *(each for each in submodules if source_of(root, each))]:
        if source_of(root, target) is None:
            problems.append(f"{chain(name)} -> {target}: no module of the repository")
        elif target in refused:
            problems.append(f"{chain(name)} -> {target}: a Lambda handler ({TEMPLATE})")
        else:
            reach(target, name)
    return problems


def _dynamic_imports(tree: ast.Module) -> list[str]:
    problems = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        called = node.func
        name = called.id if isinstance(called, ast.Name) else getattr(called, "attr", "")
        first = node.args[0]
        if (
            name in {"import_module", "__import__"}
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and first.value.split(".")[0] in FIRST_PARTY
        ):
            problems.append(f"line {node.lineno}: {name}({first.value!r}) cannot be vendored")
    return problems


def vendored_source(source: str, filename: str = "<source>") -> str:
    """`source` with each from-import of a vendored package made one of CORE's."""
    tree = ast.parse(source, filename=filename)
    lines = source.encode().splitlines(keepends=True)
    edits: list[tuple[int, int, int, bytes]] = []  # line, start, end (bytes), replacement
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
            continue
        if node.module.split(".")[0] not in VENDORED:
            continue
        statement = re.compile(rb"from\s+(" + re.escape(node.module.encode()) + rb")(?![\w.])")
        found = statement.match(lines[node.lineno - 1], node.col_offset)
        if found is None:  # the module's name is split over lines: not as ruff writes it
            raise ClosureError([f"{filename}:{node.lineno}: cannot rewrite this import"])
        start, end = found.span(1)
        edits.append((node.lineno - 1, start, end, f"{CORE}.{node.module}".encode()))
    for index, start, end, replacement in sorted(edits, reverse=True):
        lines[index] = lines[index][:start] + replacement + lines[index][end:]
    rewritten = b"".join(lines).decode()
    left = [
        node.lineno
        for node in ast.walk(ast.parse(rewritten))
        if isinstance(node, ast.ImportFrom)
        and node.level == 0
        and (node.module or "").split(".")[0] in VENDORED
    ]
    if left:  # never, unless the rewrite above is wrong
        raise ClosureError([f"{filename}: imports left unrewritten at lines {left}"])
    return rewritten
