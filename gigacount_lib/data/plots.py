"""Figures of the data subject (notebook 01): annotated samples, density maps and count histograms.

Each function draws on what it is given, an ``ax`` (one panel) or a ``fig`` (several panels, created
on it), and returns it; sizing, layout and saving are the caller's (see
:func:`gigacount_lib.viz.save_figure`). The generic image, point and map helpers are in
:mod:`gigacount_lib.viz`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..viz import show_image, show_map, show_points

__all__ = ["plot_annotated_sample", "plot_density_maps", "plot_count_histogram", "plot_block_count_histogram"]


def plot_annotated_sample(fig, image, points, meta: dict, zoom: int = 3):
    """The image with its head annotations, and a zoom into the far (top) part of the crowd.

    The zoom box is ``1/zoom`` of the image in each direction, starts at the highest annotated head
    (kept inside the image) and at a third of the width; it is outlined in yellow on the left panel.
    ``image`` is a ``(3, H, W)`` tensor and ``points`` ``(N, 2)`` ``(x, y)`` as a reader returns them,
    ``meta`` the reader's (``size``, ``name``, ``count``). Returns ``fig``.
    """
    import matplotlib.patches as patches

    pts = points.detach().cpu().numpy() if hasattr(points, "detach") else np.asarray(points, np.float32)
    H, W = meta["size"]
    h, w = H // zoom, W // zoom
    top = int(pts[:, 1].min()) if len(pts) else 0
    y0 = max(0, min(top, H - h))
    x0 = W // 3
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [4, 3]})
    show_image(axes[0], image, f"{meta['name']}: {meta['count']} heads")
    show_points(axes[0], pts, size=5)
    axes[0].add_patch(patches.Rectangle((x0, y0), w, h, fill=False, color="yellow", lw=1.5))
    show_image(axes[1], image[:, y0:y0 + h, x0:x0 + w], "zoom (yellow box)")
    inside = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + w) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + h)
    show_points(axes[1], pts[inside] - np.array([x0, y0], pts.dtype), size=14)
    return fig


def plot_density_maps(fig, image, points, maps: Mapping[str, object], title: str, quantile: float = 0.995):
    """The image with its points, then one panel per density map with its sum in the title.

    ``maps`` is ``{title: (H, W) map}``; each colour scale stops at the ``quantile`` of the map's
    positive values, so that a few sharp peaks do not hide the rest. Returns ``fig``.
    """
    axes = fig.subplots(1, 1 + len(maps))
    show_image(axes[0], image, title)
    show_points(axes[0], points, size=3)
    for ax, (name, density) in zip(axes[1:], maps.items()):
        values = density.numpy() if hasattr(density, "numpy") else np.asarray(density)
        vmax = float(np.quantile(values[values > 0], quantile)) if (values > 0).any() else 1.0
        show_map(ax, density, f"{name}\nsum = {float(density.sum()):.2f}", vmax=vmax)
    return fig


def plot_count_histogram(ax, counts: Mapping[str, np.ndarray], bins: int = 30, title: str = "per-image counts"):
    """Histogram of heads per image, one bar series per split (``{"train": counts, ...}``). Returns ``ax``."""
    edges = np.linspace(0, max(c.max() for c in counts.values()) + 1, bins)
    ax.hist(list(counts.values()), bins=edges, label=list(counts), color=[f"C{i}" for i in range(len(counts))])
    ax.set_xlabel("heads per image")
    ax.set_ylabel("images")
    ax.legend()
    ax.set_title(title)
    return ax


def plot_block_count_histogram(ax, histogram, title: str = "per-block counts: long-tailed, dominated by 0"):
    """Number of blocks per block count, on a log scale, for a
    :class:`gigacount_lib.binning.CountHistogram` (e.g. from ``binning.block_count_histogram``);
    only counts seen in at least one block get a bar. Returns ``ax``."""
    observed = np.flatnonzero(histogram.frequencies)
    ax.bar(observed, np.asarray(histogram.frequencies)[observed], width=0.8)
    ax.set_yscale("log")
    size = histogram.block_size
    ax.set_xlabel(f"heads in a {size}x{size} block")
    ax.set_ylabel("number of blocks (log scale)")
    ax.set_title(title)
    return ax
