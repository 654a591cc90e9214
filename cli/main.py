"""The `connlease` console script."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from cli.commands import app  # noqa: PLC0415
    except ModuleNotFoundError as missing:
        if missing.name in {"typer", "click", "rich"}:
            sys.exit("connlease: the command line needs its extra: pip install 'connlease[cli]'")
        raise
    app()


if __name__ == "__main__":
    main()
