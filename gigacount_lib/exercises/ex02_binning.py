"""Notebook 02's exercises: average anchors, coarse bins, the count of a perfect classifier."""
from __future__ import annotations

import math

import torch

from ..binning import BinConfig, average_anchors, coarse_bins, fine_bins, reconstruct_counts
from ._check import Case, CheckResult, run_check

__all__ = ["EXAMPLE_HISTOGRAM", "solution_average_anchor", "check_average_anchor", "solution_coarse_bins",
           "check_coarse_bins", "solution_perfect_count", "check_perfect_count"]

# The histogram of the by-hand exercise: n_c blocks hold c heads, c = 0 ... 6.
EXAMPLE_HISTOGRAM = (900, 60, 25, 10, 3, 1, 1)


# ------------------------------------------------------------------------------ 1. average anchor
def solution_average_anchor(frequencies, low: int, high: float) -> float:
    """Mean count of the blocks in the bin ``[low, high]`` (``high`` may be ``inf``), weighted by ``n_c``."""
    top = len(frequencies) - 1 if math.isinf(high) else min(int(high), len(frequencies) - 1)
    counts = range(int(low), top + 1)
    blocks = sum(frequencies[c] for c in counts)
    return sum(c * frequencies[c] for c in counts) / blocks


def _anchor_cases() -> list[Case]:
    def expected(freq, bins, k):
        return average_anchors(bins, dict(enumerate(freq)))[k]

    tail_gap = (500, 40, 9, 0, 2, 0, 0, 1)  # no block holds 3, 5 or 6 heads
    return [
        Case("open bin [4, inf] of EXAMPLE_HISTOGRAM", (EXAMPLE_HISTOGRAM, 4, math.inf),
             expected(EXAMPLE_HISTOGRAM, fine_bins(4), 4), "weight each count c by its number of blocks n_c"),
        Case("closed group [1, 2]", (EXAMPLE_HISTOGRAM, 1, 2), expected(EXAMPLE_HISTOGRAM, coarse_bins(4), 1),
             "both ends of a bin are included"),
        Case("the zero bin [0, 0]", (EXAMPLE_HISTOGRAM, 0, 0), expected(EXAMPLE_HISTOGRAM, fine_bins(4), 0), ""),
        Case("open bin [3, inf] over a tail with gaps", (tail_gap, 3, math.inf),
             expected(tail_gap, fine_bins(3), 3), "counts without any block contribute nothing"),
        Case("closed bin [3, 10] reaching past the largest count", (EXAMPLE_HISTOGRAM, 3, 10),
             expected(EXAMPLE_HISTOGRAM, fine_bins(3), 3),  # no block holds more than 6 heads
             "stop at the largest count the histogram has (len(frequencies) - 1)"),
    ]


def check_average_anchor(answer) -> CheckResult:
    """Compare ``answer(frequencies, low, high)`` with ``binning.average_anchors``."""
    return run_check("check_average_anchor", answer, _anchor_cases)


# ------------------------------------------------------------------------------ 2. coarse bins
def solution_coarse_bins(truncation: int) -> list[tuple[float, float]]:
    """CLIP-EBC's coarse bins: ``[0,0]``, then pairs ``[1,2], [3,4], ...`` below ``T``, then an open bin."""
    bins = [(0.0, 0.0)]
    low = 1
    while low + 1 < truncation:  # a pair [low, low + 1] must end below T
        bins.append((float(low), float(low + 1)))
        low += 2
    bins.append((float(low), math.inf))
    return bins


def _coarse_cases() -> list[Case]:
    hints = {1: "T=1: only [0,0] and [1, inf]", 2: "T=2: the pair [1,2] would reach T, so the open bin starts at 1",
             5: "T odd: the open bin starts at T", 8: "T even: the open bin starts just below T ([7, inf] for T=8)"}
    return [Case(f"T={t}", (t,), tuple(tuple(b) for b in coarse_bins(t)), hints.get(t, "")) for t in (1, 2, 3, 4, 5, 8, 9)]


def check_coarse_bins(answer) -> CheckResult:
    """Compare ``answer(T)`` (a list of ``(low, high)``, the last high ``math.inf``) with ``binning.coarse_bins``."""
    return run_check("check_coarse_bins", answer, _coarse_cases)


# ------------------------------------------------------------------------------ 3. perfect classifier
def solution_perfect_count(block_counts: torch.Tensor, bin_config: BinConfig) -> torch.Tensor:
    """The count a perfect classifier reports: the sum over the blocks (last two dims) of the anchor of
    each block's true bin."""
    lows = torch.tensor([lo for lo, _ in bin_config.bins], dtype=torch.float64)
    classes = torch.searchsorted(lows, block_counts.double(), right=True) - 1  # last bin with low <= count
    anchors = torch.tensor(bin_config.anchor_points, dtype=torch.float64)
    return anchors[classes].sum(dim=(-2, -1))


def _perfect_cases() -> list[Case]:
    ramp = torch.arange(12.0).reshape(3, 4)  # counts 0 ... 11
    g = torch.Generator().manual_seed(3)
    batch = torch.poisson(torch.full((2, 5, 6), 0.8), generator=g)
    coarse_middle = BinConfig(coarse_bins(4), anchor_points=(0.0, 1.5, 3.0), reduction=8)
    inputs = [
        ("counts 0..11, GigaCount's QNRF bins", ramp, BinConfig.gigacount_qnrf(),
         "every count >= 4 falls in the open bin and is replaced by 4.21937"),
        ("counts 0..11, coarse bins with middle anchors", ramp, coarse_middle,
         "a count belongs to the last bin whose lower bound is <= the count"),
        ("a batch of two maps -> two counts", batch, BinConfig.gigacount_qnrf(),
         "sum over the last two dimensions only (one count per image)"),
        ("an empty map", torch.zeros(4, 4), BinConfig.fine(3), "zero blocks, zero count"),
    ]
    return [Case(label, (counts, cfg), reconstruct_counts(counts, cfg), hint) for label, counts, cfg, hint in inputs]


def check_perfect_count(answer) -> CheckResult:
    """Compare ``answer(block_counts, bin_config)`` with ``binning.reconstruct_counts``."""
    return run_check("check_perfect_count", answer, _perfect_cases)
