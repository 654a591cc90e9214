"""Cold start: process start to handler ready, the helper next to a minimal handler that
only creates a boto3 DynamoDB client, alternated in one run.

Both load what `sam build` ships, not this checkout and its venv: the function as the
Makefile's build-HelperFunction makes it, on the layer build-DependenciesLayer makes
(pip, from PyPI). Both are built here, for this machine's platform and for the Python
that LAMBDA_PYTHON names (set it to a 3.13, Lambda's version, as for `sam build`), else
the venv's: the recipe is the one that builds Lambda's (3.13, arm64). What matters
is whether a module arrives compiled: Lambda's /var/task and /opt are read-only, so one
shipped as source alone is compiled on every cold start. Side by side:

- shipped: bytecode in the function and in the layer, as the build makes them now;
- the function as source on a compiled layer: what this benchmark measured before it built
  anything (the venv's bytecode, the checkout's source under PYTHONDONTWRITEBYTECODE, as
  this machine sets it), kept to compare with older figures;
- everything as source: what Lambda ran before the build compiled anything (the layer's
  files are the compiled layer's, its bytecode left out, as a build without Lambda's
  Python ships them);
- BASELINE's helper, as source and compiled by the same recipe, on the same layer: the
  same code path before the lease rules were rebuilt in layers (issue 22).

The minimal handler, on the compiled layer, is the yardstick of every ratio. The clock stops
when the process says it is ready, not when it exits: the interpreter's teardown is no part
of a Lambda cold start, and timing it too would credit anything that makes teardown
cheaper."""

from __future__ import annotations

import io
import os
import platform
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELPER = "import service.helper"
MINIMAL = "import boto3; boto3.client('dynamodb')"
# The last commit before the lease rules were rebuilt as composed layers: issue 22 asks
# that the helper start no slower than it did there.
BASELINE = "db40c7a"

SHIPPED = "helper, shipped (function and layer compiled)"
FUNCTION_SOURCE = "helper, function as source, layer compiled"
ALL_SOURCE = "helper, all as source (before the build compiled)"
BASELINE_SOURCE = f"helper at {BASELINE}, function as source, layer compiled"
BASELINE_COMPILED = f"helper at {BASELINE}, compiled by the same build"
MINIMAL_ROW = "minimal (`boto3.client('dynamodb')`), layer compiled"

# What Lambda sets for every function. LAMBDA_TASK_ROOT matters: it is how the X-Ray SDK
# and Powertools know they run in Lambda (without it the SDK builds a sampling client).
LAMBDA_LIKE = {
    "LAMBDA_TASK_ROOT": "/var/task",
    "AWS_LAMBDA_FUNCTION_NAME": "connlease-helper",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "LEASES_TABLE_NAME": "connlease-leases",
    "IDEMPOTENCY_TABLE_NAME": "connlease-idempotency",
}


@dataclass(frozen=True)
class Python:
    """The interpreter the artifacts are built for and started with: Lambda's version where
    LAMBDA_PYTHON names one (the variable the Makefile's build reads), else the venv's own.
    It runs isolated (-I, and -S: no site-packages, so nothing the layer lacks is found
    elsewhere) and writes no bytecode (-B: what is shipped as source stays source)."""

    path: str
    version: str

    @classmethod
    def chosen(cls) -> Python:
        # The venv's interpreter is fine: -S keeps the venv's site-packages off the path.
        path = os.environ.get("LAMBDA_PYTHON") or sys.executable
        said = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        )
        return cls(path, said.stdout.strip())


@dataclass(frozen=True)
class Build:
    """A handler's code as shipped: sys.path entries, the function's first."""

    row: str
    code: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class ColdStart:
    rounds: int
    python: Python
    ms: dict[str, list[float]]  # by row, in the order measured

    def median(self, row: str) -> float:
        return statistics.median(self.ms[row])

    def ratio_of(self, row: str) -> float:
        return self.median(row) / self.median(MINIMAL_ROW)

    @property
    def ratio(self) -> float:
        """The helper as shipped, against the minimal handler."""
        return self.ratio_of(SHIPPED)

    def figures(self) -> dict[str, str]:
        """The ratios the docs quote (local.figures)."""
        quoted = {
            "coldstart.ratio": SHIPPED,
            "coldstart.ratio_function_source": FUNCTION_SOURCE,
            "coldstart.ratio_all_source": ALL_SOURCE,
            "coldstart.baseline_ratio_source": BASELINE_SOURCE,
            "coldstart.baseline_ratio_compiled": BASELINE_COMPILED,
        }
        return {
            name: f"{self.ratio_of(row):.2f}x" for name, row in quoted.items() if row in self.ms
        }

    def lines(self) -> list[str]:
        baseline = BASELINE_SOURCE in self.ms
        lines = [
            "## Cold start",
            "",
            "Process start to handler ready (interpreter, imports, the composition root), "
            f"{self.rounds} runs each, alternated in a new order each round, Lambda-like "
            "environment, each handler "
            "loaded from what `sam build` ships, built here for this machine's Python "
            f"({self.python.version}; Lambda's is 3.13) by the Makefile's recipes "
            "(benchmarks/coldstart.py says how):",
            "",
            "| handler | median ms | min ms | / minimal |",
            "|---|---:|---:|---:|",
            *(
                f"| {row} | {self.median(row):.0f} | {min(times):.0f} | {self.ratio_of(row):.2f}x |"
                for row, times in self.ms.items()
            ),
            "",
            f"Ratio helper / minimal as shipped: **{self.ratio:.2f}x**; with the function as "
            f"source, as this benchmark measured before the build compiled: "
            f"{self.ratio_of(FUNCTION_SOURCE):.2f}x.",
        ]
        if baseline:
            lines += [
                f"At {BASELINE}, side by side: {self.ratio_of(BASELINE_SOURCE):.2f}x as "
                f"source, {self.ratio_of(BASELINE_COMPILED):.2f}x compiled.",
            ]
        else:
            lines += [f"({BASELINE} was not in this checkout's history: its rows are left out.)"]
        return [*lines, ""]


