"""Notebook 02 (blockwise binning) runs end to end with quick parameters."""
from __future__ import annotations

import pytest
from conftest import run_notebook_and_check


@pytest.mark.notebook
def test_notebook_02_runs(tmp_path):
    run_notebook_and_check("02_blockwise_binning.ipynb", tmp_path,
                           ("02_block_count_histograms", "02_bins_and_class_balance_synthetic",
                            "02_quantisation_error_synthetic"))
    figures = tmp_path / "figures"
    # the histogram and the bin configuration it wrote load back
    from gigacount_lib.binning import BinConfig, CountHistogram

    hist = CountHistogram.load(figures / "02_synthetic_counts_8.json")
    assert hist.block_size == 8 and hist.total > 0
    assert BinConfig.load(figures / "02_synthetic_reduction_8.json").reduction == 8


@pytest.mark.notebook
def test_notebook_02_runs_without_reference_data(tmp_path, monkeypatch):
    """Without ``../shared/reference`` (e.g. on Colab) the notebook still runs and says so."""
    monkeypatch.setenv("GIGACOUNT_REFERENCE", "none")  # the kernel inherits the environment
    text = run_notebook_and_check("02_blockwise_binning.ipynb", tmp_path, ("02_quantisation_error_synthetic",))
    assert "../shared/reference not found" in text
    assert not (tmp_path / "figures" / "02_bins_and_class_balance_qnrf.png").exists()
