"""Packaging: pyproject and environment.yml agree; the notebooks follow the course contract."""
from __future__ import annotations

import json
import re
import tomllib

import pytest

from conftest import REPO_ROOT
from gigacount_lib.reproduce import NOTEBOOK_PARAMETERS, list_notebooks

# conda names that differ from the PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_packages() -> set[str]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return {_norm(re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0]) for dep in data["project"]["dependencies"]}


def _environment_packages() -> set[str]:
    names = set()
    text = (REPO_ROOT / "environment.yml").read_text()
    body = text.split("dependencies:", 1)[1]  # skip the channels list
    for line in body.splitlines():
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)", line)
        if not m or line.strip().endswith(":"):
            continue
        name = m.group(1)
        if name in {"python", "pip"}:
            continue
        names.add(_norm(CONDA_TO_PYPI.get(name, name)))
    return names


def test_environment_and_pyproject_name_the_same_packages():
    assert _pyproject_packages() == _environment_packages()


def test_design_packages_are_dependencies():
    required = {"jupyterlab", "torch", "torchvision", "timm", "open-clip-torch", "numpy", "scipy",
                "matplotlib", "seaborn", "pandas", "papermill"}
    assert required <= _pyproject_packages()


def test_console_script_is_declared():
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["gigacount"] == "gigacount_lib.cli:main"


NOTEBOOKS = list_notebooks()
# Subjects each notebook must cover (a cheap guard against a notebook losing its core section).
KEY_TERMS = {
    "01": ("UCF-QNRF", "ShanghaiTech", "NWPU", "JHU", "adaptive"),
    "02": ("anchor", "CLIP-EBC", "quantisation"),
    "03": ("ODConv", "stage 4", "text prototype"),
    "04": ("Sinkhorn", "DACE", "synthetic-data", "calibration"),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_contract(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert "colab-badge" in "".join(cells[0]["source"]), "first cell must carry the Colab badge"
    assert cells[1]["cell_type"] == "code" and "find_spec" in "".join(cells[1]["source"]), "second cell: setup"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert tagged[0] is cells[2]
    source = "".join(tagged[0]["source"])
    for name in NOTEBOOK_PARAMETERS:
        assert re.search(rf"^{name}\s*=", source, re.M), f"parameters cell lacks {name}"
    assert "solutions" in NOTEBOOK_PARAMETERS
    assert re.search(r"^solutions\s*=\s*False\b", source, re.M), \
        "solutions must default to False (the exercises check the student's own answers)"
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in cells if c["cell_type"] == "code"), "commit notebooks without outputs"
    text = "".join("".join(c["source"]) for c in cells)
    headings = [c for c in cells if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Exercises")]
    assert len(headings) == 1, "one '## Exercises' section per notebook"
    assert "gigacount_lib.exercises" in text and "if solutions else" in text, "exercises check their answers"
    for term in KEY_TERMS.get(path.name[:2], ()):
        assert term in text, f"{path.name} should discuss {term!r}"
