"""Plotting helpers shared by the notebooks (matplotlib only; seaborn styling is optional).

Subject-specific plots live in a ``plots.py`` beside their subject (``data/``, ``binning/``,
``models/``, ``losses/``). The convention: a single-panel plot takes an ``ax`` and returns it; a
multi-panel figure takes an optional ``fig`` (one is made when it is None) and returns it. This
module holds the shared pieces: saving figures, a panel grid, and drawing images, points or maps.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_figure", "panel_grid", "to_numpy_image", "show_image", "show_points", "show_map"]


def save_figure(fig, output_dir: str | os.PathLike | None, name: str, dpi: int = 150) -> Path | None:
    """Save ``fig`` as ``<output_dir>/<name>.png`` (folder created); ``None`` output_dir saves nothing."""
    if output_dir is None:
        return None
    path = Path(output_dir) / (name if name.endswith(".png") else f"{name}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def panel_grid(fig, rows: int, cols: int, figsize: tuple[float, float]):
    """``(fig, axes)`` with an ``rows x cols`` array of axes on ``fig`` (a new figure of ``figsize`` if None)."""
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)


def to_numpy_image(image) -> np.ndarray:
    """A ``(3, H, W)`` tensor in [0, 1], an ``(H, W, 3)`` array, or a PIL image -> ``(H, W, 3)`` float array."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = np.transpose(image, (1, 2, 0))
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    return np.clip(image, 0.0, 1.0)


def show_image(ax, image, title: str | None = None):
    ax.imshow(to_numpy_image(image))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_points(ax, points, color: str = "red", size: float = 6.0, **kwargs):
    """Scatter ``(N, 2)`` ``(x, y)`` points on an axis already showing the image."""
    pts = points.detach().cpu().numpy() if hasattr(points, "detach") else np.asarray(points)
    if len(pts):
        ax.scatter(pts[:, 0], pts[:, 1], s=size, c=color, linewidths=0, **kwargs)
    return ax


def show_map(ax, values, title: str | None = None, cmap: str = "jet", colorbar: bool = True, **kwargs):
    """Show a 2-D map (density, block counts, attention) with an optional colour bar."""
    arr = values.detach().cpu().float().numpy() if hasattr(values, "detach") else np.asarray(values)
    arr = np.squeeze(arr)
    im = ax.imshow(arr, cmap=cmap, **kwargs)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return im
