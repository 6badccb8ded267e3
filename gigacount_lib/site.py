"""The course site: one static folder that opens from disk with no server (``make site``).

:func:`build_site` writes, under ``site/`` by default::

    index.html                    the course outline: per notebook its sections and links
    notebooks/NN_name.html        the notebook as a page (nbconvert's HTML export, ``lab`` template)
    slides/NN_name.slides.html    its reveal.js deck (:mod:`gigacount_lib.slides`)
    slides/reveal.js/, slides/mathjax/   reveal.js and MathJax, copied from their packages
    report.html                   the newest reproduction run's report, when there is one

Pages are rendered from the newest reproduction run (``reports/<run>/``, see
:func:`gigacount_lib.slides.notebook_sources`) or ``--run DIR``; a notebook that run did not execute is
rendered from the committed notebook, without outputs, and the index says so. Every link is relative
and nothing is loaded from the network: the ``lab`` template's require.js, Mermaid and widget
scripts are left out (no notebook here uses widgets or Mermaid), MathJax is the local copy, images
are embedded as ``data:`` URIs and the Colab badge (a remote image) is a text link. The Colab links
themselves of course need a network, on the student's side.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

from .slides import (MATHJAX_ENTRY, MATHJAX_FOLDER, OFFLINE_HEAD_BLOCKS, REPO_ROOT, NotebookSource, build_slides,
                     colab_url, deck_name, notebook_sources, offline_markdown, strip_remote_images)
from .slides import _heading_level, _notebook_title, _source  # noqa: F401 - shared cell helpers
from .utils import atomic_write_bytes, get_logger

log = get_logger("site")

__all__ = ["build_site", "render_page", "page_name", "notebook_outline"]

_PAGE_CSS = """
nav.gc-nav { font-family: system-ui, sans-serif; font-size: 0.95em; padding: 0.6em 1em; margin: 0 0 1em 0;
  border-bottom: 1px solid #ccc; background: #f7f7f7; }
nav.gc-nav a { margin-right: 1.2em; }
.gc-unexecuted { color: #8a4b00; font-weight: bold; }
.gc-remote-image { color: #777; }
"""

_PAGE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
""" + OFFLINE_HEAD_BLOCKS + """{%- block body_header -%}{{ super() }}{{ resources.gigacount.nav }}{%- endblock body_header -%}
"""


def page_name(source: NotebookSource) -> str:
    return f"{source.name}.html"


def notebook_outline(nb: Any) -> list[str]:
    """The notebook's level-2 headings, in order (Markdown cells that start with ``##``)."""
    out = []
    for cell in nb["cells"]:
        if _heading_level(cell) == 2:
            line = next(x for x in _source(cell).splitlines() if x.strip())
            out.append(line.lstrip("#").strip())
    return out


def render_page(source: NotebookSource, out_path: str | os.PathLike, *, nav_html: str = "",
                mathjax_url: str | None = None, image_dir: str | os.PathLike | None = None) -> Path:
    """Write one notebook as an HTML page that loads nothing from the network (but ``mathjax_url``)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = offline_markdown(nbformat.read(str(source.path), as_version=4))
    nb.metadata["title"] = _notebook_title(nb, source.name)
    exporter = HTMLExporter(template_name="lab", embed_images=True, raw_template=_PAGE_TEMPLATE)
    if mathjax_url:
        exporter.mathjax_url = mathjax_url
    resources = {"metadata": {"path": str(Path(image_dir) if image_dir else source.committed.parent),
                              "name": source.name},
                 "gigacount": {"css": _PAGE_CSS, "nav": nav_html, "mathjax": bool(mathjax_url)}}
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    return atomic_write_bytes(out_path, strip_remote_images(page).encode("utf-8"))


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=str(REPO_ROOT)).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _run_summary(run: Path | None) -> dict[str, Any]:
    if run is None:
        return {}
    try:
        return json.loads((run / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {"run": run.name}


_INDEX_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; color: #222;
  line-height: 1.45; }
h1 { margin-bottom: 0.2em; } .gc-meta { color: #555; font-size: 0.92em; }
ol.gc-course > li { margin: 1.2em 0; padding: 0.6em 0.9em; border: 1px solid #ddd; border-radius: 6px; }
.gc-title { font-size: 1.15em; font-weight: 600; }
.gc-links a { display: inline-block; margin: 0.3em 1.1em 0.3em 0; }
.gc-outline { margin: 0.3em 0 0 0; color: #444; font-size: 0.93em; }
.gc-unexecuted { color: #8a4b00; } .gc-failed { color: #b00020; } .gc-executed { color: #1b6e20; }
code { background: #f2f2f2; padding: 0 0.2em; }
"""


def _index_html(entries: Sequence[dict[str, Any]], *, run: Path | None, report: str | None,
                built: str) -> str:
    esc = html.escape
    manifest = _run_summary(run)
    items = []
    for e in entries:
        source: NotebookSource = e["source"]
        if not source.executed:
            state = ('<span class="gc-unexecuted">built from the unexecuted notebook (no outputs, no figures): '
                     'run <code>make reproduce</code>, then <code>make site</code></span>')
        elif source.status != "ok":
            state = f'<span class="gc-failed">{esc(source.label)}</span>'
        else:
            state = f'<span class="gc-executed">{esc(source.label)}</span>'
        links = [f'<a href="notebooks/{esc(e["page"])}">Notebook page</a>',
                 f'<a href="slides/{esc(e["deck"])}">Slides</a>']
        if e["colab"]:
            links.append(f'<a href="{esc(e["colab"])}">Open in Colab</a>')
        outline = "".join(f"<li>{esc(h)}</li>" for h in e["outline"])
        items.append(f'<li><div class="gc-title">{esc(e["title"])}</div>'
                     f'<div class="gc-links">{" ".join(links)}</div><div class="gc-meta">{state}</div>'
                     + (f'<ol class="gc-outline">{outline}</ol>' if outline else "") + "</li>")
    if run is not None:
        started = manifest.get("started") or "?"
        run_line = (f'Pages from the reproduction run <code>{esc(run.name)}</code> (preset '
                    f'{esc(str(manifest.get("preset", "?")))}, started {esc(str(started))}).')
        if manifest.get("data_label"):
            run_line += f" {esc(manifest['data_label'])}."
    else:
        run_line = ("No reproduction run was found: every page is built from the committed notebooks, which "
                    "have no outputs. <code>make reproduce</code> executes them; <code>make site</code> then "
                    "uses that run.")
    report_line = (f'<p><a href="{esc(report)}">The reproduction report</a>: every executed notebook on one '
                   f'page, with the run\'s machine, commit and headline numbers.</p>' if report else "")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">',
        "<title>GigaCount course</title>", f"<style>{_INDEX_CSS}</style>", "</head>", "<body>",
        "<h1>GigaCount course</h1>",
        '<p class="gc-meta">Crowd counting with blockwise classification: the GigaCount paper re-implemented '
        "on top of CLIP-EBC, one notebook per subject.</p>",
        f'<p class="gc-meta">{run_line}</p>', report_line,
        "<p>Slides: arrow keys or space to move, <b>S</b> speaker notes, <b>F</b> full screen, <b>Esc</b> "
        "overview. Everything here opens offline except the Colab links.</p>",
        '<ol class="gc-course">', *items, "</ol>",
        f'<p class="gc-meta">Built {esc(built)} from commit {esc(_git_commit())}.</p>',
        "</body>", "</html>", ""])


def build_site(out_dir: str | os.PathLike | None = None, *, run: str | os.PathLike | bool | None = None,
               notebook_dir: str | os.PathLike | None = None, reports_dir: str | os.PathLike | None = None,
               mathjax: bool = True) -> Path:
    """Build the course site in ``out_dir`` (default ``site/``); returns the path of ``index.html``.

    ``run``: None for the newest reproduction run under ``reports_dir`` (default ``reports/``) if
    any, a run folder, or False for the committed notebooks only. ``mathjax=False`` leaves LaTeX as
    its ``$...$`` source and copies no MathJax.
    """
    out = Path(out_dir) if out_dir else REPO_ROOT / "site"
    sources = notebook_sources(run, notebook_dir=notebook_dir, reports_dir=reports_dir)
    build_slides(out / "slides", sources=sources, mathjax=mathjax)
    import nbformat

    entries = []
    for source in sources:
        nb = nbformat.read(str(source.path), as_version=4)
        entry = {"source": source, "title": _notebook_title(nb, source.name), "outline": notebook_outline(nb),
                 "colab": colab_url(nb), "page": page_name(source), "deck": deck_name(source)}
        links = [('<a href="../index.html">Course index</a>'),
                 f'<a href="../slides/{html.escape(entry["deck"])}">Slides</a>']
        if entry["colab"]:
            links.append(f'<a href="{html.escape(entry["colab"])}">Open in Colab</a>')
        state = (html.escape(source.label) if source.executed else
                 '<span class="gc-unexecuted">Built from the unexecuted notebook: no outputs.</span>')
        nav = f'<nav class="gc-nav">{" ".join(links)} {state}</nav>'
        render_page(source, out / "notebooks" / entry["page"], nav_html=nav,
                    mathjax_url=f"../slides/{MATHJAX_FOLDER}/{MATHJAX_ENTRY}" if mathjax else None)
        entries.append(entry)
    run_dir = next((s.run for s in sources if s.run is not None), None)
    if run_dir is None and run not in (None, False, True):
        run_dir = Path(run)
    report = None
    stale = out / "report.html"
    if run_dir is not None and (run_dir / "report.html").is_file():
        shutil.copyfile(run_dir / "report.html", stale)
        report = "report.html"
    elif stale.exists():
        stale.unlink()  # a report of an earlier build would not match these pages
    built = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    index = atomic_write_bytes(out / "index.html",
                               _index_html(entries, run=run_dir, report=report, built=built).encode("utf-8"))
    log.info("course site written to %s", index)
    return index
