"""Lecture slides: one reveal.js deck per notebook, built to open offline (``make slides``).

Three parts:

* **Slide types from the cell structure** (:func:`suggested_slide_types`, :func:`apply_slide_types`;
  ``tools/slide_metadata.py`` writes them into the committed notebooks): the title cell and every
  ``##`` heading start a slide, a ``###`` heading a sub-slide (below it, reached with the down arrow),
  a code cell that makes a figure gets a sub-slide of its own, and so does whatever follows such a
  figure, so that a figure is never squeezed under other cells; the setup and parameters cells (and
  papermill's injected parameters) are skipped; everything else continues the slide before it
  (``"-"``). A ``slide_type`` a person set is kept.
* **Which notebook to render** (:func:`notebook_sources`): the executed copy of the newest reproduction
  run (``reports/<run>/NN_name.ipynb``; "newest" is the run whose ``manifest.json`` was written last)
  or a given ``--run DIR``; a notebook that run did not execute falls back to the committed notebook,
  which has no outputs, and is labelled so.
* **The decks** (:func:`render_deck`, :func:`build_slides`): nbconvert's ``SlidesExporter`` with a
  small template on top of its ``reveal`` template that loads reveal.js from a folder beside the decks
  (``reveal.js/``, copied from the ``sphinx-revealjs`` package, which ships reveal.js's ``dist/`` and
  ``plugin/``) with plain ``<script>`` tags, and drops what nbconvert would fetch from a CDN
  (require.js, jQuery, MathJax, Mermaid, the widget manager). Images are embedded as ``data:`` URIs,
  the Colab badge (a remote image) becomes a text link, and in an executed deck a figure cell shows
  its figure only (its code is in the notebook). LaTeX is typeset by MathJax 2, copied beside the
  decks from the ``jupyter-server-mathjax`` package (``mathjax/``).

Keys in a deck: arrows or space to move, ``S`` for the speaker view, ``F`` for full screen, ``Esc``
for the overview.
"""
from __future__ import annotations

import copy
import filecmp
import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .utils import atomic_write_bytes, get_logger

log = get_logger("slides")

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["SLIDE_TYPES", "suggested_slide_types", "apply_slide_types", "missing_slide_types", "makes_figure",
           "NotebookSource", "find_newest_run", "notebook_sources", "reveal_js_source", "copy_reveal_assets",
           "render_deck", "build_slides", "REVEAL_FOLDER", "MATHJAX_FOLDER", "MATHJAX_ENTRY", "mathjax_source",
           "copy_mathjax_assets", "colab_url", "offline_markdown", "strip_remote_images", "deck_name"]

SLIDE_TYPES = ("slide", "subslide", "fragment", "-", "skip", "notes")
REVEAL_FOLDER = "reveal.js"  # beside the decks: <out>/reveal.js/{dist,plugin}
MATHJAX_FOLDER = "mathjax"  # beside the decks: <out>/mathjax/MathJax.js
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"  # the configuration jupyter-server-mathjax ships
MATHJAX_ENTRY = f"MathJax.js?config={MATHJAX_CONFIG}"

_FIGURE_CODE = re.compile(
    r"\bsave_figure\(|\bplt\.(?:subplots|figure|imshow|show)\(|^\s*fig(?:\s*,\s*\w+)*\s*=|\bplot_\w+\(", re.M)
_HEADING = re.compile(r"^(#{1,6})\s+\S")
_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)\s]+)\)")
_REMOTE_IMG = re.compile(r'<img\b[^>]*\bsrc="(?:https?:)?//[^"]*"[^>]*>', re.S)
_ALT = re.compile(r'\balt="([^"]*)"')


# --------------------------------------------------------------------------- slide types
def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: Any) -> list[str]:
    return list((cell.get("metadata") or {}).get("tags") or [])


def _heading_level(cell: Any) -> int:
    """The level of the Markdown heading a cell starts with (0: none)."""
    if cell.get("cell_type") != "markdown":
        return 0
    first = next((line for line in _source(cell).splitlines() if line.strip()), "")
    m = _HEADING.match(first.strip())
    return len(m.group(1)) if m else 0


