"""Figures for notebook 02: block-count histograms, bin layouts with their anchors, class balance.

Each function draws on the matplotlib ``Axes`` it is given and returns it, so a notebook composes
panels and saves the figure itself (:func:`gigacount_lib.viz.save_figure`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .anchors import class_shares
from .config import BinConfig
from .histogram import CountHistogram

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_count_histograms", "plot_bins", "plot_class_balance"]


def plot_count_histograms(ax: "Axes", histograms: Mapping[str, "CountHistogram | Mapping"], *, share: bool = True,
                          log: bool = True, max_count: int | None = None) -> "Axes":
    """Share (or number) of blocks per head count, one line per histogram, log-scaled y.

    Different datasets have very different numbers of blocks, so shares make them comparable.
    """
    for label, h in histograms.items():
        hist = CountHistogram.coerce(h)
        y = hist.shares() if share else hist.as_array()
        x = hist.counts()
        keep = y > 0
        if max_count is not None:
            keep &= x <= max_count
        ax.plot(x[keep], y[keep], marker="o", markersize=3, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("heads in a block (count c)")
    ax.set_ylabel("share of blocks" if share else "number of blocks")
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_bins(ax: "Axes", configs: Mapping[str, BinConfig], max_count: int | None = None) -> "Axes":
    """Each configuration as a row of intervals (one colour per bin) with its anchors marked."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20")
    rows = list(configs.items())
    top = max_count if max_count is not None else max(int(c.truncation) for _, c in rows) + 2
    for r, (label, cfg) in enumerate(rows):
        for k, ((lo, hi), a) in enumerate(zip(cfg.bins, cfg.anchor_points)):
            right = top + 0.5 if math.isinf(hi) else hi + 0.5
            ax.barh(r, right - (lo - 0.5), left=lo - 0.5, height=0.6, color=cmap(k % 20), edgecolor="black",
                    linewidth=0.5)
            ax.plot([a], [r], marker="|", color="black", markersize=14)
        ax.annotate(f"K={cfg.num_bins}", (top + 0.6, r), va="center", fontsize="small")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlim(-0.5, top + 2)
    ax.set_xlabel("heads in a block (| = anchor point)")
    ax.invert_yaxis()
    return ax


def plot_class_balance(ax: "Axes", configs: Mapping[str, BinConfig], histogram: "CountHistogram | Mapping",
                       log: bool = True) -> "Axes":
    """Share of training blocks per class for each configuration (grouped bars, log y)."""
    n = len(configs)
    width = 0.8 / max(n, 1)
    for i, (label, cfg) in enumerate(configs.items()):
        shares = class_shares(cfg.bins, histogram)
        x = np.arange(len(shares)) + (i - (n - 1) / 2) * width
        ax.bar(x, np.where(shares > 0, shares, np.nan), width=width, label=f"{label} (K={cfg.num_bins})")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("class index k")
    ax.set_ylabel("share of training blocks")
    ax.legend(fontsize="small")
    return ax
