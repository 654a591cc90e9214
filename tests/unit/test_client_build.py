"""`make client` (client_build): the client's closure is computed from its imports and
refuses what a function must not get; its imports are rewritten under
connlease_client._core and nothing else changes; the wheel is a valid, reproducible,
pure-Python wheel whose metadata names only what the client imports; the layer is the same
package under python/. tests/integration/test_client_install.py installs and runs it."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from client_build.build import build
from client_build.vendor import Closure, ClosureError, template_handlers, vendored_source

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def closure() -> Closure:
    return Closure.of(ROOT)


def test_the_closure_is_the_client_and_what_it_imports_and_no_handler(closure: Closure) -> None:
    modules = set(closure.modules)
    handlers = template_handlers(ROOT)

    assert handlers == {"service.helper", "service.workload", "service.harness", "service.seeder"}
    # What callers use, what they run on, and what a lazy import reaches.
    assert {
        "connlease_client",
        "connlease_client.contract",
        "service.client",
        "service.warm_client",
        "service.lease_calls",
        "service.lease_bound",
        "adapters.lambda_invoke",
        "adapters.mysql_session",
        "adapters.dynamodb",
        "domain.lease_store",
    } <= modules
    assert modules.isdisjoint(handlers | {"service.bootstrap", "service.helper_requests"})
    assert {name.split(".")[0] for name in modules} == {
        "connlease_client",
        "domain",
        "adapters",
        "service",
    }
    assert closure.requires() == ["botocore>=1.34", 'pymysql>=1.1; extra == "mysql"']
    assert closure.extras() == ["mysql"]


def test_the_client_requirements_agree_with_the_services() -> None:
    # The same floors as pyproject.toml's (boto3 and botocore are released together).
    text = (ROOT / "pyproject.toml").read_text()
    assert '"boto3>=1.34"' in text
    assert '"pymysql>=1.1"' in text


SOURCE = '''\
"""A module of the repository."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.aws import (  # a comment, kept
    INVOKE_CONFIG,
    SDK_CONFIG,
)
from connlease_client.contract import AcquireResponse
from domain import Backoff
from domainish import nothing
from service.lease_calls import LeaseCalls

from .sibling import thing

if TYPE_CHECKING:
    from adapters.lambda_invoke import LambdaLeases


def later() -> None:
    from adapters.mysql_session import reset  # noqa: PLC0415

    text = "from domain import Backoff stays a string"
