"""The client as another function installs it (`make client`): the wheel, pip-installed into
a fresh virtualenv beside nothing but what it declares (botocore and its own dependencies,
taken from this environment: nothing is downloaded), runs a function whose own code has
`domain.py`, `adapters.py` and a `service/` package, on the local stack, in lambda mode and
direct mode: every call takes its lease, connects, and gives the lease back, within the
quota, while the function's modules stay its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from adapters.mysql import MySqlConnector, MySqlEndpoint
from client_build.build import Built, build
from local.demo_setup import mysql_from_environment
from local.run import RunOptions, run_function
from local.watch import Poller
from tests.integration.test_infra_readme import readme_handler

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUOTA = 2

EXAMPLE = ROOT / "examples" / "orders" / "handler.py"
# A function's own code: the README's example function (handler.py, as shipped), modules
# of its own named as the repository's packages are, and a handler that answers as the
# example does, saying also where each module came from.
FUNCTION = {
    "domain.py": 'OWNER = "the function"\n',
    "adapters.py": 'OWNER = "the function"\n',
    "service/__init__.py": 'OWNER = "the function"\n',
    "service/orders.py": "def total(*prices: int) -> int:\n    return sum(prices)\n",
    "inspected.py": """
        import sys

        import adapters
        import domain
        import handler as example
        import service
        from service import orders


        def handler(event, context):
            return example.handler(event, context) | {
                "own": [domain.OWNER, adapters.OWNER, service.OWNER, orders.total(2, 3)],
                "files": {
                    name: sys.modules[name].__file__
                    for name in ("connlease_client", "domain", "adapters", "service", "botocore")
                },
                "path": sys.path,
                "modules": sorted(sys.modules),
            }
    """,
}


@dataclass(frozen=True)
class Installed:
    built: Built
    python: Path  # the virtualenv's interpreter
    site_packages: Path
    function: Path  # the function's code dir


def _environment() -> dict[str, str]:
    """This environment's variables, less the path that points at the repository."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    ran = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def _required(requirements: list[str], extras: set[str]) -> list[metadata.Distribution]:
    """The distributions `requirements` need, transitively, as installed here; each at a
    version its requirement accepts."""
    found: dict[str, metadata.Distribution] = {}
    wanted = [(Requirement(line), extras) for line in requirements]
    while wanted:
        requirement, active = wanted.pop()
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in active or {""}
        ):
            continue
        distribution = metadata.distribution(requirement.name)
        version = distribution.version
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
        name = distribution.metadata["Name"].lower()
        if name not in found:
            found[name] = distribution
            wanted += [
                (Requirement(line), set(requirement.extras)) for line in distribution.requires or []
            ]
    return list(found.values())


def _link(distributions: list[metadata.Distribution], into: Path) -> None:
    """Each distribution's top-level files (packages, modules, .dist-info) linked into
    `into`, which the virtualenv then finds through a .pth file: an install of exactly these,
    from this environment's copies."""
    into.mkdir(parents=True, exist_ok=True)
    for distribution in distributions:
        tops = {
            file.parts[0]
            for file in distribution.files or []
            if file.parts[0] not in {"..", "__pycache__"}
        }
        for top in tops:
            (into / top).symlink_to(Path(str(distribution.locate_file(top))))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("client-install")
    built = build(work / "dist")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        "--no-index", "--no-deps", built.wheel,
    )  # fmt: skip
    site_packages = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    # The client's declared dependencies (not its extra: the function brings its driver).
    declared = metadata.Distribution.at(
        next(site_packages.glob("connlease_client-*.dist-info"))
    ).requires
    _link(_required(list(declared or []), set()), work / "dependencies")
    (site_packages / "dependencies.pth").write_text(f"{work / 'dependencies'}\n")
    # The function's package: its code, and its driver as `pip install --target` puts it.
    function = work / "function"
    for name, text in FUNCTION.items():
        (function / name).parent.mkdir(parents=True, exist_ok=True)
        (function / name).write_text(textwrap.dedent(text).lstrip())
    shutil.copy(EXAMPLE, function / "handler.py")
    _link(_required(["pymysql"], set()), function)
    return Installed(built, python, site_packages, function)


def test_the_wheel_requires_botocore_alone_and_pymysql_as_an_extra(installed: Installed) -> None:
    probe = (
        "import json; from importlib import metadata; "
        "print(json.dumps(metadata.requires('connlease-client')))"
    )
    requires = json.loads(_run(installed.python, "-c", probe))

    assert requires == ["botocore>=1.34", 'pymysql>=1.1; extra == "mysql"']
    checked = _run(sys.executable, "-m", "pip", "--python", installed.python, "check")
    assert "No broken requirements found" in checked