def start_ms(build: Build, python: Python) -> float:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_")}
    environment |= LAMBDA_LIKE
    paths = [str(path) for path in build.paths]
    program = f"import sys; sys.path[:0] = {paths!r}; {build.code}; print('ready', flush=True)"
    command = [python.path, "-I", "-S", "-B", "-c", program]
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryDirectory() as cwd:
        began = time.perf_counter()
        with subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=errors, cwd=cwd
        ) as process:
            assert process.stdout is not None
            said = b""
            while (line := process.stdout.readline()) and line.strip() != b"ready":
                said += line  # anything the handler printed while it started
            ready = time.perf_counter()
            process.stdout.read()
        if process.returncode != 0 or not line:
            errors.seek(0)
            raise subprocess.CalledProcessError(
                process.returncode, command, output=said, stderr=errors.read()
            )
    return (ready - began) * 1000


def make_build(
    target: str, artifacts: Path, python: Python, *, compiled: bool, tree: Path = ROOT
) -> Path:
    """The root Makefile's `target` run in `tree`, as `sam build` runs it, for `python`."""
    packages = [p for p in make_says("LAMBDA_PACKAGES").split() if (tree / p).is_dir()]
    machine = {"arm64": "aarch64"}.get(platform.machine(), platform.machine())  # macOS's name
    variables = [
        f"ARTIFACTS_DIR={artifacts}",
        f"LAMBDA_PACKAGES={' '.join(packages)}",  # BASELINE's tree has no connlease_client
        f"LAMBDA_PYTHON_VERSION={python.version}",
        f"LAMBDA_PYTHON={python.path if compiled else ''}",  # empty: shipped as source
        f"LAYER_PLATFORM=manylinux2014_{machine}",
        f"RDS_CA_BUNDLE={ca_bundle()}",  # any bundle: the layer's is not on the cold path
        f"LAYER_PIP={sys.executable} -m pip",
    ]
    ran = subprocess.run(
        [*make(tree), target, *variables], env=make_environment(), check=True, capture_output=True
    )
    # The Makefile's "no working python" warning only: a layer may also warn of a
    # dependency's file that does not compile, and the rest of it is still compiled.
    shipped_source = b"warning: no working python" in ran.stdout
    if compiled and (shipped_source or not next(artifacts.rglob("*.pyc"), None)):
        raise RuntimeError(f"{target} shipped source where it was to compile: {ran.stdout!r}")
    return artifacts


def make(tree: Path = ROOT) -> list[str]:
    return ["make", "-s", "--no-print-directory", "-C", str(tree), "-f", str(ROOT / "Makefile")]


def make_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}


def make_says(variable: str) -> str:
    """A variable of the root Makefile, as make itself expands it."""
    said = subprocess.run(
        [*make(), "--eval", f"say: ; @echo $({variable})", "say"],
        env=make_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    return said.stdout.strip()


def ca_bundle() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    import certifi  # noqa: PLC0415 - only where the system has no bundle file

    return str(certifi.where())


def baseline_tree(into: Path) -> Path | None:
    """BASELINE's files, from this checkout's git history; None when it is not there."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", BASELINE],
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        return None
    tree = into / "baseline"
    tree.mkdir()
    with tarfile.open(fileobj=io.BytesIO(found.stdout)) as archive:
        archive.extractall(tree, filter="data")
    return tree


def builds(work: Path, python: Python) -> list[Build]:
    """Every row's artifacts, built in `work` for `python`."""

    def build(target: str, into: str, *, compiled: bool, tree: Path = ROOT) -> Path:
        return make_build(target, work / into, python, compiled=compiled, tree=tree)

    layer = build("build-DependenciesLayer", "layer", compiled=True) / "python"
    # The same files without their bytecode: one install, so both layers hold one set of
    # versions.
    source_layer = work / "layer-source"
    shutil.copytree(layer, source_layer, ignore=shutil.ignore_patterns("__pycache__"))
    function = build("build-HelperFunction", "helper", compiled=True)
    function_source = build("build-HelperFunction", "helper-source", compiled=False)
    rows = [
        Build(MINIMAL_ROW, MINIMAL, (layer,)),
        Build(SHIPPED, HELPER, (function, layer)),
        Build(FUNCTION_SOURCE, HELPER, (function_source, layer)),
        Build(ALL_SOURCE, HELPER, (function_source, source_layer)),
    ]
    tree = baseline_tree(work)
    if tree is not None:
        old = build("build-HelperFunction", "old", compiled=False, tree=tree)
        old_compiled = build("build-HelperFunction", "old-compiled", compiled=True, tree=tree)
        rows += [
            Build(BASELINE_SOURCE, HELPER, (old, layer)),
            Build(BASELINE_COMPILED, HELPER, (old_compiled, layer)),
        ]
    return rows


def measure(rounds: int) -> ColdStart:
    python = Python.chosen()
    with tempfile.TemporaryDirectory(prefix="connlease-coldstart-") as work:
        rows = builds(Path(work), python)
        for build in rows:  # the first run of each warms the OS file cache for it
            start_ms(build, python)
        ms: dict[str, list[float]] = {build.row: [] for build in rows}
        for _ in range(rounds):
            # In a new order each round: this machine has slow spells lasting a few starts,
            # and a fixed order would hand them to the same rows round after round.
            for build in random.sample(rows, len(rows)):
                ms[build.row].append(start_ms(build, python))
    return ColdStart(rounds, python, ms)


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    print("\n".join(result.lines()))