'''


def test_only_the_vendored_packages_imports_change() -> None:
    rewritten = vendored_source(SOURCE)

    expected = (
        SOURCE.replace("from adapters.", "from connlease_client._core.adapters.")
        .replace(
            "from domain import Backoff\n", "from connlease_client._core.domain import Backoff\n"
        )
        .replace("from service.", "from connlease_client._core.service.")
    )
    assert rewritten == expected
    assert "from connlease_client.contract import AcquireResponse" in rewritten
    assert "from domainish import nothing" in rewritten
    assert "from .sibling import thing" in rewritten
    assert '"from domain import Backoff stays a string"' in rewritten


CLIENT = "from service.client import ConnectionLeases\n"


def _repository(tmp_path: Path, client_source: str) -> Path:
    """A repository holding connlease_client, importing a service.client made of
    `client_source`, and a template running service.helper."""
    files = {
        "connlease_client/__init__.py": CLIENT,
        "service/__init__.py": "",
        "service/client.py": client_source,
        "service/helper.py": "def handler(event, context): ...\n",
        "domain/__init__.py": "",
        "domain/model.py": "",
        "local/__init__.py": "",
        "local/context.py": "",
        "cli/__init__.py": "",
        "infra/template.yaml": "Resources:\n  F:\n    Properties:\n"
        "      Handler: service.helper.handler\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("from service.helper import handler\n", "service.helper: a Lambda handler"),
        ("from service import helper\n", "service.helper: a Lambda handler"),
        ("import aws_lambda_powertools\n", "aws_lambda_powertools: not a dependency"),
        ("def f():\n    from pydantic import BaseModel\n", "pydantic: not a dependency"),
        ("from local.context import LocalContext\n", "the local stack is no part"),
        ("from cli import main\n", "the operator's command line is no part"),
        ("import domain.model\n", "`import domain.model` cannot be vendored"),
        (
            "import importlib\nimportlib.import_module('domain.model')\n",
            "import_module('domain.model') cannot be vendored",
        ),
        ("from service.nowhere import thing\n", "service.nowhere: no module of the repository"),
    ],
)
def test_the_build_refuses_what_a_function_must_not_get_naming_the_chain(
    tmp_path: Path, source: str, says: str
) -> None:
    root = _repository(tmp_path, source)

    with pytest.raises(ClosureError) as refused:
        Closure.of(root)

    (problem,) = refused.value.problems
    assert problem.startswith("connlease_client -> service.client")
    assert says in problem


def test_type_only_imports_of_other_libraries_need_nothing_at_run_time(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING

        import botocore

        from domain import model

        if TYPE_CHECKING:
            from mypy_boto3_lambda import LambdaClient
        """
    )
    closure = Closure.of(_repository(tmp_path, source))

    assert set(closure.modules) == {
        "connlease_client",
        "service",
        "service.client",
        "domain",
        "domain.model",
    }
    assert closure.requires() == ["botocore>=1.34"]
    assert closure.extras() == []


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("dist")
    build(where)
    return where


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_is_the_package_alone_with_its_record(dist: Path) -> None:
    (wheel,) = dist.glob("connlease_client-*-py3-none-any.whl")
    entries = _entries(wheel)
    info = f"{wheel.name.split('-py3')[0]}.dist-info"

    assert {name.split("/")[0] for name in entries} == {"connlease_client", info}
    assert "connlease_client/_core/service/client.py" in entries
    assert "connlease_client/py.typed" in entries
    record = entries[f"{info}/RECORD"].decode().splitlines()
    assert {line.split(",")[0] for line in record} == set(entries)
    for line in record:
        name, digest, size = line.split(",")
        if name.endswith("RECORD"):
            continue
        data = entries[name]
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        assert (digest, int(size)) == (f"sha256={expected.decode()}", len(data))
    wheel_file = Parser().parsestr(entries[f"{info}/WHEEL"].decode())
    assert (wheel_file["Root-Is-Purelib"], wheel_file["Tag"]) == ("true", "py3-none-any")
    about = Parser().parsestr(entries[f"{info}/METADATA"].decode())
    assert about["Name"] == "connlease-client"
    assert about["Requires-Python"] == ">=3.11"
    assert about.get_all("Requires-Dist") == ["botocore>=1.34", 'pymysql>=1.1; extra == "mysql"']
    assert about.get_all("Provides-Extra") == ["mysql"]


def test_no_module_in_the_wheel_imports_a_package_it_would_collide_with(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    for name, data in _entries(wheel).items():
        if name.endswith(".py"):
            text = data.decode()
            for package in ("domain", "adapters", "service", "local", "cli"):
                assert f"from {package}." not in text, name
                assert f"from {package} import" not in text, name


def test_the_layer_is_the_same_package_under_python(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    layer = _entries(dist / "connlease-client-layer.zip")

    assert all(name.startswith("python/") for name in layer)
    assert {name.removeprefix("python/"): data for name, data in layer.items()} == _entries(wheel)


def test_the_same_tree_builds_the_same_bytes(dist: Path, tmp_path: Path) -> None:
    build(tmp_path)

    for built in dist.iterdir():
        assert (tmp_path / built.name).read_bytes() == built.read_bytes(), built.name


def test_make_client_builds_with_the_standard_library_alone(tmp_path: Path) -> None:
    # -S -E: no site-packages and no PYTHONPATH, as a fresh clone's python3 has nothing.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    made = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "client",
            "PYTHON=python3 -S -E",
            f"CLIENT_DIST={tmp_path}",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert made.returncode == 0, made.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "connlease-client-layer.zip",
        f"{next(tmp_path.glob('*.whl')).name}",
    ]
    assert "requires botocore>=1.34" in made.stdout
