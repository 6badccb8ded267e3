"""Notebook 01 (data and density maps) executes headless with quick parameters and writes its figures."""
from __future__ import annotations

import pytest
from conftest import run_notebook_and_check

EXPECTED_FIGURES = ("01_synthetic_grid", "01_annotated_example", "01_density_maps", "01_adaptive_sigma",
                    "01_count_histogram", "01_block_count_histogram")


@pytest.mark.notebook
def test_notebook_01_runs_and_saves_its_figures(tmp_path):
    run_notebook_and_check("01_data_and_density_maps.ipynb", tmp_path, EXPECTED_FIGURES)
