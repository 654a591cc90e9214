"""What `sam build` ships arrives compiled for Lambda's Python (the root Makefile's
compile_for_lambda): Lambda's /var/task and /opt are read-only, so a module shipped as
source alone is compiled on every cold start and the result thrown away.

Lambda's Python (LAMBDA_PYTHON_VERSION, 3.13) is not the one running these tests, so each
test builds for this interpreter, as a build machine with Lambda's Python on PATH does
(`make bench`'s cold start measures the difference). No network: the layer's pip install
is a stand-in that writes a package where pip would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.coldstart import LAMBDA_LIKE
from tests.unit.test_layer_build import certificate_authority, make, our_lines

THIS_PYTHON = [
    f"LAMBDA_PYTHON={sys.executable}",
    f"LAMBDA_PYTHON_VERSION={sys.version_info.major}.{sys.version_info.minor}",
]
# The flags word of a PEP 552 .pyc: bit 0 hash-based, bit 1 checked against the source.
CHECKED_HASH = 0b11

# Imports the helper as its cold start does and says which of the artifact's modules were
# compiled from source on the way (the interpreter raises a `compile` audit event for each).
PROBE = """
import json, sys
artifacts = sys.argv[1]
sys.path.insert(0, artifacts)
compiled = []
sys.addaudithook(
    lambda event, args: compiled.append(args[1])
    if event == "compile" and isinstance(args[1], str) and args[1].startswith(artifacts)
    else None
)
import service.helper
loaded = [m.__file__ for m in list(sys.modules.values())
          if (getattr(m, "__file__", None) or "").startswith(artifacts)]
