"""Write a course notebook with the standard opening cells (developer tool, not part of the library).

Every notebook starts with: a title + Colab badge (markdown), a setup cell, then the cell tagged
``parameters`` that papermill overrides (``data_root, quick, device, seed, output_dir, solutions``).

Usage from a throwaway script::

    from tools.notebook_template import write_notebook, md, code
    write_notebook("notebooks/01_data_and_density_maps.ipynb", "Data and density maps",
                   [md("## Why ..."), code("from gigacount_lib.data import ...")])

Notebooks are written without outputs.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

REPO_SLUG = "gigacount-course/gigacount"  # GitHub <owner>/<repo> used by the Colab badge and setup cell

SETUP = f'''# Setup. On Colab this installs the course library (Colab keeps its own torch);
# in a local checkout `make install` has already done it.
import importlib.util, subprocess, sys
if importlib.util.find_spec("gigacount_lib") is None:
    if "google.colab" in sys.modules:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "git+https://github.com/{REPO_SLUG}.git"], check=True)
    else:
        sys.path.insert(0, "..")  # source checkout without installation
%matplotlib inline'''

PARAMETERS = '''# Parameters (papermill overrides this cell).
data_root = None  # dataset root in UCF-QNRF layout, or None for the embedded synthetic dataset
quick = True  # True: small and fast (tests, CPU); False: the full reproduction settings
device = "auto"  # "auto", "cpu" or "cuda"
seed = 0  # seeds Python, NumPy and torch
output_dir = "../figures"  # where figures are saved
solutions = False  # True: check the reference solutions instead of your own answers'''


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str):
    return nbformat.v4.new_code_cell(text.strip("\n"))


def write_notebook(path: str, title: str, cells: list, intro: str = "") -> Path:
    path = Path(path)
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{REPO_SLUG}/blob/main/notebooks/{path.name})")
    head = [md(f"# {title}\n\n{badge}\n\n{intro}".rstrip()), code(SETUP)]
    params = code(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook()
    nb.cells = head + [params] + list(cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
