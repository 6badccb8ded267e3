"""Notebook 01's exercises: block-count maps and geometry-adaptive kernel widths."""
from __future__ import annotations

import math

import torch

from ..data.density import adaptive_sigmas, block_count_map
from ._check import Case, CheckResult, run_check

__all__ = ["solution_block_counts", "check_block_counts", "solution_adaptive_sigma", "check_adaptive_sigma"]


# ------------------------------------------------------------------------------ 1. block counts
def solution_block_counts(points: torch.Tensor, image_size: tuple[int, int], block_size: int) -> torch.Tensor:
    """Heads per ``block_size`` x ``block_size`` block: ``(ceil(H/B), ceil(W/B))``, float."""
    height, width = image_size
    rows, cols = math.ceil(height / block_size), math.ceil(width / block_size)
    counts = torch.zeros(rows, cols)
    for x, y in points.tolist():
        r = min(int(y // block_size), rows - 1)  # a head on the bottom/right border is in the last block
        c = min(int(x // block_size), cols - 1)
        counts[r, c] += 1
    return counts


def _block_cases() -> list[Case]:
    g = torch.Generator().manual_seed(1)
    scattered = torch.rand(40, 2, generator=g) * torch.tensor([30.0, 20.0])
    inputs = [
        ("notebook 04's 16x16 example (3 heads, 2x2 blocks)", torch.tensor([[12.0, 4.0], [3.0, 11.0], [5.0, 13.0]]),
         (16, 16), 8, ""),
        ("40 heads on a 20x30 image, B=8 (partial last blocks)", scattered, (20, 30), 8,
         "the grid is ceil(H/B) x ceil(W/B): a partial block at the border still counts"),
        ("no heads at all", torch.zeros(0, 2), (24, 24), 8, "an empty image gives a map of zeros, not an error"),
        ("heads on the right and bottom border (x == W, y == H)", torch.tensor([[32.0, 5.0], [7.0, 16.0], [32.0, 16.0]]),
         (16, 32), 8, "x == W lies on the border of the image: count it in the last column (clamp the index)"),
        ("B=1 is the point map", torch.tensor([[0.5, 0.5], [2.9, 1.1], [2.1, 1.9]]), (3, 4), 1,
         "points are (x, y): x selects the column, y the row"),
    ]
    return [Case(label, (pts, size, b), block_count_map(pts, size, b), hint) for label, pts, size, b, hint in inputs]


def check_block_counts(answer) -> CheckResult:
    """Compare ``answer(points, (H, W), B)`` with ``data.density.block_count_map``."""
    return run_check("check_block_counts", answer, _block_cases)


# ------------------------------------------------------------------------------ 2. adaptive sigma
def solution_adaptive_sigma(points: torch.Tensor, k: int = 3, beta: float = 0.3,
                            fallback_sigma: float = 15.0) -> torch.Tensor:
    """``sigma_i = beta * mean distance from head i to its k nearest other heads``; ``(N,)``."""
    n = points.shape[0]
    if n == 0:
        return torch.zeros(0)
    if n == 1:
        return torch.tensor([float(fallback_sigma)])
    dist = torch.cdist(points.double(), points.double())
    dist.fill_diagonal_(math.inf)  # a head is not its own neighbour
    nearest = dist.topk(min(k, n - 1), dim=1, largest=False).values
    return (beta * nearest.mean(dim=1)).float()


def _sigma_cases() -> list[Case]:
    g = torch.Generator().manual_seed(2)
    crowd = torch.rand(25, 2, generator=g) * 100
    line = torch.tensor([[0.0, 0.0], [3.0, 0.0], [4.0, 0.0], [10.0, 0.0]])
    inputs = [
        ("four heads on a line, k=1", line, 1, 0.3, "k=1: the distance to the single nearest *other* head"),
        ("25 random heads, k=3, beta=0.3 (MCNN)", crowd, 3, 0.3,
         "exclude the head itself (its distance 0) from the k nearest"),
        ("25 random heads, k=5, beta=0.5", crowd, 5, 0.5, "multiply the mean distance by beta"),
        ("three heads, k=3: fewer neighbours than k", line[:3], 3, 0.3,
         "with fewer than k other heads, average over the ones that exist"),
        ("a lone head gets the fallback width", line[:1], 3, 0.3, "one head has no neighbour: return [fallback_sigma]"),
    ]
    return [Case(label, (pts, k, beta), adaptive_sigmas(pts, k=k, beta=beta), hint)
            for label, pts, k, beta, hint in inputs]


def check_adaptive_sigma(answer) -> CheckResult:
    """Compare ``answer(points, k, beta)`` with ``data.density.adaptive_sigmas``."""
    return run_check("check_adaptive_sigma", answer, _sigma_cases, rtol=1e-4, atol=1e-5)
