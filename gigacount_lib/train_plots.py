"""Figures of a training run (notebook 05): loss terms and evaluation curves from a run's ``log.csv``."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_log", "plot_training_curves", "read_recipe_results"]

RECIPE_COLUMNS = ["recipe", "what", "steps", "train_minutes", "test_mae", "test_rmse", "trivial_mae", "ratio",
                  "train_ratio", "nonempty_block_accuracy"]


def read_log(run_dir: str | os.PathLike):
    """The run's ``log.csv`` (one row per epoch) as a pandas DataFrame."""
    import pandas as pd

    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (has the run finished an epoch?)")
    return pd.read_csv(path)


def plot_training_curves(log, fig=None):
    """Left: every ``train_*`` loss term per epoch; middle: learning rate; right: validation MAE/RMSE.

    ``log`` is a DataFrame from :func:`read_log` or a run folder. Returns the figure.
    """
    from .viz import panel_grid

    if not hasattr(log, "columns"):
        log = read_log(log)
    fig, axes = panel_grid(fig, 1, 3, (15, 3.8))
    loss_ax, lr_ax, eval_ax = axes[0]
    terms = [c for c in log.columns if c.startswith("train_") and c not in ("train_seconds", "train_grad_norm")]
    for column in terms:
        loss_ax.plot(log["epoch"], log[column], label=column[len("train_"):])
    loss_ax.set(xlabel="epoch", ylabel="mean over the epoch", title="training loss terms", yscale="log")
    loss_ax.legend(fontsize=8)
    lr_ax.plot(log["epoch"], log["lr"])
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="schedule", yscale="log")
    for column in ("val_mae", "val_rmse"):
        if column in log:
            rows = log[log[column].notna()]
            eval_ax.plot(rows["epoch"], rows[column], marker="o", label=column[len("val_"):].upper())
    eval_ax.set(xlabel="epoch", ylabel="count error", title="selection split")
    if eval_ax.lines:
        eval_ax.legend()
    fig.tight_layout()
    return fig


def read_recipe_results(path: str | os.PathLike):
    """The runs of ``benchmarks/cpu_recipes.py`` (``benchmarks/results/cpu_recipes.json``) as a DataFrame.

    One row per run, in the order they were run: the recipe, what it changes, the optimiser steps, the
    training minutes, the test MAE/RMSE, the mean-count predictor's MAE, the ratio of the two, the same
    ratio on the run's own training images where it was measured (``train_ratio``, ``--train-fit``), and
    the share of test blocks holding a head that the model puts in the right bin.
    """
    import json

    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no recipe results; run `python benchmarks/cpu_recipes.py` in a checkout")
    try:
        runs = json.loads(path.read_text())["runs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a cpu_recipes.py results file ({exc})") from exc
    table = pd.DataFrame(runs)
    return table[[c for c in RECIPE_COLUMNS if c in table.columns]]
