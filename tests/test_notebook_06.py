"""Notebook 06 (Tables 1-3, error analysis, calibration) executes headless with quick parameters."""
from __future__ import annotations

import json

import pytest
from conftest import run_notebook_and_check

FIGURES = ("06_ablation", "06_error_analysis", "06_best_worst", "06_reliability")


@pytest.mark.notebook
def test_notebook_06_tables_error_analysis_and_calibration(tmp_path):
    text = run_notebook_and_check("06_evaluation_and_ablation.ipynb", tmp_path, FIGURES)
    # honest labels and the published side kept apart from ours
    assert "synthetic data, random init, CPU" in text
    assert "Table 1, published: UCF-QNRF" in text and "Table 1, ours" in text and "103.3" in text
    assert "not measured" in text  # Table 2 has no inference time per image
    # Table 3 and the generated claim sentences
    assert "Table 3 (synthetic, 1 tiny epoch per run" in text and "±" in text
    assert "the paper:" in text and "counts:" in text
    assert "the ablation's reference run" in text  # no notebook 05 run under this output_dir
    assert "ECE non-empty blocks" in text and "empty blocks:" in text
    figures = tmp_path / "figures"
    headline = json.loads((figures / "headline_06.json").read_text())
    assert headline["06_test_images"] > 0 and headline["06_test_mae"] >= 0
    assert headline["06_checkpoint_source"] == "the ablation's reference run"
    ablation_dir = figures / "runs" / "06_ablation_cpu-quick"
    assert (ablation_dir / "ablation.csv").is_file() and (ablation_dir / "summary.csv").is_file()
