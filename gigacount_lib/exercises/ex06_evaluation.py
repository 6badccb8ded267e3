"""Notebook 06's exercises: count metrics, top-label ECE, and a variant against its reference over seeds."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..ablation import AXES, versus_reference
from ..calibration import expected_calibration_error
from ..evaluate import count_metrics
from ._check import Case, CheckResult, run_check

__all__ = ["solution_count_errors", "check_count_errors", "solution_top_label_ece", "check_top_label_ece",
           "solution_versus_reference", "check_versus_reference"]


# ------------------------------------------------------------------------------ 1. MAE, RMSE, NAE
def solution_count_errors(pred, true) -> dict[str, float]:
    """``mae``, ``rmse`` and ``nae`` (mean ``|error| / true`` over the images with ``true > 0``; NaN if none)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    err = pred - true
    positive = true > 0
    nae = float(np.mean(np.abs(err[positive]) / true[positive])) if positive.any() else math.nan
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))), "nae": nae}


def _metric_cases() -> list[Case]:
    def expected(pred, true):
        m = count_metrics(pred, true)
        return {k: m[k] for k in ("mae", "rmse", "nae")}

    inputs = [
        ("four images", [10.0, 52.0, 98.0, 7.5], [12.0, 50.0, 110.0, 7.0],
         "RMSE is the square root of the mean squared error"),
        ("one overcount on an empty image", [3.0, 40.0, 21.0], [0.0, 44.0, 20.0],
         "NAE skips images whose true count is 0 (it would divide by 0)"),
        ("only empty images: NAE is NaN", [0.5, 2.0], [0.0, 0.0], "no image with true > 0: return math.nan"),
        ("a single image", [100.0], [80.0], ""),
    ]
    return [Case(label, (p, t), expected(p, t), hint) for label, p, t, hint in inputs]


def check_count_errors(answer) -> CheckResult:
    """Compare ``answer(pred, true)`` (a dict) with ``evaluate.count_metrics``."""
    return run_check("check_count_errors", answer, _metric_cases, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------ 2. top-label ECE
def solution_top_label_ece(probs: torch.Tensor, classes: torch.Tensor, n_bins: int = 10) -> float:
    """``sum_m |B_m|/n |acc(B_m) - conf(B_m)|`` over equal-width confidence bins ``(m/M, (m+1)/M]``."""
    conf, pred = probs.double().max(dim=1)
    hit = (pred == classes).double()
    index = (torch.ceil(conf * n_bins) - 1).long().clamp(0, n_bins - 1)  # bin m holds (m/M, (m+1)/M]
    ece = 0.0
    for m in range(n_bins):
        inside = index == m
        if inside.any():
            ece += float(inside.double().mean()) * abs(float(hit[inside].mean() - conf[inside].mean()))
    return ece


def _ece_cases() -> list[Case]:
    g = torch.Generator().manual_seed(9)
    probs = torch.distributions.Dirichlet(torch.full((5,), 0.6)).sample((300,))
    probs = (probs * 0.999 + 0.0002).double()  # keep confidences off the bin edges
    classes = torch.multinomial(probs.float(), 1, generator=g).squeeze(1)
    onehot = torch.eye(3, dtype=torch.float64)[torch.tensor([0, 2, 1, 0])]
    inputs = [
        ("300 blocks, 5 bins, labels drawn from the probabilities", probs, classes, 10,
         "weight each confidence bin by its share of the blocks"),
        ("the same with 4 confidence bins", probs, classes, 4, "use n_bins"),
        ("confident and right: ECE 0", onehot, torch.tensor([0, 2, 1, 0]), 10,
         "a confidence of exactly 1.0 belongs to the last bin"),
        ("confident and always wrong: ECE 1", onehot, torch.tensor([1, 0, 0, 2]), 10,
         "the confidence is the largest probability, the hit whether its bin is the true one"),
        ("a single confidence bin", probs, classes, 1, "one bin: |accuracy - mean confidence|"),
    ]
    return [Case(label, (p, c, n), expected_calibration_error(p, c, n), hint) for label, p, c, n, hint in inputs]


def check_top_label_ece(answer) -> CheckResult:
    """Compare ``answer(probs (n, K), classes (n,), n_bins)`` with ``calibration.expected_calibration_error``."""
    return run_check("check_top_label_ece", answer, _ece_cases, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------ 3. a variant against its reference
def solution_versus_reference(variant_maes, reference_maes, z: float = 2.0) -> tuple[float, float, str]:
    """Difference of the means, its standard error ``sqrt(s1^2/n1 + s2^2/n2)`` (``ddof=1``) and a verdict:
    ``"lower"``/``"higher"`` beyond ``z`` standard errors, else ``"no clear difference"`` (also with one seed)."""
    a, b = np.asarray(variant_maes, dtype=np.float64), np.asarray(reference_maes, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, "no clear difference"
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    verdict = ("lower" if diff < 0 else "higher") if abs(diff) > z * se else "no clear difference"
    return diff, se, verdict


def _library_versus(variant_maes, reference_maes) -> tuple[float, float, str]:
    import pandas as pd

    axis = AXES["loss"]
    variant = next(v.name for v in axis.variants if v.name != axis.reference)
    rows = [{"axis": "loss", "variant": name, "status": "completed", "test_mae": mae, "seed": i}
            for name, maes in ((axis.reference, reference_maes), (variant, variant_maes)) for i, mae in enumerate(maes)]
    row = versus_reference(pd.DataFrame(rows)).iloc[0]
    return float(row["difference"]), float(row["standard_error"]), str(row["verdict"])


def _versus_cases() -> list[Case]:
    inputs = [
        ("clearly lower (3 seeds each)", [40.1, 40.6, 39.8], [45.0, 44.2, 45.9],
         "standard error of a difference of means: sqrt(var_a / n_a + var_b / n_b), with ddof=1"),
        ("clearly higher", [52.0, 51.0], [47.0, 47.5], "the difference is variant minus reference"),
        ("within the seed spread", [41.0, 47.0, 44.0], [43.0, 46.0, 40.0], "|difference| must exceed z standard errors"),
        ("one seed on one side: no spread, no verdict", [30.0], [45.0, 44.0],
         "with fewer than 2 seeds the standard error is NaN and the verdict 'no clear difference'"),
    ]
    return [Case(label, (a, b), _library_versus(a, b), hint) for label, a, b, hint in inputs]


def check_versus_reference(answer) -> CheckResult:
    """Compare ``answer(variant_maes, reference_maes)`` with ``ablation.versus_reference``."""
    return run_check("check_versus_reference", answer, _versus_cases, rtol=1e-9, atol=1e-9)
