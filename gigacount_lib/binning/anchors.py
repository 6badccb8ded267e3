"""Anchor points (the count each bin stands for) and the class balance of a bin set.

The predicted block count is ``sum_k p_k * anchor_k``, so the anchors fix what a perfect classifier
can report. ``middle`` anchors need only the bins; ``average`` anchors (CLIP-EBC, Ma, Sanchez &
Guha, arXiv:2403.09281) are the mean count of the training blocks in each bin, from the histogram.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..utils import get_logger
from .histogram import CountHistogram, check_truncation
from .rules import validate_bins

__all__ = ["ANCHOR_KINDS", "middle_anchors", "average_anchors", "compute_anchors", "class_frequencies",
           "class_shares"]

log = get_logger("binning")

ANCHOR_KINDS = ("middle", "average")


def middle_anchors(bins: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """``(low + high) / 2`` per bin; the open bin ``[T, inf]`` is represented by ``T``."""
    return tuple(float(lo) if math.isinf(hi) else (float(lo) + float(hi)) / 2 for lo, hi in validate_bins(bins))


def average_anchors(bins: Sequence[Sequence[float]], histogram: "CountHistogram | Mapping", *,
                    empty: str = "middle", decimals: int | None = None) -> tuple[float, ...]:
    """Frequency-weighted mean count of the training blocks in each bin.

    ``a_k = sum_{c in bin_k} c * n_c / sum_{c in bin_k} n_c`` (exact integer sums, one rounding).
    A closed bin without any block gets its middle (``empty="middle"``, with a warning) or raises
    (``empty="error"``); an empty open bin always raises (truncation above the largest count).
    ``decimals`` rounds like CLIP-EBC's published files (5 decimals); ``None`` keeps full precision.
    """
    if empty not in ("middle", "error"):
        raise ValueError(f"empty must be 'middle' or 'error', got {empty!r}")
    bins = validate_bins(bins)
    hist = CountHistogram.coerce(histogram)
    if bins[-1][0] >= 1:  # an open bin above every observed count has no average
        check_truncation(hist, int(bins[-1][0]))
    middles = middle_anchors(bins)
    freq = hist.frequencies
    out = []
    for k, (lo, hi) in enumerate(bins):
        top = hist.max_count if math.isinf(hi) else min(int(hi), hist.max_count)
        cs = range(int(lo), top + 1)
        den = sum(freq[c] for c in cs)
        if den == 0:
            if empty == "error":
                raise ValueError(f"bin {k} [{lo:g}, {hi:g}] holds no block in {hist.describe()}; "
                                 "its average anchor is undefined")
            log.warning("bin %d [%g, %g] holds no block in %s; using its middle %g as anchor",
                        k, lo, hi, hist.describe(), middles[k])
            value = middles[k]
        else:
            value = sum(c * freq[c] for c in cs) / den
        out.append(round(value, decimals) if decimals is not None else value)
    return tuple(out)


def compute_anchors(bins: Sequence[Sequence[float]], kind: str = "average",
                    histogram: "CountHistogram | Mapping | None" = None, **kwargs) -> tuple[float, ...]:
    """``middle`` or ``average`` anchors (``average`` needs the training histogram)."""
    if kind == "middle":
        return middle_anchors(bins)
    if kind == "average":
        if histogram is None:
            raise ValueError("average anchors are data-driven: pass the training block-count histogram")
        return average_anchors(bins, histogram, **kwargs)
    raise ValueError(f"unknown anchor kind {kind!r}; expected one of {ANCHOR_KINDS}")


def class_frequencies(bins: Sequence[Sequence[float]], histogram: "CountHistogram | Mapping") -> np.ndarray:
    """Number of blocks per class, ``(K,)`` int64."""
    hist = CountHistogram.coerce(histogram)
    return np.array([hist.frequency(lo, hi) for lo, hi in validate_bins(bins)], dtype=np.int64)


def class_shares(bins: Sequence[Sequence[float]], histogram: "CountHistogram | Mapping") -> np.ndarray:
    """Fraction of blocks per class, ``(K,)`` float64, sums to 1 (the class balance)."""
    freq = class_frequencies(bins, histogram).astype(np.float64)
    return freq / freq.sum() if freq.sum() else freq
