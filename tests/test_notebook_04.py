"""Notebook 04 (losses, OT, calibration, DACE vs hybrid) executes headless with quick parameters."""
from __future__ import annotations

import re

import pytest
from conftest import run_notebook_and_check

NAME = "04_loss_derivation.ipynb"
EXPECTED_FIGURES = ("04_transport_plan_reg", "04_exact_vs_reference", "04_reliability_lprob")


@pytest.mark.notebook
def test_notebook_04_runs_and_its_worked_examples_agree(tmp_path):
    text = run_notebook_and_check(NAME, tmp_path, EXPECTED_FIGURES)
    # the hand calculations printed next to the library's values
    ce = re.search(r"L_CE by hand ([\d.]+)\s+library ([\d.]+)", text)
    prob = re.search(r"L_Prob by hand ([\d.]+)\s+library ([\d.]+)", text)
    assert ce and prob
    assert float(ce.group(1)) == pytest.approx(2.0715, abs=1e-4) == float(ce.group(2))
    assert float(prob.group(1)) == pytest.approx(1.06, abs=1e-4) == float(prob.group(2))
    assert "QUICK: not meaningful" in text
