"""Density maps and block-count maps built from head annotations.

Points are always ``(x, y)`` in pixels, shape ``(N, 2)``; image sizes are ``(H, W)``. Coordinates
are *continuous*: pixel ``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)`` and its centre is
``(c + 0.5, r + 0.5)``; a head in the last column may have ``x`` up to ``W``.

Three density maps are offered, all of shape ``(H, W)`` and all count-preserving (the map sums to
the number of points inside the image, up to float rounding):

* :func:`point_map` -- one unit of mass in the pixel that contains each head (the "dot map"),
* :func:`gaussian_density_map` -- each head spread by a Gaussian of fixed width ``sigma``,
* :func:`adaptive_density_map` -- the geometry-adaptive kernel of MCNN (Zhang et al., "Single-Image
  Crowd Counting via Multi-Column Convolutional Neural Network", CVPR 2016): head ``i`` gets
  ``sigma_i = beta * dbar_i`` where ``dbar_i`` is the mean distance to its ``k`` nearest heads
  (the paper uses ``beta = 0.3``).

Every Gaussian kernel is truncated at ``truncate * sigma`` and at the image border and then
renormalised so that it sums to exactly one inside the image. Because a 2-D Gaussian on a
rectangular window is separable, the renormalised kernel of head ``i`` is ``g^y_i (g^x_i)^T`` with
``g^x_i`` (length ``W``) and ``g^y_i`` (length ``H``) each summing to one; the whole map is then a
single matrix product ``D = G_y^T G_x`` with ``G_y`` of shape ``(N, H)`` and ``G_x`` of ``(N, W)``,
which is exact, vectorised and needs no per-pixel loop.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..utils import get_logger

__all__ = [
    "check_points", "block_count_map", "block_count_maps", "inside_points", "point_map",
    "gaussian_density_map", "adaptive_sigmas", "adaptive_density_map", "density_map", "sum_pool",
]

_log = get_logger("data.density")


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
    """Batched :func:`block_count_map`: a list of ``(N_i, 2)`` tensors -> ``(B, 1, h, w)``.

    A plain loop over the images, kept simple on purpose: it is the reference that the losses'
    loop-free version (``gigacount_lib.losses.block_counts_padded``, one scatter for the whole
    padded batch) is tested against. Each image is validated, which costs a host sync per image
    on a GPU; training code should use the padded version.
    """
    return torch.stack([block_count_map(p, image_size, block_size) for p in points]).unsqueeze(1)


# --------------------------------------------------------------------------------------------------
# Density maps
# --------------------------------------------------------------------------------------------------
def _as_points(points, what: str = "points") -> Tensor:
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, Tensor) else points)
    if pts.numel() == 0:
        return torch.zeros((0, 2), dtype=torch.float32, device=pts.device)
    if pts.ndim != 2 or pts.shape[-1] != 2:
        raise ValueError(f"{what}: expected an (N, 2) array of (x, y), got shape {tuple(pts.shape)}")
    return pts.to(torch.float32)


def inside_points(points, image_size: tuple[int, int], *, what: str = "points") -> Tensor:
    """Keep the finite points inside ``[0, W] x [0, H]`` (the border itself counts as inside).

    Points with NaN/inf coordinates or outside the image are dropped and their number is logged;
    returns a float32 ``(M, 2)`` tensor with ``M <= N``.
    """
    pts = _as_points(points, what)
    if pts.shape[0] == 0:
        return pts
    height, width = int(image_size[0]), int(image_size[1])
    finite = torch.isfinite(pts).all(dim=1)
    inside = finite & (pts[:, 0] >= 0) & (pts[:, 0] <= width) & (pts[:, 1] >= 0) & (pts[:, 1] <= height)
    n_bad = int((~finite).sum())
    n_out = int((finite & ~inside).sum())
    if n_bad or n_out:
        _log.info("%s: dropped %d non-finite and %d outside-the-%dx%d-image point(s) of %d",
                  what, n_bad, n_out, width, height, pts.shape[0])
    return pts[inside]


def point_map(points, image_size: tuple[int, int]) -> Tensor:
    """Dot map ``(H, W)``: pixel ``(r, c)`` holds the number of heads with ``floor(y) = r, floor(x) = c``.

    Points on the right/bottom border (``x == W``) fall in the last column/row; points outside the
    image or non-finite are dropped (logged). ``sum == number of points inside``, exactly.
    """
    pts = inside_points(points, image_size)
    return block_count_map(pts, image_size, 1)


def _axis_weights(centres: Tensor, sigmas: Tensor, length: int, truncate: float) -> Tensor:
    """Normalised, truncated 1-D Gaussians sampled at pixel centres: ``(N, length)``, rows sum to 1.

    ``w[i, c] = exp(-((c + 0.5 - m_i)^2 - d0_i^2) / (2 s_i^2))`` for ``|c + 0.5 - m_i| <= truncate * s_i``
    (always including the pixel that contains ``m_i``), then divided by the row sum. Subtracting
    ``d0_i^2``, the squared distance to the nearest pixel centre, keeps the largest weight at 1 so
    that a tiny ``sigma`` degrades to a one-hot row instead of underflowing to 0/0.
    """
    grid = torch.arange(length, dtype=torch.float32, device=centres.device) + 0.5
    m = centres.to(torch.float32)[:, None]
    s = sigmas.to(torch.float32).clamp_min(1e-6)[:, None]
    dist = grid[None, :] - m
    own = (m.floor().clamp(0, length - 1) + 0.5)  # centre of the pixel containing m
    d0 = (own - m).abs()
    keep = dist.abs() <= torch.maximum(truncate * s, d0 + 1e-9)
    w = torch.exp(-(dist.square() - d0.square()) / (2 * s.square())) * keep
    return w / w.sum(dim=1, keepdim=True)


def _separable_density(points: Tensor, sigmas: Tensor, image_size: tuple[int, int], truncate: float,
                       chunk: int = 4096) -> Tensor:
    height, width = int(image_size[0]), int(image_size[1])
    density = torch.zeros((height, width), dtype=torch.float32, device=points.device)
    for start in range(0, points.shape[0], chunk):  # bounded memory: (chunk, H) + (chunk, W)
        p, s = points[start:start + chunk], sigmas[start:start + chunk]
        gy = _axis_weights(p[:, 1], s, height, truncate)
        gx = _axis_weights(p[:, 0], s, width, truncate)
        density += gy.T @ gx
    return density


def gaussian_density_map(points, image_size: tuple[int, int], sigma: float = 4.0, *,
                         truncate: float = 3.0) -> Tensor:
    """Fixed-width Gaussian density ``D(p) = sum_i N(p; x_i, sigma^2 I)`` restricted to the image.

    Each kernel is sampled at pixel centres, truncated at ``truncate * sigma`` and at the border,
    and renormalised to sum to 1, so ``D.sum()`` equals the number of points inside the image.
    ``sigma <= 0`` gives :func:`point_map`. There is no canonical ``sigma``: papers use values
    from about 4 to 15 pixels depending on the dataset and resolution. Returns float32 ``(H, W)``.
    """
    if not math.isfinite(sigma):
        raise ValueError(f"sigma must be finite, got {sigma}")
    if truncate <= 0:
        raise ValueError(f"truncate must be positive, got {truncate}")
    if sigma <= 0:
        return point_map(points, image_size)
    pts = inside_points(points, image_size)
    sigmas = torch.full((pts.shape[0],), float(sigma), device=pts.device)
    return _separable_density(pts, sigmas, image_size, truncate)


def adaptive_sigmas(points, *, k: int = 3, beta: float = 0.3, fallback_sigma: float = 15.0,
                    min_sigma: float = 0.0, max_sigma: float | None = None) -> Tensor:
    """Geometry-adaptive widths ``sigma_i = beta * mean_{j in kNN(i)} ||x_i - x_j||`` (MCNN).

    With fewer than ``k + 1`` points the mean runs over the neighbours that exist; a lone point
    gets ``fallback_sigma``. The result is clipped to ``[min_sigma, max_sigma]``. Returns ``(N,)``.
    The nearest neighbours come from a k-d tree (``scipy.spatial.cKDTree``), ``O(N log N)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pts = _as_points(points)
    n = pts.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.float32)
    if n == 1:
        sig = torch.tensor([float(fallback_sigma)])
    else:
        from scipy.spatial import cKDTree

        xy = pts.detach().cpu().double().numpy()
        kk = min(k, n - 1)
        dist, _ = cKDTree(xy).query(xy, k=kk + 1)  # column 0 is the point itself
        sig = torch.from_numpy(beta * dist[:, 1:].mean(axis=1)).float()
    sig = sig.clamp_min(min_sigma)
    if max_sigma is not None:
        sig = sig.clamp_max(max_sigma)
    return sig.to(pts.device)


