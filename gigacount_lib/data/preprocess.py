"""Preprocessing a sample: the resize rule and the cleaning of its points.

Each image is resized, aspect ratio kept, so that its longer side is at most ``max_size`` and its
shorter side at least ``min_size`` (``max_size`` wins when both cannot hold); points are rescaled
with the image, and points outside the image or with NaN/inf coordinates are dropped.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["target_size", "clean_points", "scale_points", "resize_image", "resize_sample"]


def target_size(size: tuple[int, int], min_size: int | None = None,
                max_size: int | None = None) -> tuple[int, int]:
    """Size ``(H', W')`` after the resize rule: shorter side >= ``min_size``, longer <= ``max_size``.

    The scale is ``s = max(1, min_size / min(H, W))``, then ``s = min(s, max_size / max(H, W))``
    (so ``max_size`` wins when an extreme aspect ratio makes both impossible); ``H' = round(s H)``.
    Without limits the size is unchanged.
    """
    height, width = int(size[0]), int(size[1])
    if min_size is not None and max_size is not None and min_size > max_size:
        raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
    scale = 1.0
    if min_size is not None and min(height, width) < min_size:
        scale = min_size / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    if scale == 1.0:
        return height, width
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if max_size is not None:
        new_h, new_w = min(new_h, max_size), min(new_w, max_size)
    return new_h, new_w


def clean_points(points: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """Drop non-finite points and points outside ``[0, W] x [0, H]``; pull border points inside.

    Returns ``(points float32 (M, 2), n_nonfinite, n_outside)``. Points exactly on the right/bottom
    border are moved to just inside (``x = W - 1e-3``) so that half-open checks downstream
    (``SanitizeKeyPoints`` keeps ``0 <= x < W``) agree with this one.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    height, width = size
    finite = np.isfinite(pts).all(axis=1)
    inside = finite.copy()
    inside[finite] = ((pts[finite, 0] >= 0) & (pts[finite, 0] <= width)
                      & (pts[finite, 1] >= 0) & (pts[finite, 1] <= height))
    n_nonfinite, n_outside = int((~finite).sum()), int((finite & ~inside).sum())
    kept = pts[inside]
    kept[:, 0] = np.minimum(kept[:, 0], width - 1e-3)
    kept[:, 1] = np.minimum(kept[:, 1], height - 1e-3)
    return kept.astype(np.float32), n_nonfinite, n_outside


def scale_points(points: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """``(x, y) -> (x W'/W, y H'/H)`` in float64 for ``size = (H, W)`` and ``new_size = (H', W')``
    (continuous coordinates: a point on the border stays on the border)."""
    factors = np.array([new_size[1] / size[1], new_size[0] / size[0]])
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) * factors


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize a PIL image to ``size = (H', W')`` (bicubic; PIL filters over the whole footprint
    when shrinking, i.e. antialiased). Returns the image itself when the size already matches."""
    if (image.height, image.width) == tuple(size):
        return image
    return image.resize((size[1], size[0]), Image.Resampling.BICUBIC)


def resize_sample(image: Image.Image, points: np.ndarray, size: tuple[int, int]
                  ) -> tuple[Image.Image, np.ndarray]:
    """Resize a PIL image to ``size = (H', W')`` (bicubic, antialiased) and scale the points by
    ``(W'/W, H'/H)``; returns the image and float64 ``(N, 2)`` points."""
    return resize_image(image, size), scale_points(points, (image.height, image.width), size)

