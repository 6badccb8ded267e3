"""Slide types, the choice of notebooks to render, the decks and the course site (no browser)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import nbformat
import pytest

from conftest import REPO_ROOT
from gigacount_lib.reproduce import list_notebooks
from gigacount_lib.slides import (SLIDE_TYPES, apply_slide_types, find_newest_run, missing_slide_types,
                                  notebook_sources, render_deck, suggested_slide_types)

NOTEBOOKS = list_notebooks()
md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_committed_cell_has_a_slide_type(path):
    nb = json.loads(path.read_text())
    missing = missing_slide_types(nb)
    assert not missing, (f"{path.name}: cells {missing} have no metadata.slideshow.slide_type; run "
                         ".venv/bin/python tools/slide_metadata.py and commit the notebook")


def _cells():
    params = code("# Parameters (papermill overrides this cell).\nquick = True")
    params.metadata["tags"] = ["parameters"]
    return [md("# Title\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
               "(https://colab.research.google.com/github/o/r/blob/main/notebooks/01_x.ipynb)"),
            code('# Setup. On Colab ...\nimport importlib.util\nimportlib.util.find_spec("gigacount_lib")'),
            params, md("## 1. A section\n\nText."), code("x = 1"), md("Some prose."),
            code("fig, ax = plt.subplots()\nsave_figure(fig, output_dir, '01_x')"), md("After the figure."),
            code("y = 2"), md("### A sub-topic"), code("from gigacount_lib.viz import save_figure")]


def test_slide_types_follow_the_cell_structure():
    assert suggested_slide_types(_cells()) == ["slide", "skip", "skip", "slide", "-", "-", "subslide", "subslide",
                                               "-", "subslide", "-"]


def test_apply_keeps_a_persons_slide_type_and_is_idempotent():
    nb = nbformat.v4.new_notebook(cells=_cells())
    nb.cells[4].metadata["slideshow"] = {"slide_type": "fragment"}
    assert apply_slide_types(nb) == len(nb.cells) - 1
    assert nb.cells[4].metadata.slideshow.slide_type == "fragment"
    assert apply_slide_types(nb) == 0 and missing_slide_types(nb) == []
    assert apply_slide_types(nb, force=True) == 1 and nb.cells[4].metadata["slideshow"]["slide_type"] == "-"
    assert all(c.metadata["slideshow"]["slide_type"] in SLIDE_TYPES for c in nb.cells)


def test_the_tool_writes_slide_types_once_and_never_outputs(tmp_path):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=_cells()), str(path))
    tool = [sys.executable, str(REPO_ROOT / "tools" / "slide_metadata.py")]
    assert subprocess.run([*tool, "--check", str(path)], capture_output=True).returncode == 1
    out = subprocess.run([*tool, str(path)], capture_output=True, text=True, check=True).stdout
    assert "11 cell(s) updated" in out
    first = path.read_bytes()
    assert "unchanged" in subprocess.run([*tool, str(path)], capture_output=True, text=True, check=True).stdout
    assert path.read_bytes() == first
    assert subprocess.run([*tool, "--check", str(path)], capture_output=True).returncode == 0
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def _fake_run(reports, name, statuses):
    run = reports / name
    run.mkdir(parents=True)
    for nb_name in statuses:
        nb = nbformat.read(str(REPO_ROOT / "notebooks" / nb_name), as_version=4)
        nbformat.write(nb, str(run / nb_name))
    (run / "manifest.json").write_text(json.dumps(
        {"run": name, "notebooks": [{"notebook": k, "status": v} for k, v in statuses.items()]}))
    return run


def test_notebook_sources_take_the_newest_run_and_fall_back_to_the_committed(tmp_path):
    first, second = NOTEBOOKS[0].name, NOTEBOOKS[1].name
    old = _fake_run(tmp_path, "20000101-000000-cpu", {first: "ok"})
    new = _fake_run(tmp_path, "named-run", {first: "failed", second: "running"})
    past = time.time() - 100
    os.utime(old / "manifest.json", (past, past))
    assert find_newest_run(tmp_path) == new
    sources = notebook_sources(reports_dir=tmp_path)
    assert [s.name for s in sources] == [p.stem for p in NOTEBOOKS]
    assert sources[0].executed and sources[0].status == "failed" and sources[0].path == new / first
    assert "partial" in sources[0].label
    assert not sources[1].executed and sources[1].path == NOTEBOOKS[1]  # still running: not rendered
    assert [s.executed for s in notebook_sources(old)][:2] == [True, False]
    assert not any(s.executed for s in notebook_sources(False, reports_dir=tmp_path))
    assert find_newest_run(tmp_path / "none") is None
    with pytest.raises(FileNotFoundError, match="no such reproduction run"):
        notebook_sources(tmp_path / "missing")


_REMOTE = re.compile(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//', re.I)


def test_a_deck_loads_reveal_js_from_beside_it_and_nothing_remote(tmp_path):
    deck = render_deck(NOTEBOOKS[0], tmp_path / "deck.slides.html", mathjax_url="mathjax/MathJax.js")
    page = deck.read_text()
    assert not _REMOTE.search(page), "a remote script, stylesheet or image in the deck"
    for needed in ('src="reveal.js/dist/reveal.js"', 'src="reveal.js/plugin/notes/notes.js"',
                   'href="reveal.js/dist/reveal.css"', 'src="mathjax/MathJax.js"'):
        assert needed in page
    assert "require.js" not in page and "colab-badge.svg" not in page
    assert ">Open in Colab</a>" in page
    assert page.count("<section") >= 4


def test_site_cli_builds_the_offline_site(tmp_path, capsys):
    from gigacount_lib.cli import main

    assert main(["site", "--unexecuted", "--no-mathjax", "--out", str(tmp_path / "site")]) == 0
    assert "index.html" in capsys.readouterr().out
    root = tmp_path / "site"
    index = (root / "index.html").read_text()
    for nb in NOTEBOOKS:
        assert f'href="notebooks/{nb.stem}.html"' in index and f'href="slides/{nb.stem}.slides.html"' in index
        assert (root / "notebooks" / f"{nb.stem}.html").is_file()
        assert (root / "slides" / f"{nb.stem}.slides.html").is_file()
        page = (root / "notebooks" / f"{nb.stem}.html").read_text()
        assert not _REMOTE.search(page), f"{nb.stem}.html loads something remote"
    assert index.count("built from the unexecuted notebook") == len(NOTEBOOKS)
    assert (root / "slides" / "reveal.js" / "dist" / "reveal.js").is_file()
    assert not (root / "slides" / "mathjax").exists() and not (root / "report.html").exists()


@pytest.mark.parametrize("command", ["slides", "site"])
def test_cli_help(command, capsys):
    from gigacount_lib.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "--run" in capsys.readouterr().out


def test_an_executed_deck_skips_injected_parameters_and_shows_figures_without_code(tmp_path):
    nb = nbformat.read(str(NOTEBOOKS[0]), as_version=4)
    injected = code("# Parameters\nquick = True\ninjected_by_papermill_4711 = True")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(3, injected)  # where papermill puts it; it has no slide type
    figure = next(c for c in nb.cells if c.cell_type == "code" and "save_figure(" in c.source)
    figure.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "x"})]
    path = tmp_path / NOTEBOOKS[0].name
    nbformat.write(nb, str(path))
    page = render_deck(path, tmp_path / "deck.slides.html").read_text()
    assert "injected_by_papermill_4711" not in page
    assert "data:image/png;base64,iVBORw0KGgo=" in page
    assert "save_figure(" not in page.split("data:image/png;base64,iVBORw0KGgo=")[0].rsplit("<section", 1)[-1]