def _is_skipped(cell: Any) -> bool:
    """The setup cell, the parameters cell and papermill's injected parameters: not lecture material."""
    if cell.get("cell_type") != "code":
        return False
    tags = _tags(cell)
    if "parameters" in tags or "injected-parameters" in tags:
        return True
    src = _source(cell)
    return src.lstrip().startswith("# Setup.") or 'find_spec("gigacount_lib")' in src


def makes_figure(cell: Any) -> bool:
    """A code cell that draws a figure: it has an image output, or its source plots or saves a figure."""
    if cell.get("cell_type") != "code":
        return False
    for out in cell.get("outputs") or []:
        if any(k.startswith("image/") for k in (out.get("data") or {})):
            return True
    return bool(_FIGURE_CODE.search(_source(cell)))


def suggested_slide_types(cells: Sequence[Any]) -> list[str]:
    """The slide type of each cell from the structure of the notebook alone (see the module docstring)."""
    types: list[str] = []
    after_figure = False
    for cell in cells:
        level = _heading_level(cell)
        if _is_skipped(cell):
            types.append("skip")
            continue  # a skipped cell does not end a figure's slide
        if level in (1, 2):
            kind = "slide"
        elif level == 3:
            kind = "subslide"
        elif makes_figure(cell):
            kind = "subslide"
        elif after_figure:
            kind = "subslide"  # keep the figure alone on its slide
        else:
            kind = "-"
        types.append(kind)
        after_figure = makes_figure(cell)
    return types


def _slide_type(cell: Any) -> str | None:
    show = (cell.get("metadata") or {}).get("slideshow")
    return show.get("slide_type") if isinstance(show, dict) else None


def apply_slide_types(nb: Any, *, force: bool = False) -> int:
    """Set ``metadata.slideshow.slide_type`` on the cells of ``nb`` (in place) that have none, or on all
    cells with ``force``. Returns how many cells changed; running it twice changes nothing."""
    cells = nb["cells"]
    changed = 0
    for cell, kind in zip(cells, suggested_slide_types(cells)):
        current = _slide_type(cell)
        if current is not None and not force:
            continue
        if current != kind:
            cell.setdefault("metadata", {}).setdefault("slideshow", {})["slide_type"] = kind
            changed += 1
    return changed


def missing_slide_types(nb: Any) -> list[int]:
    """Indices of the cells without a valid ``slide_type``."""
    return [i for i, c in enumerate(nb["cells"]) if _slide_type(c) not in SLIDE_TYPES]


# --------------------------------------------------------------------------- what to render
@dataclass(frozen=True)
class NotebookSource:
    """One notebook of the course and the file its pages are rendered from.

    ``path`` is the executed copy of a reproduction run when ``executed`` (``status`` is its manifest
    status: ``ok``, or ``failed`` for a partial run), else the committed notebook (``status`` None).
    """

    name: str
    committed: Path
    path: Path
    executed: bool
    status: str | None = None
    run: Path | None = None

    @property
    def label(self) -> str:
        if not self.executed:
            return "unexecuted (the committed notebook, no outputs)"
        note = "" if self.status == "ok" else f", {self.status}: partial output"
        return f"executed in run {self.run.name}{note}"


def find_newest_run(reports_dir: str | os.PathLike | None = None) -> Path | None:
    """The reproduction run under ``reports_dir`` (default ``reports/``) whose manifest was written last."""
    reports = Path(reports_dir) if reports_dir else REPO_ROOT / "reports"
    runs = [p for p in reports.glob("*/manifest.json") if p.is_file()] if reports.is_dir() else []
    if not runs:
        return None
    return max(runs, key=lambda p: (p.stat().st_mtime, p.parent.name)).parent