PROBE = """
import json, sys
found = {}
for name in ("pydantic", "pymysql", "aws_lambda_powertools", "domain", "service", "local"):
    try:
        __import__(name)
    except ImportError:
        found[name] = False
    else:
        found[name] = True
from connlease_client import (
    ConnectionLeases, ConnleaseError, KeepWarm, NoCapacity, direct_leases, lambda_leases,
)
from connlease_client.contract import AcquireResponse
ConnectionLeases(direct_leases("connlease-leases"), "orders-mysql", keep_warm=KeepWarm())
ConnectionLeases(lambda_leases("connlease-helper"), "orders-mysql")
print(json.dumps({"importable": found, "no_capacity": issubclass(NoCapacity, ConnleaseError)}))
"""


def test_the_installed_client_needs_nothing_but_botocore(installed: Installed) -> None:
    # Outside the function's code dir: no pymysql, and nothing of this repository.
    seen = json.loads(_run(installed.python, "-P", "-c", PROBE, cwd=installed.site_packages))

    assert seen["importable"] == dict.fromkeys(
        ("pydantic", "pymysql", "aws_lambda_powertools", "domain", "service", "local"), False
    )
    assert seen["no_capacity"] is True


class FunctionConnections(Poller):
    """The peak count of connections to one database, the function's own (the server's
    Threads_connected counts every other client of this MariaDB too)."""

    def __init__(self, mysql: MySqlEndpoint) -> None:
        super().__init__(0.02, "function-connections")
        self._database = mysql.database
        self._connection = MySqlConnector(replace(mysql, database="information_schema"), None)()
        self.peak = 0

    def sample(self) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM PROCESSLIST WHERE DB = %s", (self._database,))
            (count,) = cursor.fetchone()
        self.peak = max(self.peak, int(count))

    def stopped(self) -> None:
        self._connection.close()


@pytest.fixture
def own_database() -> Iterator[MySqlEndpoint]:
    """A database of the test's own, so that its connections are told from anyone's."""
    mysql = mysql_from_environment()
    name = f"client_install_{uuid.uuid4().hex[:8]}"
    admin = MySqlConnector(mysql, None)()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        yield replace(mysql, database=name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.mark.parametrize("mode", ["lambda", "direct"])
def test_a_function_with_its_own_domain_service_and_adapters_runs_on_the_installed_client(
    installed: Installed, own_database: MySqlEndpoint, tmp_path: Path, mode: Any
) -> None:
    options = RunOptions(
        handler="inspected.handler",
        code_dir=installed.function,
        name="orders",
        event={"hold_s": 0.2},
        invocations=8,
        concurrency=4,
        quota=QUOTA,
        mode=mode,
        mysql=own_database,
        python=installed.python,
        log_dir=tmp_path,
    )
    with FunctionConnections(own_database).watching() as connections:
        report = run_function(options)

    log = report.log_file.read_text()
    assert report.function_errors == [], log[-3000:]
    assert [answer["statusCode"] for answer in report.answers] == [200] * 8
    # Four at once on a quota of two: some waited for their lease, none connected past it,
    # and every lease was given back.
    assert max(answer["lease_wait_ms"] for answer in report.answers) > 0
    assert 1 <= connections.peak <= QUOTA
    assert report.quota_after.in_use == 0
    for answer in report.answers:
        # The function's modules are its own; the client is the wheel's, running on its
        # vendored copy; nothing of the repository is on the function's path.
        assert answer["own"] == ["the function"] * 3 + [5]
        files = answer["files"]
        assert files["domain"] == str(installed.function / "domain.py")
        assert files["adapters"] == str(installed.function / "adapters.py")
        assert files["service"] == str(installed.function / "service" / "__init__.py")
        assert files["connlease_client"] == str(
            installed.site_packages / "connlease_client" / "__init__.py"
        )
        assert str(ROOT) not in answer["path"]
        modules = answer["modules"]
        assert "connlease_client._core.service.client" in modules
        assert "connlease_client._core.domain.lease_store" in modules
        assert [name for name in modules if name.split(".")[0] in {"pydantic", "cli"}] == []
        assert ("connlease_client._core.adapters.lambda_invoke" in modules) == (mode == "lambda")


def test_the_walkthroughs_handler_runs_as_written_on_the_installed_client(
    installed: Installed, tmp_path: Path
) -> None:
    # infra/README.md step 6: `make client && pip install dist/connlease_client-*.whl`,
    # then its handler, in a function whose own modules are named as the repository's.
    function = tmp_path / "function"
    shutil.copytree(installed.function, function, symlinks=True)
    (function / "handler.py").write_text(readme_handler())
    options = RunOptions(
        handler="handler.handler",
        code_dir=function,
        event={},
        invocations=4,
        concurrency=4,
        quota=QUOTA,
        python=installed.python,
        log_dir=tmp_path / "logs",
    )
    report = run_function(options)

    assert report.function_errors == [], report.log_file.read_text()[-3000:]
    assert [answer["statusCode"] for answer in report.answers] == [200] * 4
    assert report.quota_after.in_use == 0
