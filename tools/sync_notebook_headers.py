"""Rewrite the standard opening of every notebook from ``tools/notebook_template.py`` (developer tool).

Updates, in each ``notebooks/NN_*.ipynb``: the Colab badge link (first cell), the setup cell (second
cell) and the cell tagged ``parameters``. Run it after changing ``REPO_SLUG``, ``SETUP`` or
``PARAMETERS`` in the template::

    .venv/bin/python tools/sync_notebook_headers.py
"""
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.notebook_template import PARAMETERS, REPO_SLUG, SETUP  # noqa: E402

BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+/blob/main/notebooks/[^)\s]+")


def sync(path: Path) -> bool:
    nb = nbformat.read(str(path), as_version=4)
    before = [cell.source for cell in nb.cells]
    link = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/main/notebooks/{path.name}"
    nb.cells[0].source = BADGE.sub(link, nb.cells[0].source)
    nb.cells[1].source = SETUP
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = PARAMETERS
    changed = before != [cell.source for cell in nb.cells]
    if changed:
        nbformat.write(nb, str(path))
    return changed


if __name__ == "__main__":
    for notebook in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        print(("updated   " if sync(notebook) else "unchanged ") + notebook.name)