def _manifest_statuses(run: Path) -> dict[str, str]:
    try:
        manifest = json.loads((run / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: no readable manifest.json (%s); its notebooks count as executed", run, exc)
        return {}
    return {e.get("notebook"): e.get("status") for e in manifest.get("notebooks", []) if isinstance(e, dict)}


def notebook_sources(run: str | os.PathLike | bool | None = None, *, notebook_dir: str | os.PathLike | None = None,
                     reports_dir: str | os.PathLike | None = None) -> list[NotebookSource]:
    """Each numbered notebook with the file to render it from.

    ``run``: None (or True) for the newest run under ``reports_dir`` if there is one, a run folder,
    or False for the committed notebooks only. A notebook the run did not execute (or that was still
    running) is taken from ``notebook_dir`` (default ``notebooks/``).
    """
    from .reproduce import list_notebooks

    committed = list_notebooks(notebook_dir)
    if not committed:
        raise FileNotFoundError(f"no numbered notebooks (NN_*.ipynb) in {notebook_dir or REPO_ROOT / 'notebooks'}")
    if run is None or run is True:
        run_dir = find_newest_run(reports_dir)
    elif run is False:
        run_dir = None
    else:
        run_dir = Path(run)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--run {run_dir}: no such reproduction run folder")
    statuses = _manifest_statuses(run_dir) if run_dir is not None else {}
    sources = []
    for nb in committed:
        executed = run_dir / nb.name if run_dir is not None else None
        status = statuses.get(nb.name, "ok" if not statuses else None)
        if executed is not None and executed.is_file() and status in ("ok", "failed"):
            sources.append(NotebookSource(nb.stem, nb, executed, True, status, run_dir))
        else:
            sources.append(NotebookSource(nb.stem, nb, nb, False))
    return sources


# --------------------------------------------------------------------------- reveal.js
def reveal_js_source() -> Path:
    """reveal.js as the ``sphinx-revealjs`` package ships it (a folder with ``dist/`` and ``plugin/``)."""
    try:
        import sphinx_revealjs
    except ImportError as exc:
        raise RuntimeError("the slides need reveal.js from the sphinx-revealjs package: "
                           "pip install 'sphinx-revealjs>=3.0' (make install does it)") from exc
    root = Path(sphinx_revealjs.__file__).resolve().parent / "_static" / "revealjs"
    if not (root / "dist" / "reveal.js").is_file() or not (root / "plugin" / "notes" / "notes.js").is_file():
        raise RuntimeError(f"{root}: no dist/reveal.js or plugin/notes/notes.js; this sphinx-revealjs "
                           "version lays reveal.js out differently")
    return root


def _copy_files(src: Path, dest: Path, files: Iterable[Path]) -> Path:
    for path in files:
        target = dest / path.relative_to(src)
        if target.is_file() and filecmp.cmp(path, target, shallow=False):
            continue  # already there and equal
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


def copy_reveal_assets(dest: str | os.PathLike) -> Path:
    """Copy reveal.js's ``dist/``, ``plugin/`` and licence into ``dest`` (files already equal are kept)."""
    src = reveal_js_source()
    files = [p for sub in ("dist", "plugin") for p in (src / sub).rglob("*") if p.is_file()]
    return _copy_files(src, Path(dest), files + [p for p in (src / "LICENSE",) if p.is_file()])


def mathjax_source() -> Path:
    """MathJax 2 as the ``jupyter-server-mathjax`` package ships it (``MathJax.js`` and its folders)."""
    try:
        import jupyter_server_mathjax
    except ImportError as exc:
        raise RuntimeError("typesetting LaTeX offline needs MathJax from the jupyter-server-mathjax package: "
                           "pip install jupyter-server-mathjax (make install does it)") from exc
    root = Path(jupyter_server_mathjax.__file__).resolve().parent / "static"
    config = f"config/{MATHJAX_CONFIG.split(',')[0]}.js"
    if not (root / "MathJax.js").is_file() or not (root / config).is_file():
        raise RuntimeError(f"{root}: no MathJax.js or {config}; this jupyter-server-mathjax version differs")
    return root


def copy_mathjax_assets(dest: str | os.PathLike) -> Path:
    """Copy MathJax 2 into ``dest`` (files already equal are kept); load ``dest/`` + :data:`MATHJAX_ENTRY`."""
    src = mathjax_source()
    return _copy_files(src, Path(dest), [p for p in src.rglob("*") if p.is_file()])


# --------------------------------------------------------------------------- rendering
def colab_url(nb: Any) -> str | None:
    """The Colab link of the notebook's badge (its first cell), if it has one."""
    for cell in nb["cells"][:1]:
        m = _BADGE.search(_source(cell))
        if m:
            return m.group(1)
    return None


def offline_markdown(nb: Any) -> Any:
    """A copy of ``nb`` whose Colab badge (a remote image) is a plain text link."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _BADGE.sub(r"[Open in Colab](\1)", cell.source)
    return nb


def strip_remote_images(body: str) -> str:
    """Replace ``<img>`` tags with a remote ``src`` by their alt text (nothing is fetched)."""
    def alt(match: re.Match) -> str:
        m = _ALT.search(match.group(0))
        return f'<span class="gc-remote-image">[{html.escape(m.group(1) if m else "remote image")}]</span>'

    return _REMOTE_IMG.sub(alt, body)


def _notebook_title(nb: Any, fallback: str) -> str:
    for cell in nb.cells:
        if _heading_level(cell) == 1:
            return next(line for line in cell.source.splitlines() if line.strip()).lstrip("#").strip()
    return fallback


_SLIDES_CSS = """
.reveal .slides section:not(.stack) { height: 100%; overflow-y: auto; box-sizing: border-box; }
.reveal .jp-OutputArea-output img { width: auto; height: 640px; max-width: 100%; object-fit: contain;
  display: block; margin: 0 auto; }  /* a figure fills its slide, small or large */
.reveal .jp-OutputArea-output.jp-RenderedImage { width: 100%; }
.reveal h1 { font-size: 1.9em; } .reveal h2 { font-size: 1.45em; } .reveal h3 { font-size: 1.2em; }
.reveal .jp-RenderedHTMLCommon table { font-size: 0.7em; }
.reveal .gc-remote-image { color: #777; }
"""

# On top of nbconvert's reveal template: reveal.js from a local folder with plain <script> tags (no
# require.js), nothing from a CDN; MathJax only when asked for.
# The blocks both the decks and the site's pages replace in nbconvert's templates: no require.js, no widget
# scripts, MathJax (local) only when asked for, the page's CSS inline.
OFFLINE_HEAD_BLOCKS = """{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- if resources.gigacount.mathjax -%}{{ super() }}
<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], webFont: "STIX-Web",
  imageFont: null}});</script>{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{%- block html_head_css -%}<style type="text/css">{{ resources.gigacount.css }}</style>{%- endblock html_head_css -%}
"""

_SLIDES_TEMPLATE = """{%- extends 'index.html.j2' -%}
""" + OFFLINE_HEAD_BLOCKS + """{% block footer_js %}
<script src="{{ resources.reveal.url_prefix }}/dist/reveal.js"></script>
<script src="{{ resources.reveal.url_prefix }}/plugin/notes/notes.js"></script>
<script>
Reveal.initialize({
  controls: true, progress: true, hash: true, center: false, slideNumber: "c/t",
  transition: "{{ resources.reveal.transition }}", plugins: [RevealNotes],
  width: {{ resources.reveal.width }}, height: {{ resources.reveal.height }}
});
{%- if resources.gigacount.mathjax %}
Reveal.on("slidechanged", function () {
  if (window.MathJax && MathJax.Hub) { MathJax.Hub.Queue(["Rerender", MathJax.Hub, Reveal.getCurrentSlide()]); }
});
{%- endif %}
</script>
{% endblock footer_js %}
"""


def _prepare_deck(nb: Any) -> Any:
    """The notebook as the deck shows it: every cell with a slide type (the suggested one where the
    notebook has none), papermill's injected parameters skipped, a figure cell's code hidden when the
    cell has its figure."""
    nb = offline_markdown(nb)
    suggested = suggested_slide_types(nb.cells)
    for cell, kind in zip(nb.cells, suggested):
        show = cell.metadata.setdefault("slideshow", {})
        if "injected-parameters" in _tags(cell):
            show["slide_type"] = "skip"
        elif show.get("slide_type") not in SLIDE_TYPES:
            show["slide_type"] = kind
        if cell.cell_type == "code" and show["slide_type"] != "skip" and any(
                k.startswith("image/") for out in cell.get("outputs", []) for k in out.get("data", {})):
            cell.metadata.setdefault("transient", {})["remove_source"] = True
    return nb


def render_deck(source: NotebookSource | str | os.PathLike, out_path: str | os.PathLike, *,
                reveal_prefix: str = REVEAL_FOLDER, mathjax_url: str | None = None,
                image_dir: str | os.PathLike | None = None) -> Path:
    """Write one notebook as a reveal.js deck at ``out_path`` (atomically).

    ``reveal_prefix`` is the URL of the reveal.js folder relative to the deck (it must hold ``dist/``
    and ``plugin/``; :func:`copy_reveal_assets`). Relative Markdown images are read from ``image_dir``
    (default: the committed notebook's folder) and embedded.
    """
    import nbformat
    from nbconvert import SlidesExporter

    if not isinstance(source, NotebookSource):
        path = Path(source)
        source = NotebookSource(path.stem, path, path, False)
    nb = _prepare_deck(nbformat.read(str(source.path), as_version=4))
    title = _notebook_title(nb, source.name)
    nb.metadata["title"] = title
    exporter = SlidesExporter(embed_images=True, reveal_url_prefix=reveal_prefix, reveal_theme="white",
                              reveal_transition="none", reveal_width="1280", reveal_height="760",
                              exclude_input_prompt=True, exclude_output_prompt=True,
                              raw_template=_SLIDES_TEMPLATE)
    if mathjax_url:
        exporter.mathjax_url = mathjax_url
    resources = {"metadata": {"path": str(Path(image_dir) if image_dir else source.committed.parent),
                              "name": source.name},
                 "gigacount": {"css": _SLIDES_CSS, "mathjax": bool(mathjax_url)}}
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    return atomic_write_bytes(out_path, strip_remote_images(page).encode("utf-8"))


def deck_name(source: NotebookSource) -> str:
    return f"{source.name}.slides.html"


def build_slides(out_dir: str | os.PathLike | None = None, *, run: str | os.PathLike | bool | None = None,
                 notebook_dir: str | os.PathLike | None = None, reports_dir: str | os.PathLike | None = None,
                 only: Iterable[str] | None = None, mathjax: bool = True, mathjax_url: str | None = None,
                 sources: Sequence[NotebookSource] | None = None) -> list[Path]:
    """Render every notebook (or those whose name starts with one of ``only``) to ``out_dir``
    (default ``site/slides``) as ``NN_name.slides.html``, with reveal.js copied into
    ``out_dir/reveal.js`` and MathJax into ``out_dir/mathjax``. Returns the decks.

    ``run``: see :func:`notebook_sources`. ``mathjax=False`` leaves LaTeX as its source;
    ``mathjax_url`` loads MathJax from that URL instead of the local copy (the decks then need it).
    """
    out = Path(out_dir) if out_dir else REPO_ROOT / "site" / "slides"
    if sources is None:
        sources = notebook_sources(run, notebook_dir=notebook_dir, reports_dir=reports_dir)
    if only:
        keys = list(only)
        sources = [s for s in sources if any(s.name.startswith(k) for k in keys)]
        if not sources:
            raise ValueError(f"--only {' '.join(keys)}: no notebook matches")
    copy_reveal_assets(out / REVEAL_FOLDER)
    if mathjax and not mathjax_url:
        copy_mathjax_assets(out / MATHJAX_FOLDER)
        mathjax_url = f"{MATHJAX_FOLDER}/{MATHJAX_ENTRY}"
    decks = []
    for source in sources:
        decks.append(render_deck(source, out / deck_name(source), mathjax_url=mathjax_url if mathjax else None))
        log.info("%s -> %s (%s)", source.path, decks[-1], source.label)
    return decks