def adaptive_density_map(points, image_size: tuple[int, int], *, k: int = 3, beta: float = 0.3,
                         fallback_sigma: float = 15.0, min_sigma: float = 0.0,
                         max_sigma: float | None = None, truncate: float = 3.0) -> Tensor:
    """Geometry-adaptive Gaussian density map of MCNN (Zhang et al., CVPR 2016).

    ``D(p) = sum_i N(p; x_i, sigma_i^2 I)`` with ``sigma_i`` from :func:`adaptive_sigmas`
    (neighbours are searched among the points inside the image). Kernels are truncated at
    ``truncate * sigma_i`` and at the border and renormalised, so ``D.sum()`` equals the number of
    points inside the image. Returns float32 ``(H, W)``.
    """
    pts = inside_points(points, image_size)
    sigmas = adaptive_sigmas(pts, k=k, beta=beta, fallback_sigma=fallback_sigma,
                             min_sigma=min_sigma, max_sigma=max_sigma)
    return _separable_density(pts, sigmas, image_size, truncate)


def density_map(points, image_size: tuple[int, int], method: str = "fixed", **kwargs) -> Tensor:
    """Dispatch to :func:`point_map` (``"point"``), :func:`gaussian_density_map` (``"fixed"``) or
    :func:`adaptive_density_map` (``"adaptive"``)."""
    if method == "point":
        return point_map(points, image_size, **kwargs)
    if method == "fixed":
        return gaussian_density_map(points, image_size, **kwargs)
    if method == "adaptive":
        return adaptive_density_map(points, image_size, **kwargs)
    raise ValueError(f"density_map: unknown method {method!r}; use 'point', 'fixed' or 'adaptive'")


def sum_pool(density: Tensor, block_size: int) -> Tensor:
    """Sum a ``(..., H, W)`` map over ``B x B`` blocks -> ``(..., ceil(H/B), ceil(W/B))``.

    The last row/column of blocks may be partial (zero padding), so the total is preserved. For a
    point map this equals :func:`block_count_map`; for a Gaussian map it is its smoothed version.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    height, width = density.shape[-2:]
    pad_h, pad_w = (-height) % block_size, (-width) % block_size
    x = torch.nn.functional.pad(density, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else density
    lead = x.shape[:-2]
    h2, w2 = x.shape[-2] // block_size, x.shape[-1] // block_size
    x = x.reshape(*lead, h2, block_size, w2, block_size)
    return x.sum(dim=(-3, -1))
