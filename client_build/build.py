"""`make client`: the client's wheel and its Lambda layer, from the repository as it is.

    python -m client_build.build [--dist dist]

writes dist/connlease_client-<version>-py3-none-any.whl and dist/connlease-client-layer.zip
(python/ at its root, as Lambda mounts it at /opt/python). Both hold the package
`connlease_client` alone: its own modules, and under `connlease_client._core` the
repository modules it runs on (client_build.vendor). Pure Python, so one wheel and one
layer serve every architecture and Python 3.11 on.

Written with the standard library alone (zipfile, as the wheel format asks), so that a
fresh clone builds with any Python 3.11 and nothing installed, and the same tree always
gives the same bytes (fixed timestamps and order).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from client_build.vendor import CORE, PACKAGE, Closure, ClosureError

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "connlease-client"
SUMMARY = "connlease's client: connection-quota leases for AWS Lambda functions that use MySQL"
LAYER = "connlease-client-layer.zip"
STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip holds: the same bytes every build
CORE_DOC = f'''"""The repository modules the client runs on (its import closure in domain/,
adapters/ and service/), vendored by client_build with their imports rewritten to
{CORE}. Not an interface of its own: import from {PACKAGE}.
"""
'''
DESCRIPTION = f"""# connlease-client

Takes a connection-quota lease before a Lambda function connects to MySQL and gives it
back after: through connlease's helper function (`lambda_leases`) or straight from its
DynamoDB table (`direct_leases`).

```python
from {PACKAGE} import ConnectionLeases, NoCapacity, lambda_leases
```

Needs botocore (in every Lambda Python runtime); the `mysql` extra adds pymysql, whose
connections the client bounds by their lease.
"""


@dataclass(frozen=True)
class Built:
    wheel: Path
    layer: Path
    closure: Closure


def project(root: Path) -> dict[str, str]:
    """The service's pyproject: the client shares its version, Python and licence."""
    found = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return {key: found[key] for key in ("version", "requires-python", "license")}


def metadata(closure: Closure) -> str:
    about = project(closure.root)
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {DISTRIBUTION}",
        f"Version: {about['version']}",
        f"Summary: {SUMMARY}",
        f"License: {about['license']}",
        f"Requires-Python: {about['requires-python']}",
        *(f"Provides-Extra: {extra}" for extra in closure.extras()),
        *(f"Requires-Dist: {requirement}" for requirement in closure.requires()),
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(lines) + "\n\n" + DESCRIPTION


def package_files(closure: Closure) -> dict[str, bytes]:
    """Every file of the package, by its path in site-packages."""
    files = {path: source.encode() for path, source in closure.files()}
    files[f"{CORE.replace('.', '/')}/__init__.py"] = CORE_DOC.encode()
    typed = closure.root / PACKAGE / "py.typed"
    if typed.is_file():  # PEP 561: the package and its subpackages are typed
        files[f"{PACKAGE}/py.typed"] = typed.read_bytes()
    return files


def _digest(data: bytes) -> str:
    encoded = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={encoded}"


def dist_info(closure: Closure, files: dict[str, bytes]) -> dict[str, bytes]:
    """The wheel's .dist-info: METADATA, WHEEL and RECORD (PEP 427, PEP 376)."""
    info = f"{PACKAGE}-{project(closure.root)['version']}.dist-info"
    written = {
        f"{info}/METADATA": metadata(closure).encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: client_build\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = [f"{path},{_digest(data)},{len(data)}" for path, data in {**files, **written}.items()]
    written[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    return written


def _zip(path: Path, *parts: dict[str, bytes]) -> None:
    """A zip of each part's files in turn, each part's in name order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for files in parts:
            for name in sorted(files):
                entry = zipfile.ZipInfo(name, STAMP)
                entry.external_attr = 0o644 << 16
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, files[name])


def build(dist: Path, root: Path = ROOT) -> Built:
    """The wheel and the layer in `dist`; ClosureError if the client reaches what it must not."""
    closure = Closure.of(root)
    files = package_files(closure)
    info = dist_info(closure, files)
    wheel = dist / f"{PACKAGE}-{project(root)['version']}-py3-none-any.whl"
    _zip(wheel, files, info)  # .dist-info last, as the wheel format recommends
    # The layer: what `pip install --target python/` of the wheel puts there.
    layer = dist / LAYER
    _zip(layer, {f"python/{name}": data for name, data in {**files, **info}.items()})
    return Built(wheel, layer, closure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client_build.build", description=__doc__)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where to write")
    args = parser.parse_args(argv)
    try:
        built = build(args.dist)
    except ClosureError as error:
        print(error, file=sys.stderr)
        return 1
    requires = ", ".join(built.closure.requires()) or "nothing"
    print(f"{built.wheel} ({built.wheel.stat().st_size:,} bytes; requires {requires})")
    print(f"{built.layer} ({built.layer.stat().st_size:,} bytes; python/{PACKAGE})")
    print(f"{len(built.closure.modules)} modules, vendored under {CORE} where not {PACKAGE}'s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
