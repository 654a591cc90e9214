"""The one source of every measured figure a doc quotes.

`make bench` and `make reliability` record their headline figures, by name, in
docs/figures.json (with the command and the date of the run), and then fill them into the
docs. A doc quotes a figure as `<!--fig:NAME-->value<!--/fig-->`: the marker renders as
nothing, the value as written. `python -m local.figures` fills the docs again from the
file, and tests/unit/test_figures.py fails when a quoted value disagrees with the file, names
a figure the file lacks, or README states a percentage outside a marker.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures.json"
# The docs that quote figures (docs/benchmarks.md and docs/reliability.md are whole
# reports, written by their runs, and quote nothing).
QUOTING = (
    "README.md",
    "infra/README.md",
    "docs/design.md",
    "docs/client.md",
    "docs/helper.md",
    "docs/local.md",
    "docs/operating.md",
    "docs/development.md",
)

MARKED = re.compile(r"<!--fig:(?P<name>[\w.-]+)-->(?P<value>.*?)<!--/fig-->")


@dataclass(frozen=True)
class Misquote:
    doc: str
    name: str
    written: str
    recorded: str | None  # None: no run records a figure of that name

    def __str__(self) -> str:
        if self.recorded is None:
            return f"{self.doc}: {self.name} is quoted but no run records it"
        return (
            f"{self.doc}: {self.name} is quoted as {self.written!r}, the last run recorded "
            f"{self.recorded!r} (python -m local.figures fills it in)"
        )


def load(path: Path = FIGURES) -> dict[str, dict[str, object]]:
    """Each run's section: its command, its date and its figures."""
    return json.loads(path.read_text()) if path.exists() else {}


def recorded(sections: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Every figure by name, whichever run recorded it."""
    found: dict[str, str] = {}
    for section in sections.values():
        figures = section.get("figures", {})
        assert isinstance(figures, dict)
        found.update({str(k): str(v) for k, v in figures.items()})
    return found


def record(run: str, command: str, figures: Mapping[str, str], path: Path = FIGURES) -> None:
    """Replace one run's section (the others' figures stay as their runs left them)."""
    sections = load(path)
    sections[run] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "figures": dict(sorted(figures.items())),
    }
    path.write_text(json.dumps(sections, indent=2, sort_keys=True) + "\n")


def fill(text: str, figures: Mapping[str, str]) -> str:
    """The text with every quoted figure the file knows set to its recorded value."""

    def value(match: re.Match[str]) -> str:
        name = match["name"]
        return f"<!--fig:{name}-->{figures.get(name, match['value'])}<!--/fig-->"

    return MARKED.sub(value, text)


def misquotes(doc: str, text: str, figures: Mapping[str, str]) -> list[Misquote]:
    return [
        Misquote(doc, m["name"], m["value"], figures.get(m["name"]))
        for m in MARKED.finditer(text)
        if figures.get(m["name"]) != m["value"]
    ]


def fill_docs(root: Path = ROOT, docs: Iterable[str] = QUOTING, path: Path = FIGURES) -> None:
    figures = recorded(load(path))
    for doc in docs:
        file = root / doc
        text = file.read_text()
        filled = fill(text, figures)
        if filled != text:
            file.write_text(filled)


def main() -> int:
    fill_docs()
    left = [
        str(m)
        for doc in QUOTING
        for m in misquotes(doc, (ROOT / doc).read_text(), recorded(load()))
    ]
    print("\n".join(left) or f"every quoted figure agrees with {FIGURES.relative_to(ROOT)}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
