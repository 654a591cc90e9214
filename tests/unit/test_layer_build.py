"""The layer's build (the root Makefile's build-DependenciesLayer, which `sam build` runs for
DependenciesLayer) checks the RDS CA bundle before anything else: a missing or broken one
fails the build at once, with one line saying where the bundle goes and how to get it,
instead of the deploy failing at LeaseQuota a quarter of an hour in, after RDS was made.

No AWS or network here: a certificate generated for the test stands in for AWS's bundle,
and the layer's pip install is replaced by `true` (LAYER_PIP) where a test gets past the
check; `make infra` and infra/README.md's `sam build` run the real one."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.test_template import ROOT, Stack, load_template, makefile_variable

BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
DEFAULT_BUNDLE = "layer/rds-global-bundle.pem"


def make(
    target: str, *variables: str, cwd: Path = ROOT, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`path`: the PATH make runs with, where a test needs another."""
    environment = {
        k: v
        for k, v in os.environ.items()
        # Not make's own variables either: under `make test` they would make this a nested
        # make, whose errors read `make[1]: ***`.
        if k not in ("RDS_CA_BUNDLE", "LAMBDA_PYTHON", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", str(ROOT / "Makefile"), target, *variables],
        cwd=cwd,
        env=environment | ({"PATH": path} if path is not None else {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def certificate_authority(path: Path) -> Path:
    """A self-signed CA certificate in PEM, as AWS's bundle is a file of them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connlease test RDS CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def our_lines(stderr: str) -> list[str]:
    """What the Makefile says, without make's own `make: *** ... Error 2`."""
    return [line for line in stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "is missing"),
        (b"", "is missing"),
        # What a download without curl's -f leaves: an error page, not certificates.
        (b"<html><body>403 Forbidden</body></html>\n", "is not a PEM certificate bundle"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "is not a PEM"),
    ],
    ids=["absent", "empty", "html", "broken-pem"],
)
def test_the_layer_build_stops_first_with_one_line_saying_how_to_get_the_bundle(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    bundle = tmp_path / "rds-global-bundle.pem"
    if content is not None:
        bundle.write_bytes(content)
    artifacts = tmp_path / "artifacts"
    result = make(
        "build-DependenciesLayer", f"ARTIFACTS_DIR={artifacts}", f"RDS_CA_BUNDLE={bundle}"
    )

    assert result.returncode != 0
    (line,) = our_lines(result.stderr)
    assert problem in line
    assert f"curl -fsSL -o {bundle} {BUNDLE_URL}" in line  # the URL, and where it goes
    # Nothing was built or installed: the check runs before the layer's first step.
    assert not artifacts.exists()
    assert result.stdout == ""


def test_the_default_bundle_is_the_one_the_readme_fetches_and_git_ignores(tmp_path: Path) -> None:
    # Run where no bundle is: the message names the default path, relative to the root
    # (where `sam build --build-in-source` runs make).
    (tmp_path / "layer").mkdir()
    result = make("check-rds-ca-bundle", cwd=tmp_path)
    assert result.returncode != 0
    (line,) = our_lines(result.stderr)
    assert line == (
        f"RDS CA bundle {DEFAULT_BUNDLE} is missing; get it with:"
        f" curl -fsSL -o {DEFAULT_BUNDLE} {BUNDLE_URL}"
    )
    assert makefile_variable("RDS_CA_BUNDLE") == DEFAULT_BUNDLE
    assert makefile_variable("RDS_CA_BUNDLE_URL") == BUNDLE_URL
    assert DEFAULT_BUNDLE in (ROOT / ".gitignore").read_text().splitlines()
    readme = (ROOT / "infra" / "README.md").read_text()
    assert f"curl -fsSL -o {DEFAULT_BUNDLE}" in readme
    assert BUNDLE_URL in readme


def test_a_bundle_that_loads_passes_the_check_quietly(tmp_path: Path) -> None:
    bundle = certificate_authority(tmp_path / "bundle.pem")
    result = make("check-rds-ca-bundle", f"RDS_CA_BUNDLE={bundle}")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_layer_ships_the_bundle_where_the_functions_read_it(tmp_path: Path) -> None:
    bundle = certificate_authority(tmp_path / "bundle.pem")
    artifacts = tmp_path / "artifacts"
    result = make(
        "build-DependenciesLayer",
        f"ARTIFACTS_DIR={artifacts}",
        f"RDS_CA_BUNDLE={bundle}",
        "LAYER_PIP=true",  # no install here: the check and the copy are what is tested
    )
    assert result.returncode == 0, result.stderr
    shipped = artifacts / "python" / "rds-global-bundle.pem"
    assert shipped.read_bytes() == bundle.read_bytes()
    # Lambda mounts the layer's python/ at /opt/python: the template's DB_CA_BUNDLE.
    default = load_template()["Parameters"]["DatabaseCaBundle"]["Default"]
    assert default == f"/opt/python/{shipped.name}"
    stack = Stack(load_template())
    for function in ("TestFunction", "SeederFunction"):
        variables = stack.functions()[function]["Environment"]["Variables"]
        assert variables["DB_CA_BUNDLE"] == default, function
