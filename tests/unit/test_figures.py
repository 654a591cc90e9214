"""Every measured figure a doc quotes comes from the last run that measured it
(docs/figures.json, written by `make bench` and `make reliability`), never from a hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from local import figures

# A percentage or a ratio README states by hand is a measured figure without a source.
MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:%|x\b)")
FENCED = re.compile(r"```.*?```", re.DOTALL)


@pytest.mark.parametrize("doc", figures.QUOTING)
def test_every_figure_a_doc_quotes_is_the_one_its_run_recorded(doc: str) -> None:
    text = (figures.ROOT / doc).read_text()

    wrong = figures.misquotes(doc, text, figures.recorded(figures.load()))

    assert not wrong, "\n".join(map(str, wrong))


def test_readme_states_no_percentage_or_ratio_of_its_own() -> None:
    text = (figures.ROOT / "README.md").read_text()
    prose = figures.MARKED.sub("", FENCED.sub("", text))

    assert MEASURED.findall(prose) == []


def test_a_quote_that_disagrees_or_names_no_figure_is_found_and_filling_mends_it(
    tmp_path: Path,
) -> None:
    store = tmp_path / "figures.json"
    figures.record("bench", "make bench", {"utilization.warm_4x": "87.5%"}, path=store)
    figures.record("reliability", "make reliability", {"reliability.campaigns": "12"}, store)
    doc = tmp_path / "README.md"
    doc.write_text(
        "warm: <!--fig:utilization.warm_4x-->87.2%<!--/fig-->, "
        "<!--fig:reliability.campaigns-->12<!--/fig--> campaigns, "
        "<!--fig:nosuch-->3<!--/fig-->\n"
    )
    known = figures.recorded(figures.load(store))

    found = figures.misquotes("README.md", doc.read_text(), known)
    figures.fill_docs(tmp_path, ["README.md"], store)

    assert [(m.name, m.written, m.recorded) for m in found] == [
        ("utilization.warm_4x", "87.2%", "87.5%"),
        ("nosuch", "3", None),
    ]
    assert "<!--fig:utilization.warm_4x-->87.5%<!--/fig-->" in doc.read_text()
    assert [m.name for m in figures.misquotes("README.md", doc.read_text(), known)] == ["nosuch"]


def test_a_run_replaces_its_own_figures_and_keeps_the_others(tmp_path: Path) -> None:
    store = tmp_path / "figures.json"
    figures.record("bench", "make bench", {"coldstart.ratio": "1.62x", "gone": "1"}, store)
    figures.record("reliability", "make reliability", {"reliability.campaigns": "12"}, store)
    figures.record("bench", "make bench", {"coldstart.ratio": "1.41x"}, store)

    assert figures.recorded(figures.load(store)) == {
        "coldstart.ratio": "1.41x",
        "reliability.campaigns": "12",
    }
