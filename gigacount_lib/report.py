"""One self-contained HTML report from executed notebooks (used by :mod:`gigacount_lib.reproduce`).

:func:`build_report` converts each notebook with nbconvert's ``HTMLExporter`` (the ``lab`` template,
``embed_images=True`` so that images referenced from Markdown become ``data:`` URIs; plot outputs
are ``data:`` URIs already), keeps the template's inline CSS and the body of each notebook, and
writes one page: a header (run, commit, machine, headline numbers from the manifest), a generated
table of contents (each notebook and its level-1/2 headings) and the notebooks in order.

Opens offline: the page loads nothing from the network. The ``lab`` template would load require.js,
MathJax and Mermaid from cdnjs; those ``<script>`` tags are left out (no notebook here has widgets or
Mermaid diagrams), as are remote images (the Colab badge is removed; any other remote image is
replaced by its alt text). Without MathJax, LaTeX in Markdown shows as its ``$...$`` source; pass
``mathjax_url`` (a CDN URL, or a local copy of MathJax 2) to typeset it, which then needs that URL.
Element ids are prefixed per notebook (``nb01-...``) so that anchors stay unique in the one page.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from .utils import atomic_write_bytes

__all__ = ["notebook_fragment", "build_report", "HEADLINE_KEYS"]

# The headline numbers shown in the report header, in this order (from manifest["headline"]["runs"]).
HEADLINE_KEYS = ("status", "test_mae", "test_rmse", "trivial_mae", "mae_ratio_to_trivial", "global_step",
                 "train_seconds", "seed")

_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.S)
_HEADING = re.compile(r'<h([12]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)
_REMOTE_IMG = re.compile(r'<img\b[^>]*\bsrc="(?:https?:)?//[^"]*"[^>]*>', re.S)
_ALT = re.compile(r'\balt="([^"]*)"')
_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")

_REPORT_CSS = """
body.jp-Notebook { padding: 0 2em; }
.gc-header { max-width: 1100px; margin: 1.5em auto 0 auto; font-family: system-ui, sans-serif; }
.gc-header table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
.gc-header td, .gc-header th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
nav.gc-toc { font-family: system-ui, sans-serif; border: 1px solid #ccc; padding: 0.5em 1.5em; }
nav.gc-toc ol { margin: 0.3em 0; } nav.gc-toc li { margin: 0.15em 0; }
.gc-failed { color: #b00020; font-weight: bold; }
section.gc-notebook { border-top: 3px solid #666; margin-top: 2.5em; padding-top: 0.5em; }
.gc-notebook-title { font-family: system-ui, sans-serif; color: #555; font-size: 0.9em; }
"""


def _strip_tags(text: str) -> str:
    text = re.sub(r'<a class="anchor-link"[^>]*>.*?</a>', "", text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def notebook_fragment(path: str | os.PathLike, prefix: str, *, image_dir: str | os.PathLike | None = None,
                      mathjax_url: str | None = None) -> dict[str, Any]:
    """One executed notebook as HTML parts: ``body`` (ids prefixed with ``prefix``), ``styles`` (the
    template's inline CSS), ``headings`` (``(level, id, text)``), ``title`` and ``mathjax`` (the
    script block, only when ``mathjax_url`` is given).

    Relative Markdown images are read from ``image_dir`` (default: the notebook's folder) and embedded.
    """
    import nbformat
    from nbconvert import HTMLExporter

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:  # the Colab badge is a remote image and means nothing in a report
        if cell.cell_type == "markdown":
            cell.source = _BADGE.sub("", cell.source).strip()
    nb.cells = [c for c in nb.cells if c.cell_type != "markdown" or c.source]
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    if mathjax_url:
        exporter.mathjax_url = mathjax_url
    resources = {"metadata": {"path": str(Path(image_dir) if image_dir else path.parent), "name": path.stem}}
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    head, _, rest = page.partition("</head>")
    start, end = rest.find("<main>"), rest.rfind("</main>")
    if start < 0 or end < 0:
        raise ValueError(f"{path}: nbconvert's lab template gave no <main> element; cannot build the report")
    body = rest[start + len("<main>"):end]

    def remote_image(match: re.Match) -> str:
        alt = _ALT.search(match.group(0))
        return f'<span class="gc-remote-image">[{alt.group(1) if alt else "remote image"}]</span>'

    body = _REMOTE_IMG.sub(remote_image, body)
    body = re.sub(r'\bid="([^"]*)"', lambda m: f'id="{prefix}-{m.group(1)}"', body)
    body = re.sub(r'\bhref="#([^"]*)"', lambda m: f'href="#{prefix}-{m.group(1)}"', body)
    headings = [(int(level), ident, _strip_tags(text)) for level, ident, text in _HEADING.findall(body)]
    title = next((text for level, _, text in headings if level == 1), path.stem)
    mathjax = ""
    if mathjax_url:
        m = re.search(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", head, re.S)
        mathjax = m.group(0) if m else f'<script src="{html.escape(mathjax_url)}"></script>'
    return {"body": body, "styles": _STYLE.findall(head), "headings": headings, "title": title, "mathjax": mathjax}


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return ""
    return str(value)


def _header_html(title: str, manifest: dict | None) -> str:
    parts = [f'<div class="gc-header"><h1>{html.escape(title)}</h1>']
    if manifest:
        git = manifest.get("git", {})
        machine = manifest.get("machine", {})
        info = [("run", manifest.get("run")), ("preset", manifest.get("preset")),
                ("data", manifest.get("data")), ("device", manifest.get("parameters", {}).get("device")),
                ("seed", manifest.get("parameters", {}).get("seed")),
                ("git commit", f"{git.get('commit', '?')}{' (uncommitted changes)' if git.get('dirty') else ''}"),
                ("machine", machine.get("summary")), ("started", manifest.get("started")),
                ("wall time", f"{manifest.get('wall_seconds', 0):.0f} s")]
        parts.append(_table([(k, v) for k, v in info if v is not None]))
        runs = (manifest.get("headline") or {}).get("runs") or []
        if runs:
            parts.append("<h3>Headline numbers (training runs the notebooks wrote)</h3>")
            parts.append(_table([[r.get("path")] + [r.get(k) for k in HEADLINE_KEYS] for r in runs],
                                ["run folder", *HEADLINE_KEYS]))
        extra = (manifest.get("headline") or {}).get("notebooks") or {}
        if extra:
            parts.append("<h3>Numbers the notebooks reported (headline*.json)</h3>")
            parts.append(_table([(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in extra.items()]))
        if manifest.get("data_label"):
            parts.append(f"<p>{html.escape(manifest['data_label'])}</p>")
    parts.append("</div>")
    return "".join(parts)


def build_report(notebooks: Sequence[str | os.PathLike], out_path: str | os.PathLike, *,
                 title: str = "GigaCount course: reproduction report", manifest: dict | None = None,
                 image_dirs: Sequence[str | os.PathLike | None] | None = None,
                 statuses: Sequence[str] | None = None, mathjax_url: str | None = None) -> Path:
    """Write one self-contained HTML page holding ``notebooks`` (executed ``.ipynb``) in order.

    Args:
        notebooks: executed notebooks, in report order.
        out_path: the ``.html`` file, written atomically.
        title: the page title.
        manifest: :mod:`gigacount_lib.reproduce`'s manifest, shown in the header (optional).
        image_dirs: per notebook, where its relative Markdown images live (default: its folder).
        statuses: per notebook, ``"ok"``/``"failed"``/... shown in the table of contents.
        mathjax_url: load MathJax from here to typeset LaTeX (the page then needs that URL).
    """
    notebooks = [Path(p) for p in notebooks]
    if not notebooks:
        raise ValueError("build_report: no notebooks to put in the report")
    image_dirs = list(image_dirs) if image_dirs is not None else [None] * len(notebooks)
    statuses = list(statuses) if statuses is not None else ["ok"] * len(notebooks)
    fragments = []
    for i, path in enumerate(notebooks):
        match = re.match(r"(\d+)", path.name)
        prefix = f"nb{match.group(1) if match else i + 1}"
        fragments.append((prefix, path, notebook_fragment(path, prefix, image_dir=image_dirs[i],
                                                          mathjax_url=mathjax_url)))
    toc = ['<nav class="gc-toc" id="toc"><h2>Contents</h2><ol>']
    for (prefix, path, frag), status in zip(fragments, statuses):
        flag = "" if status == "ok" else f' <span class="gc-failed">({html.escape(status)})</span>'
        toc.append(f'<li><a href="#{prefix}">{html.escape(path.stem)}: {html.escape(frag["title"])}</a>{flag}')
        subs = [h for h in frag["headings"] if h[0] == 2]
        if subs:
            toc.append("<ol>" + "".join(f'<li><a href="#{ident}">{html.escape(text)}</a></li>'
                                        for _, ident, text in subs) + "</ol>")
        toc.append("</li>")
    toc.append("</ol></nav>")
    sections = []
    for (prefix, path, frag), status in zip(fragments, statuses):
        note = "" if status == "ok" else f' <span class="gc-failed">{html.escape(status)}</span>'
        sections.append(f'<section class="gc-notebook" id="{prefix}"><p class="gc-notebook-title">'
                        f'{html.escape(path.name)}{note} · <a href="#toc">contents</a></p>{frag["body"]}</section>')
    styles = "\n".join(fragments[0][2]["styles"])
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8" />',
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">',
        f"<title>{html.escape(title)}</title>", styles, f"<style>{_REPORT_CSS}</style>",
        fragments[0][2]["mathjax"], "</head>",
        '<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">',
        _header_html(title, manifest), '<main>', "".join(toc), *sections, "</main>", "</body>", "</html>", ""])
    return atomic_write_bytes(out_path, page.encode("utf-8"))
