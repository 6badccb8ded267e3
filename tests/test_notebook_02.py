"""Notebook 02 (blockwise binning) runs end to end with quick parameters."""
from __future__ import annotations

import json

import pytest
from conftest import run_notebook_quick


@pytest.mark.notebook
def test_notebook_02_runs(tmp_path):
    out = run_notebook_quick("02_blockwise_binning.ipynb", tmp_path)
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    figures = tmp_path / "figures"
    for name in ("02_block_count_histograms", "02_bins_and_class_balance_synthetic",
                 "02_quantisation_error_synthetic"):
        assert (figures / f"{name}.png").is_file(), name
    # the histogram and the bin configuration it wrote load back
    from gigacount_lib.binning import BinConfig, CountHistogram

    hist = CountHistogram.load(figures / "02_synthetic_counts_8.json")
    assert hist.block_size == 8 and hist.total > 0
    assert BinConfig.load(figures / "02_synthetic_reduction_8.json").reduction == 8


@pytest.mark.notebook
def test_notebook_02_runs_without_reference_data(tmp_path, monkeypatch):
    """Without ``../shared/reference`` (e.g. on Colab) the notebook still runs and says so."""
    monkeypatch.setenv("GIGACOUNT_REFERENCE", "none")  # the kernel inherits the environment
    out = run_notebook_quick("02_blockwise_binning.ipynb", tmp_path)
    text = out.read_text()
    assert "../shared/reference not found" in text
    assert not (tmp_path / "figures" / "02_bins_and_class_balance_qnrf.png").exists()
    assert (tmp_path / "figures" / "02_quantisation_error_synthetic.png").is_file()
