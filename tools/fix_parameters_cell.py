"""Rewrite the ``parameters`` cell of every notebook to the template's (developer tool)."""
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.notebook_template import PARAMETERS  # noqa: E402

for path in sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb")):
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            if cell.source != PARAMETERS:
                cell.source = PARAMETERS
                nbformat.write(nb, str(path))
                print("updated", path)
