"""Figures for the losses (notebook 04): reliability diagram, transport plan, OT potentials.

The reliability diagram draws :class:`gigacount_lib.calibration.ReliabilityStats` (the statistics are
computed in :mod:`gigacount_lib.calibration`, re-exported by :mod:`gigacount_lib.evaluate`).

Each function draws on the ``ax`` (or, for several panels, the ``fig``) it is given and returns it;
nothing is saved here (use :func:`gigacount_lib.viz.save_figure`).
"""
from __future__ import annotations

import math
from typing import Mapping

from torch import Tensor

from ..calibration import ReliabilityStats
from .ot import DEFAULT_REG, OTResult, ot_gradient

__all__ = ["plot_reliability", "plot_transport_plan", "plot_potentials"]

UNDERFLOW_EXPONENT = 87.3  # exp(-x) is below the smallest normal float32 (1.18e-38) for x > 87.3


def plot_reliability(ax, stats: ReliabilityStats, label: str | None = None, color: str | None = None):
    """Reliability diagram: accuracy per confidence bin (bars) against the diagonal."""
    centres = ((stats.edges[1:] + stats.edges[:-1]) / 2).numpy()
    width = float(stats.edges[1] - stats.edges[0])
    used = stats.count.numpy() > 0
    ax.bar(centres[used], stats.accuracy.numpy()[used], width=width * 0.9, alpha=0.5, color=color,
           edgecolor="black", label=f"{label} (ECE {stats.ece:.3f})" if label else f"ECE {stats.ece:.3f}")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    if stats.kind == "classwise":
        ax.set_xlabel("predicted probability p_k (all bins)")
        ax.set_ylabel("observed frequency of bin k")
    else:
        ax.set_xlabel("confidence (max bin probability)")
        ax.set_ylabel("accuracy")
    return ax


def plot_transport_plan(ax, plan: Tensor, heads: Tensor, centres: Tensor, image_size: tuple[int, int],
                        background: Tensor | None = None, min_weight: float = 0.02):
    """One image's transport plan: a line from head ``i`` to block centre ``j`` per entry ``P_ij``.

    Args:
        plan: ``(N, M)`` transport plan; heads: ``(N, 2)`` ``(x, y)`` px; centres: ``(M, 2)`` block centres.
        image_size: ``(H, W)`` px, the axes' extent.
        background: ``(h, w)`` map drawn under the plan (e.g. the predicted density), or None.
        min_weight: lines with ``P_ij / max P`` at or below this are not drawn; the others have that opacity.
    """
    height, width = image_size
    if background is not None:
        ax.imshow(background.numpy(), extent=(0, width, height, 0), cmap="Greens")
    peak = plan.max()
    for i in range(plan.shape[0]):
        for j in range(plan.shape[1]):
            weight = float(plan[i, j] / peak)
            if weight > min_weight:
                ax.plot([heads[i, 0], centres[j, 0]], [heads[i, 1], centres[j, 1]], color=f"C{i}", alpha=weight,
                        lw=1.5)
    ax.scatter(heads[:, 0], heads[:, 1], c=[f"C{i}" for i in range(len(heads))], s=60, edgecolors="k", zorder=3)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    return ax


def plot_potentials(fig, potentials: Mapping[str, OTResult], density: Tensor, heads: Tensor,
                    grid_size: tuple[int, int], reduction: int, distance: Tensor, reg: float = DEFAULT_REG):
    """Block potentials and OT gradients of image 0, one row of three panels per solver.

    Panels: ``beta - min(beta)`` as a map with the heads, the OT gradient ``d OT / d s`` as a map,
    and ``beta - min(beta)`` against the distance to the nearest head, with a dashed line where the
    published float32 kernel ``exp(-d^2 / reg)`` underflows.

    Args:
        potentials: name -> :class:`OTResult` (e.g. ``{"reference": ..., "exact": ...}``).
        density: ``(B, M)`` unnormalised density the potentials were computed for.
        heads: ``(N, 2)`` ``(x, y)`` px of image 0; grid_size: ``(h, w)``; reduction: block size in px.
        distance: ``(M,)`` px from each block to its nearest head (:func:`~.ot.nearest_head_distance`).
    """
    axes = fig.subplots(len(potentials), 3, squeeze=False)
    underflow = math.sqrt(UNDERFLOW_EXPONENT * reg)
    for row, (name, result) in enumerate(potentials.items()):
        beta = result.beta[0]
        grad = ot_gradient(result.beta, density)[0]
        image = axes[row, 0].imshow((beta - beta.min()).reshape(grid_size).numpy(), cmap="viridis")
        # heads in block coordinates: block k spans [k r, (k+1) r) px and is drawn centred on k
        axes[row, 0].scatter(heads[:, 0] / reduction - 0.5, heads[:, 1] / reduction - 0.5, c="r", s=10)
        axes[row, 0].set_title(f"{name}: beta - min (px²)")
        fig.colorbar(image, ax=axes[row, 0])
        image = axes[row, 1].imshow(grad.reshape(grid_size).numpy(), cmap="coolwarm")
        axes[row, 1].set_title(f"{name}: OT gradient d/ds")
        fig.colorbar(image, ax=axes[row, 1])
        axes[row, 2].scatter(distance.numpy(), (beta - beta.min()).numpy(), s=6)
        axes[row, 2].axvline(underflow, color="k", ls="--", lw=1)
        axes[row, 2].set_xlabel("distance to the nearest head (px)")
        axes[row, 2].set_ylabel("beta - min")
        axes[row, 2].set_title(f"{name}: potential vs distance (dashed: {underflow:.1f} px)")
    return fig
