"""Notebook 05 (training, resume, predict) executes headless with quick parameters (the cpu-quick preset)."""
from __future__ import annotations

import pytest
from conftest import run_notebook_and_check


@pytest.mark.notebook
def test_notebook_05_trains_resumes_and_predicts(tmp_path):
    text = run_notebook_and_check("05_training_colab_t4.ipynb", tmp_path, ("05_training_curves",))
    assert "preset cpu-quick" in text and "test MAE" in text
    assert "completed after" in text  # the resume cell found the finished run
    predictions = tmp_path / "figures" / "05_predictions"
    assert (predictions / "counts.csv").is_file() and len(list(predictions.glob("*_density.png"))) == 2
