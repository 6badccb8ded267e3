"""Notebook 01 (data and density maps) executes headless with quick parameters and writes its figures."""
from __future__ import annotations

import json

import pytest
from conftest import run_notebook_quick

EXPECTED_FIGURES = ("01_synthetic_grid", "01_annotated_example", "01_density_maps", "01_adaptive_sigma",
                    "01_count_histogram", "01_block_count_histogram")


@pytest.mark.notebook
def test_notebook_01_runs_and_saves_its_figures(tmp_path):
    executed = run_notebook_quick("01_data_and_density_maps.ipynb", tmp_path)
    figures = tmp_path / "figures"
    for name in EXPECTED_FIGURES:
        path = figures / f"{name}.png"
        assert path.is_file(), f"figure {name}.png was not written"
        assert path.stat().st_size > 5_000, f"figure {name}.png looks empty"
    cells = json.loads(executed.read_text())["cells"]
    errors = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
