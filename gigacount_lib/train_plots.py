"""Figures of a training run (notebook 05): loss terms and evaluation curves from a run's ``log.csv``."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_log", "plot_training_curves"]


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
