"""Density maps and block-count maps built from head annotations.

Points are always ``(x, y)`` in pixels, shape ``(N, 2)``; image sizes are ``(H, W)``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["check_points", "block_count_map", "block_count_maps"]


def check_points(points: Tensor, image_size: tuple[int, int], *, what: str = "points",
                 tolerance: float = 1e-3) -> Tensor:
    """Validate an ``(N, 2)`` point tensor against an image of size ``(H, W)``.

    Raises ``ValueError`` naming ``what`` for a wrong shape, NaN/inf, or points outside the image.
    Returns the points as a float tensor.
    """
    points = torch.as_tensor(points)
    if points.ndim != 2 or points.shape[-1] != 2:
        raise ValueError(f"{what}: expected an (N, 2) tensor of (x, y), got shape {tuple(points.shape)}")
    points = points.float() if not points.is_floating_point() else points
    if points.numel() == 0:
        return points
    if not torch.isfinite(points).all():
        raise ValueError(f"{what}: contains NaN or infinite coordinates")
    height, width = image_size
    outside = ((points[:, 0] < -tolerance) | (points[:, 0] > width + tolerance)
               | (points[:, 1] < -tolerance) | (points[:, 1] > height + tolerance))
    if outside.any():
        first = points[outside][0].tolist()
        raise ValueError(
            f"{what}: {int(outside.sum())} point(s) lie outside the {width}x{height} image "
            f"(first at x={first[0]:.1f}, y={first[1]:.1f}); crop/filter points before computing targets"
        )
    return points


def block_count_map(points: Tensor, image_size: tuple[int, int], block_size: int) -> Tensor:
    """Number of heads in each ``block_size`` x ``block_size`` block.

    Returns a float tensor of shape ``(ceil(H / B), ceil(W / B))``. A point on the right/bottom
    border (``x == W``) is counted in the last block. This is the exact target of blockwise
    classification (no Gaussian smoothing involved).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    height, width = int(image_size[0]), int(image_size[1])
    points = check_points(points, (height, width))
    rows, cols = math.ceil(height / block_size), math.ceil(width / block_size)
    counts = torch.zeros(rows * cols, dtype=torch.float32, device=points.device)
    if points.numel():
        col = (points[:, 0] / block_size).floor().long().clamp_(0, cols - 1)
        row = (points[:, 1] / block_size).floor().long().clamp_(0, rows - 1)
        counts.index_add_(0, row * cols + col, torch.ones_like(points[:, 0], dtype=torch.float32))
    return counts.view(rows, cols)


def block_count_maps(points: Sequence[Tensor], image_size: tuple[int, int], block_size: int) -> Tensor:
    """Batched :func:`block_count_map`: a list of ``(N_i, 2)`` tensors -> ``(B, 1, h, w)``."""
    return torch.stack([block_count_map(p, image_size, block_size) for p in points]).unsqueeze(1)