print(json.dumps({"compiled": compiled, "loaded": loaded}))
"""


def build_helper(
    artifacts: Path, *variables: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    return make("build-HelperFunction", f"ARTIFACTS_DIR={artifacts}", *variables, path=path)


def compiled_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.pyc"))


def flags(compiled: Path) -> int:
    return int.from_bytes(compiled.read_bytes()[4:8], "little")


def helper_cold_start(artifacts: Path, tmp_path: Path) -> dict[str, list[str]]:
    environment = os.environ | LAMBDA_LIKE | {"LAMBDA_TASK_ROOT": str(artifacts)}
    environment["PYTHONDONTWRITEBYTECODE"] = "1"  # as read-only as /var/task
    ran = subprocess.run(
        [sys.executable, "-c", PROBE, str(artifacts)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: dict[str, list[str]] = json.loads(ran.stdout.splitlines()[-1])
    return loaded


def test_the_function_ships_checked_bytecode_for_every_module(tmp_path: Path) -> None:
    artifacts = tmp_path / "helper"
    result = build_helper(artifacts, *THIS_PYTHON)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")  # no warning
    sources = sorted(artifacts.rglob("*.py"))
    assert len(sources) > 40
    tag = sys.implementation.cache_tag
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert compiled.is_file(), source
        assert flags(compiled) == CHECKED_HASH, source


def test_the_helper_starts_without_compiling_any_of_its_own_modules(tmp_path: Path) -> None:
    compiled, source = tmp_path / "compiled", tmp_path / "source"
    assert build_helper(compiled, *THIS_PYTHON).returncode == 0
    assert build_helper(source, "LAMBDA_PYTHON=").returncode == 0

    shipped = helper_cold_start(compiled, tmp_path)
    assert len(shipped["loaded"]) > 20
    assert shipped["compiled"] == []
    # The same start from source compiles every one of them, every time.
    before = helper_cold_start(source, tmp_path)
    assert sorted(before["compiled"]) == sorted(before["loaded"])


def test_a_module_edited_after_the_build_runs_as_edited(tmp_path: Path) -> None:
    # As Lambda's console editor does to a deployed function: the bytecode is checked
    # against its source, so the edit is compiled and run, not the old bytecode.
    artifacts = tmp_path / "helper"
    assert build_helper(artifacts, *THIS_PYTHON).returncode == 0
    edited = artifacts / "connlease_client" / "__init__.py"
    edited.write_text(edited.read_text() + "\nEDITED = True\n")
    probe = f"import sys; sys.path.insert(0, {str(artifacts)!r}); import connlease_client"
    ran = subprocess.run(
        [sys.executable, "-B", "-c", f"{probe}; print(connlease_client.EDITED)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.stdout.strip() == "True", ran.stderr


def test_by_default_the_build_compiles_with_lambdas_python_found_on_path(tmp_path: Path) -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = tmp_path / "bin"
    found.mkdir()
    (found / f"python{version}").symlink_to(sys.executable)
    artifacts = tmp_path / "helper"
    result = build_helper(
        artifacts, f"LAMBDA_PYTHON_VERSION={version}", path=f"{found}:{os.environ['PATH']}"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(compiled_files(artifacts)) > 40


def test_with_no_lambda_python_found_the_build_ships_source_and_says_so(tmp_path: Path) -> None:
    # Lambda's version stands at 3.99 here: no python3.99 is on any PATH.
    artifacts = tmp_path / "helper"
    result = build_helper(artifacts, "LAMBDA_PYTHON_VERSION=3.99")
    assert (result.returncode, result.stderr) == (0, "")
    # On stdout: `sam build` shows make's stdout as it runs, its stderr only on failure.
    (warning,) = result.stdout.splitlines()
    assert warning.startswith(f"warning: no working python3.99 on PATH to compile {artifacts}")
    assert "set LAMBDA_PYTHON to one, to ship bytecode" in warning
    assert (artifacts / "service" / "helper.py").is_file()
    assert compiled_files(artifacts) == []


@pytest.mark.parametrize(
    ("python", "version"),
    [("/nonexistent/python3.13", "3.13"), (sys.executable, "3.99")],
    ids=["missing", "other-version"],
)
def test_a_lambda_python_given_that_does_not_work_fails_the_build(
    tmp_path: Path, python: str, version: str
) -> None:
    # Whoever names one wants bytecode: shipping source instead would go unnoticed.
    result = build_helper(
        tmp_path / "helper", f"LAMBDA_PYTHON={python}", f"LAMBDA_PYTHON_VERSION={version}"
    )
    assert result.returncode == 2
    (error,) = our_lines(result.stderr)
    assert error.startswith(f"LAMBDA_PYTHON={python} is not a working Python {version}")


def test_a_module_of_ours_that_does_not_compile_fails_the_build(tmp_path: Path) -> None:
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "broken.py").write_text("print 'python 2'\n")
    result = make(
        "build-HelperFunction",
        f"ARTIFACTS_DIR={tmp_path / 'helper'}",
        "LAMBDA_PACKAGES=ours",
        *THIS_PYTHON,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "broken.py" in result.stdout + result.stderr


FAKE_PIP = """
import pathlib, sys
target = pathlib.Path(sys.argv[sys.argv.index("--target") + 1])
(target / "dependency").mkdir(parents=True)
(target / "dependency" / "__init__.py").write_text("VALUE = 1\\n")
(target / "dependency" / "py2_example.py").write_text("print 'python 2'\\n")
"""


def test_the_layer_ships_its_dependencies_compiled(tmp_path: Path) -> None:
    pip = tmp_path / "pip.py"
    pip.write_text(FAKE_PIP)
    layer = tmp_path / "layer"
    result = make(
        "build-DependenciesLayer",
        f"ARTIFACTS_DIR={layer}",
        f"RDS_CA_BUNDLE={certificate_authority(tmp_path / 'bundle.pem')}",
        f"LAYER_PIP={sys.executable} {pip}",
        *THIS_PYTHON,
    )
    assert result.returncode == 0, result.stderr
    (compiled,) = compiled_files(layer)
    assert compiled.name == f"__init__.{sys.implementation.cache_tag}.pyc"
    assert flags(compiled) == CHECKED_HASH
    # A dependency's file that does not compile (never imported, or pip would fail too)
    # ships as source, as pip's own compiling leaves it, and the build says so.
    assert (layer / "python" / "dependency" / "py2_example.py").is_file()
    assert "did not compile for Lambda: they ship as source" in result.stdout
