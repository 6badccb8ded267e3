"""Bin rules: the count intervals ``[low, high]`` that turn a block count into a class.

A bin set is a tuple of inclusive integer intervals that partition ``0 … inf`` (the last one open,
``[T, inf]``). CLIP-EBC (Ma, Sanchez & Guha, arXiv:2403.09281) names three granularities (fine,
coarse, dynamic); the rules here build them, plus log-spaced bins, and check any bin set.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .histogram import CountHistogram, _check_int, check_truncation

__all__ = ["Bin", "GRANULARITIES", "validate_bins", "fine_bins", "coarse_bins", "dynamic_bins", "log_bins",
           "make_bins"]

Bin = tuple[float, float]
GRANULARITIES = ("fine", "coarse", "dynamic", "log")


def validate_bins(bins: Sequence[Sequence[float]]) -> tuple[Bin, ...]:
    """Check that bins are increasing, non-overlapping, contiguous and cover ``0 … inf``.

    Counts are integers, so the bounds must be whole numbers (the last upper bound is ``inf``) and
    ``[a, b]`` followed by ``[b + 1, c]`` is contiguous. Raises ``ValueError`` describing the first
    problem found.
    """
    if len(bins) == 0:
        raise ValueError("bins: at least one bin is required")
    out: list[Bin] = []
    for i, b in enumerate(bins):
        if isinstance(b, (str, bytes)) or not hasattr(b, "__len__") or len(b) != 2:
            raise ValueError(f"bins[{i}]: expected [low, high], got {b!r}")
        try:
            low, high = float(b[0]), float(b[1])
        except (TypeError, ValueError):
            raise ValueError(f"bins[{i}]: bounds must be numbers (or 'inf' for the last high), got {b!r}") from None
        if math.isnan(low) or math.isnan(high):
            raise ValueError(f"bins[{i}]: NaN bound in {b!r}")
        for what, value in (("low", low), ("high", high)):
            if not (value.is_integer() or (what == "high" and value == math.inf)):
                raise ValueError(f"bins[{i}]: {what} bound {value:g} is not a whole number; block counts are "
                                 "integers, so bounds must be too (only the last high may be 'inf'), "
                                 f"e.g. [{math.floor(low)}, {high if math.isinf(high) else math.floor(high):g}]")
        if high < low:
            raise ValueError(f"bins[{i}]: high {high} is below low {low}")
        out.append((low, high))
    if out[0][0] != 0:
        raise ValueError(f"bins[0]: must start at count 0, starts at {out[0][0]}")
    for i in range(1, len(out)):
        prev_high, low = out[i - 1][1], out[i][0]
        if low <= prev_high:
            raise ValueError(f"bins[{i - 1}] and bins[{i}] overlap or are not increasing: "
                             f"{list(out[i - 1])} then {list(out[i])}")
        if low != prev_high + 1:
            raise ValueError(f"gap between bins[{i - 1}] {list(out[i - 1])} and bins[{i}] {list(out[i])}: "
                             f"counts {prev_high + 1}..{low - 1} fall in no bin")
    if not math.isinf(out[-1][1]):
        raise ValueError(f"bins[-1]: the last bin must be open ([low, inf]), got {list(out[-1])}")
    return tuple(out)


def fine_bins(truncation: int) -> tuple[Bin, ...]:
    """``[0,0], [1,1], …, [T-1,T-1], [T, inf]`` (T + 1 bins)."""
    if truncation < 1:
        raise ValueError(f"truncation must be >= 1, got {truncation}")
    return tuple((float(c), float(c)) for c in range(truncation)) + ((float(truncation), math.inf),)


def coarse_bins(truncation: int, width: int = 2, split: int = 1) -> tuple[Bin, ...]:
    """Single counts below ``split``, then groups of ``width`` counts, then an open bin.

    ``[0,0], …, [split-1, split-1], [split, split+width-1], …, [a, inf]``: groups are added while
    their upper end stays below ``T``; the open bin starts where the next group would have
    reached ``T``. With the defaults (``width=2, split=1``) these are CLIP-EBC's *coarse* bins
    (``T=8 -> [0,0] [1,2] [3,4] [5,6] [7,inf]``); a larger ``split`` gives the layout of its
    published *dynamic* bins (``T=8, split=4 -> [0,0] … [3,3] [4,5] [6,7] [8,inf]``, CLIP-EBC
    ``configs/reduction_16.json``). Note that the open bin may start below ``T``.
    ``width=1`` gives :func:`fine_bins`.
    """
    truncation = _check_int("truncation", truncation, 1)
    width = _check_int("width", width, 1)
    split = _check_int("split", split, 1)
    if split > truncation:
        raise ValueError(f"split ({split}) must not exceed truncation ({truncation})")
    bins: list[Bin] = [(float(c), float(c)) for c in range(split)]
    low = split
    while low + width - 1 < truncation:
        bins.append((float(low), float(low + width - 1)))
        low += width
    bins.append((float(low), math.inf))
    return validate_bins(bins)


def dynamic_bins(histogram: "CountHistogram | Mapping", truncation: int, min_share: float = 1e-4,
                 max_width: int | None = None) -> tuple[Bin, ...]:
    """Data-driven bins: merge neighbouring counts until each bin holds ``>= min_share`` of the blocks.

    Walking up from count 0, a bin grows one count at a time until its frequency
    ``sum_{c in bin} n_c >= min_share * sum_c n_c`` (or it is ``max_width`` counts wide); counts
    ``>= T`` form the open bin ``[T, inf]``. A last closed bin that stays below the share is merged
    into its left neighbour. Frequent counts therefore keep a bin of their own, rare counts share
    one (the idea behind CLIP-EBC's *dynamic* granularity; CLIP-EBC publishes its dynamic bins
    without the rule that made them). The open bin may hold fewer blocks than ``min_share``: it is
    fixed by ``T`` (see :func:`suggest_truncation`).
    """
    hist = CountHistogram.coerce(histogram)
    truncation = check_truncation(hist, truncation)
    if not (0.0 <= float(min_share) < 1.0):
        raise ValueError(f"min_share must lie in [0, 1), got {min_share}")
    if max_width is not None:
        max_width = _check_int("max_width", max_width, 1)
    freq = hist.frequencies
    need = float(min_share) * hist.total
    lows: list[int] = [0]
    mass = 0
    for c in range(truncation):
        mass += freq[c] if c < len(freq) else 0
        width = c - lows[-1] + 1
        if c < truncation - 1 and (mass >= need or (max_width is not None and width >= max_width)):
            lows.append(c + 1)
            mass = 0
    # ``mass`` now holds the frequency of the last closed bin [lows[-1], T-1]
    if len(lows) > 1 and mass < need:
        merged_width = truncation - lows[-2]
        if max_width is None or merged_width <= max_width:
            lows.pop()
    edges = lows + [truncation]
    bins = [(float(a), float(b - 1)) for a, b in zip(edges[:-1], edges[1:])]
    bins.append((float(truncation), math.inf))
    return validate_bins(bins)


def log_bins(truncation: int, num_bins: int) -> tuple[Bin, ...]:
    """``num_bins`` bins whose boundaries are evenly spaced in ``log(count)``.

    ``[0,0]`` and the open bin ``[T, inf]`` are always present; the ``K = num_bins - 2`` closed bins
    between them cover ``1 … T-1`` with lower bounds ``round(T^(i/K))``, ``i = 0 … K-1`` (pushed
    apart by one where rounding would make two equal), so bins widen geometrically with the count.
    ``num_bins = T + 1`` gives :func:`fine_bins`.
    """
    truncation = _check_int("truncation", truncation, 1)
    num_bins = _check_int("num_bins", num_bins, 2)
    if num_bins > truncation + 1:
        raise ValueError(f"num_bins ({num_bins}) cannot exceed truncation + 1 ({truncation + 1}) "
                         "for integer counts")
    k = num_bins - 2
    lows = [0]
    if k:
        targets = np.exp(np.linspace(0.0, math.log(truncation), k + 1))[:-1]
        for i, t in enumerate(targets):
            low = max(int(round(float(t))), lows[-1] + 1)
            low = min(low, truncation - (k - i))  # leave room for the remaining bins
            lows.append(low)
    edges = lows + [truncation]
    bins = [(float(a), float(b - 1)) for a, b in zip(edges[:-1], edges[1:])]
    bins.append((float(truncation), math.inf))
    return validate_bins(bins)


def make_bins(granularity: str, truncation: int, histogram: "CountHistogram | Mapping | None" = None,
              **options) -> tuple[Bin, ...]:
    """Dispatch on ``granularity``: ``fine``, ``coarse`` (options ``width``, ``split``),
    ``dynamic`` (needs ``histogram``; options ``min_share``, ``max_width``) or ``log`` (``num_bins``)."""
    if granularity == "fine":
        if options:
            raise ValueError(f"fine bins take no options, got {sorted(options)}")
        return fine_bins(truncation)
    if granularity == "coarse":
        return coarse_bins(truncation, **options)
    if granularity == "dynamic":
        if histogram is None:
            raise ValueError("dynamic bins are data-driven: pass the block-count histogram")
        return dynamic_bins(histogram, truncation, **options)
    if granularity == "log":
        if "num_bins" not in options:
            raise ValueError("log bins need num_bins=...")
        return log_bins(truncation, **options)
    raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
