"""Enhanced blockwise classification (EBC): block counts, count bins, anchor points, ``BinConfig``.

Counting becomes classification: each output block (``reduction`` x ``reduction`` pixels) is
assigned to one of K count bins, and the model predicts a distribution over the bins. A bin
``[low, high]`` is inclusive on both ends (integer counts); ``high`` may be ``inf`` for the open
last bin. Each bin is represented by an *anchor point*, and the predicted block count is
``sum_k p_k * anchor_k``.

This module derives every piece from data (CLIP-EBC, Ma, Sanchez & Guha, arXiv:2403.09281, ships
them only as precomputed JSON files):

* :func:`block_count_histogram` / :func:`block_count_histograms` stream over a dataset's
  annotations and count, for each block size B, how many B x B blocks hold exactly c heads
  (a :class:`CountHistogram`; JSON in CLIP-EBC's ``counts_<B>.json`` layout).
* Bin constructors: :func:`fine_bins`, :func:`coarse_bins`, :func:`dynamic_bins` (data-driven),
  :func:`log_bins`; :func:`suggest_truncation` proposes a truncation T from a histogram.
* Anchor points: :func:`middle_anchors` and :func:`average_anchors` (the frequency-weighted mean
  count of the training blocks in each bin).
* :class:`BinConfig`: vectorised count -> class mapping, expected count, JSON in CLIP-EBC's format
  (single entries and the multi-entry ``reduction_<B>.json`` files, see :func:`load_clip_ebc_configs`).
* :func:`quantisation_errors`: what each choice of bins/anchors costs when a perfect classifier's
  class map is turned back into a count; ``plot_*`` helpers for notebook 02.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .utils import atomic_write_bytes, atomic_write_json, get_logger, read_json

__all__ = [
    "BinConfig", "CountHistogram",
    "validate_bins", "fine_bins", "coarse_bins", "dynamic_bins", "log_bins", "make_bins",
    "block_count_histogram", "block_count_histograms", "check_truncation", "suggest_truncation",
    "middle_anchors", "average_anchors", "compute_anchors", "class_frequencies", "class_shares",
    "load_clip_ebc_configs", "clip_ebc_configs_to_dict", "save_clip_ebc_configs",
    "reconstruct_counts", "quantisation_errors", "find_shared_reference",
    "plot_count_histograms", "plot_bins", "plot_class_balance",
]

log = get_logger("binning")

Bin = tuple[float, float]
GRANULARITIES = ("fine", "coarse", "dynamic", "log")
ANCHOR_KINDS = ("middle", "average")


# ====================================================================== bins
def validate_bins(bins: Sequence[Sequence[float]]) -> tuple[Bin, ...]:
    """Check that bins are increasing, non-overlapping, contiguous and cover ``0 … inf``.

    Counts are integers, so ``[a, b]`` followed by ``[b + 1, c]`` is contiguous.
    Raises ``ValueError`` describing the first problem found.
    """
    if len(bins) == 0:
        raise ValueError("bins: at least one bin is required")
    out: list[Bin] = []
    for i, b in enumerate(bins):
        if len(b) != 2:
            raise ValueError(f"bins[{i}]: expected [low, high], got {b!r}")
        low, high = float(b[0]), float(b[1])
        if math.isnan(low) or math.isnan(high):
            raise ValueError(f"bins[{i}]: NaN bound in {b!r}")
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


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


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


# ====================================================================== histograms
@dataclass(frozen=True)
class CountHistogram:
    """How many ``B x B`` blocks hold exactly ``c`` heads: ``frequencies[c] = n_c`` (exact integers).

    JSON layout (CLIP-EBC's ``counts_<B>.json``): ``{"<count>": <number of blocks>}``.

    Attributes:
        frequencies: ``n_0, n_1, …, n_max`` (Python ints, so billions of blocks stay exact).
        block_size: ``B`` in pixels, or ``None`` when unknown.
        metadata: free-form (``num_images``, ``source``, …).
    """

    frequencies: tuple[int, ...]
    block_size: int | None = None
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        freq = tuple(int(n) for n in self.frequencies)
        if not freq:
            raise ValueError("CountHistogram: at least one frequency (n_0) is required")
        if any(n < 0 for n in freq):
            raise ValueError("CountHistogram: frequencies must be non-negative")
        while len(freq) > 1 and freq[-1] == 0:  # canonical form: no trailing zeros
            freq = freq[:-1]
        object.__setattr__(self, "frequencies", freq)
        if self.block_size is not None:
            object.__setattr__(self, "block_size", _check_int("block_size", self.block_size, 1))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, counts: Mapping, block_size: int | None = None, metadata: dict | None = None,
                     where: str = "histogram") -> "CountHistogram":
        """From ``{count: frequency}`` (keys may be strings, as in CLIP-EBC's JSON files)."""
        if not isinstance(counts, Mapping):
            raise ValueError(f"{where}: expected a mapping {{count: number of blocks}}, got {type(counts).__name__}")
        if not counts:
            raise ValueError(f"{where}: the histogram is empty (no blocks)")
        parsed: dict[int, int] = {}
        for key, value in counts.items():
            try:
                c = float(key)
                n = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: entry {key!r}: {value!r} is not <count>: <number of blocks>") from None
            if c < 0 or not c.is_integer():
                raise ValueError(f"{where}: block counts must be non-negative integers, got key {key!r}")
            if n < 0 or not n.is_integer():
                raise ValueError(f"{where}: count {key!r} has a non-integer or negative frequency {value!r}")
            parsed[int(c)] = parsed.get(int(c), 0) + int(n)
        freq = [0] * (max(parsed) + 1)
        for c, n in parsed.items():
            freq[c] = n
        return cls(tuple(freq), block_size, dict(metadata or {}))

    @classmethod
    def from_block_counts(cls, block_counts: Tensor | np.ndarray, block_size: int | None = None) -> "CountHistogram":
        """From a tensor of block counts (any shape; integer-valued)."""
        counts = torch.as_tensor(block_counts).detach().flatten().cpu().to(torch.float64)
        return cls(tuple(_bincount(counts, "block_counts").tolist()), block_size)

    @classmethod
    def coerce(cls, histogram: "CountHistogram | Mapping") -> "CountHistogram":
        return histogram if isinstance(histogram, CountHistogram) else cls.from_mapping(histogram)

    # ------------------------------------------------------------------ statistics
    @property
    def total(self) -> int:
        """Number of blocks ``sum_c n_c``."""
        return int(sum(self.frequencies))

    @property
    def max_count(self) -> int:
        """Largest count observed in at least one block."""
        return len(self.frequencies) - 1

    @property
    def num_heads(self) -> int:
        """``sum_c c * n_c``."""
        return int(sum(c * n for c, n in enumerate(self.frequencies)))

    def counts(self) -> np.ndarray:
        return np.arange(len(self.frequencies))

    def as_array(self) -> np.ndarray:
        """Frequencies as float64 (for plotting; use ``frequencies`` for exact arithmetic)."""
        return np.asarray(self.frequencies, dtype=np.float64)

    def shares(self) -> np.ndarray:
        """``n_c / sum n``: the fraction of blocks with exactly ``c`` heads."""
        total = self.total
        return self.as_array() / total if total else self.as_array()

    def frequency(self, low: float, high: float = math.inf) -> int:
        """Number of blocks whose count lies in ``[low, high]``."""
        lo = max(int(math.ceil(low)), 0)
        hi = self.max_count if math.isinf(high) else min(int(math.floor(high)), self.max_count)
        return int(sum(self.frequencies[lo:hi + 1])) if hi >= lo else 0

    def tail(self, truncation: int) -> int:
        """Number of blocks with ``>= truncation`` heads (those in the open bin)."""
        return self.frequency(truncation, math.inf)

    def describe(self) -> str:
        where = self.metadata.get("source") or "histogram"
        block = f"{self.block_size}x{self.block_size} blocks" if self.block_size else "blocks"
        return f"{where} ({self.total} {block}, max count {self.max_count})"

    def __add__(self, other: "CountHistogram") -> "CountHistogram":
        if not isinstance(other, CountHistogram):
            return NotImplemented
        if self.block_size is not None and other.block_size is not None and self.block_size != other.block_size:
            raise ValueError(f"cannot add histograms of {self.block_size}px and {other.block_size}px blocks")
        n = max(len(self.frequencies), len(other.frequencies))
        a = list(self.frequencies) + [0] * (n - len(self.frequencies))
        b = list(other.frequencies) + [0] * (n - len(other.frequencies))
        return CountHistogram(tuple(x + y for x, y in zip(a, b)), self.block_size or other.block_size,
                              dict(self.metadata))

    # ------------------------------------------------------------------ IO (CLIP-EBC layout)
    def to_dict(self) -> dict[str, int]:
        """``{"<count>": n_c}`` for every observed count (CLIP-EBC's ``counts_<B>.json`` layout)."""
        return {str(c): int(n) for c, n in enumerate(self.frequencies) if n}

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (atomically)."""
        text = json.dumps(self.to_dict()) + "\n"
        return atomic_write_bytes(path, text.encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike, block_size: int | None = None) -> "CountHistogram":
        """Read a ``counts_<B>.json`` file; ``block_size`` defaults to the ``<B>`` in its name."""
        path = Path(path)
        data = read_json(path, "block-count histogram")
        if block_size is None:
            match = re.search(r"counts_(\d+)\.json$", path.name)
            block_size = int(match.group(1)) if match else None
        meta = {"source": f"{path.parent.name}/{path.name}"}
        return cls.from_mapping(data, block_size=block_size, metadata=meta, where=str(path))


def _bincount(values: Tensor, where: str) -> np.ndarray:
    """Histogram of integer-valued non-negative float64 ``values`` (1-D CPU tensor)."""
    if values.numel() == 0:
        return np.zeros(1, dtype=np.int64)
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{where}: block counts must be finite and non-negative")
    rounded = values.round()
    if (rounded - values).abs().max() > 1e-6:
        raise ValueError(f"{where}: block counts must be integers (head counts), got fractional values")
    return torch.bincount(rounded.long()).numpy().astype(np.int64)


def _resize_annotation(points: Tensor, size: tuple[int, int], max_side: int | None):
    """Scale points and size so that the longer side is at most ``max_side`` (never enlarges).

    The size follows the dataset readers' rule (:func:`gigacount_lib.data.datasets.target_size`
    with ``max_size=max_side``), so a histogram made with ``max_side`` counts the blocks of the
    images a reader with that ``max_size`` returns.
    """
    from .data.datasets import target_size

    height, width = int(size[0]), int(size[1])
    new_size = target_size((height, width), None, max_side)
    if new_size == (height, width):
        return points, new_size
    sx, sy = new_size[1] / width, new_size[0] / height
    return points * torch.tensor([sx, sy], dtype=points.dtype), new_size


def _iter_annotations(source) -> tuple[Iterable, int | None]:
    if hasattr(source, "iter_annotations"):
        total = len(source) if hasattr(source, "__len__") else None
        return source.iter_annotations(), total
    total = len(source) if hasattr(source, "__len__") else None
    return source, total


def block_count_histograms(annotations, block_sizes: Sequence[int] = (4, 8, 16, 32, 64), *,
                           max_side: int | None = None, progress: bool = True, total: int | None = None,
                           desc: str = "block counts") -> dict[int, CountHistogram]:
    """Stream over a dataset once and build one :class:`CountHistogram` per block size.

    Args:
        annotations: an iterable of ``(name, points (N, 2) (x, y), (H, W))`` — e.g.
            ``dataset.iter_annotations()`` — or any object with an ``iter_annotations()`` method
            (then ``len(obj)`` sizes the progress bar). Pixels are never decoded.
        block_sizes: block sizes ``B`` in pixels.
        max_side: when given, each image is first (virtually) resized so that its longer side is at
            most ``max_side`` pixels, scaling the points with it (CLIP-EBC's ``qnrf_2048`` /
            ``qnrf_4096`` histograms were made after such a resize; the exact rounding of their
            resize is not published).
        progress: show a ``tqdm`` progress bar.

    For each image, :func:`gigacount_lib.data.density.block_count_map` gives the
    ``ceil(H/B) x ceil(W/B)`` count map and its values are tallied; memory stays O(max count),
    whatever the number of images. Raises ``ValueError`` for an empty dataset and names the image
    for malformed annotations.
    """
    from tqdm import tqdm

    from .data.density import block_count_map

    sizes = [_check_int("block_size", b, 1) for b in block_sizes]
    if not sizes:
        raise ValueError("block_sizes: at least one block size is required")
    iterable, inferred_total = _iter_annotations(annotations)
    tallies = {b: np.zeros(1, dtype=np.int64) for b in sizes}
    num_images = 0
    bar = tqdm(iterable, total=total if total is not None else inferred_total, desc=desc,
               disable=not progress, leave=False)
    for item in bar:
        try:
            name, points, size = item
            height, width = int(size[0]), int(size[1])
        except (TypeError, ValueError):
            raise ValueError(f"annotation #{num_images}: expected (name, points (N, 2), (H, W)), got {item!r:.200}") from None
        if height <= 0 or width <= 0:
            raise ValueError(f"{name}: image size must be positive, got (H, W) = ({height}, {width})")
        pts = torch.as_tensor(points, dtype=torch.float32).detach().cpu()
        if pts.numel() == 0:
            pts = pts.reshape(0, 2)
        pts, (height, width) = _resize_annotation(pts, (height, width), max_side)
        for b in sizes:
            try:
                counts = block_count_map(pts, (height, width), b)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
            binned = torch.bincount(counts.flatten().long()).numpy()  # whole numbers by construction
            if len(binned) > len(tallies[b]):
                tallies[b] = np.pad(tallies[b], (0, len(binned) - len(tallies[b])))
            tallies[b][: len(binned)] += binned
        num_images += 1
    if num_images == 0:
        raise ValueError("block_count_histograms: the dataset is empty (no images/annotations to count); "
                         "check the dataset root and split")
    meta = {"num_images": num_images, "max_side": max_side}
    return {b: CountHistogram(tuple(int(n) for n in tallies[b]), b, dict(meta)) for b in sizes}


def block_count_histogram(annotations, block_size: int = 8, **kwargs) -> CountHistogram:
    """:func:`block_count_histograms` for a single block size."""
    return block_count_histograms(annotations, (block_size,), **kwargs)[int(block_size)]


def check_truncation(histogram: "CountHistogram | Mapping", truncation: int) -> int:
    """Raise ``ValueError`` unless ``1 <= truncation <= histogram.max_count``.

    A truncation above every observed count leaves the open bin ``[T, inf]`` without a single
    training block: its class can never be a target and its ``average`` anchor is undefined.
    """
    hist = CountHistogram.coerce(histogram)
    truncation = _check_int("truncation", truncation, 1)
    if truncation > hist.max_count:
        raise ValueError(
            f"truncation {truncation} is larger than any observed block count in {hist.describe()}: "
            f"the last bin [{truncation}, inf] would hold no block; use a truncation <= {hist.max_count} "
            "(suggest_truncation proposes one)")
    return truncation


def suggest_truncation(histogram: "CountHistogram | Mapping", min_share: float = 1e-6, min_blocks: int = 1) -> int:
    """The largest ``T`` whose open bin ``[T, inf]`` still holds enough training blocks.

    ``T = max{t >= 1 : sum_{c >= t} n_c >= max(min_blocks, min_share * sum_c n_c)}``. A larger T
    gives more, finer classes but a rarer last class (the long tail); this rule keeps the rarest
    class at a minimum share. With the default ``1e-6`` it gives ``T = 4`` on CLIP-EBC's
    ``qnrf_4096/counts_8.json`` (the configuration GigaCount uses); it is a heuristic, not a rule
    published by CLIP-EBC.
    """
    hist = CountHistogram.coerce(histogram)
    if not (0.0 <= float(min_share) < 1.0):
        raise ValueError(f"min_share must lie in [0, 1), got {min_share}")
    need = max(int(min_blocks), float(min_share) * hist.total)
    tail = 0  # sum_{c >= t} n_c, which only grows as t decreases: the first t that qualifies is the largest
    for t in range(hist.max_count, 0, -1):
        tail += hist.frequencies[t]
        if tail >= need:
            return t
    raise ValueError(f"{hist.describe()}: no truncation leaves >= {need:g} blocks in the open bin "
                     "(are all blocks empty?)")


# ====================================================================== anchors
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


# ====================================================================== JSON helpers
def _bound_to_json(value: float):
    if math.isinf(value):
        return "inf"
    return int(value) if float(value).is_integer() else value


def _bound_from_json(value) -> float:
    if isinstance(value, str):
        if value.strip().lower() in {"inf", "+inf", "infinity"}:
            return math.inf
        return float(value)
    return float(value)


def _number_to_json(value: float):
    return int(value) if float(value).is_integer() else float(value)


def _is_clip_ebc_multi(data) -> bool:
    """CLIP-EBC's ``reduction_<B>.json``: ``{"<T>": {"<dataset>": {"bins": {...}, "anchor_points": {...}}}}``."""
    return (isinstance(data, dict) and bool(data) and all(str(k).strip().isdigit() for k in data)
            and all(isinstance(v, dict) for v in data.values()))


# ====================================================================== BinConfig
@dataclass(frozen=True)
class BinConfig:
    """Bins and anchor points for one block size (the model's output stride, ``reduction``).

    Attributes:
        bins: inclusive ``(low, high)`` count intervals, contiguous, covering ``0 … inf``.
        anchor_points: the count each bin stands for (one per bin).
        reduction: block size in pixels (8, 16 or 32).
        granularity: how the bins were made (``fine``, ``coarse``, ``dynamic``, …), informational.
        anchor_kind: ``middle`` or ``average``, informational.
    """

    bins: tuple[Bin, ...]
    anchor_points: tuple[float, ...]
    reduction: int = 8
    granularity: str = "fine"
    anchor_kind: str = "average"
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bins", validate_bins(self.bins))
        anchors = tuple(float(a) for a in self.anchor_points)
        if len(anchors) != len(self.bins):
            raise ValueError(f"BinConfig: {len(anchors)} anchor points for {len(self.bins)} bins")
        for i, (a, (low, high)) in enumerate(zip(anchors, self.bins)):
            if not (low <= a <= high) or math.isnan(a):
                raise ValueError(f"BinConfig: anchor_points[{i}]={a} lies outside its bin [{low}, {high}]")
        object.__setattr__(self, "anchor_points", anchors)
        if self.reduction not in (4, 8, 16, 32, 64):
            raise ValueError(f"BinConfig: reduction must be one of 4, 8, 16, 32, 64, got {self.reduction}")

    # ------------------------------------------------------------------ basic properties
    @property
    def num_bins(self) -> int:
        return len(self.bins)

    @property
    def truncation(self) -> float:
        """Lower bound of the open last bin."""
        return self.bins[-1][0]

    @property
    def middle_anchor_points(self) -> tuple[float, ...]:
        """The ``middle`` anchors of these bins (whatever ``anchor_points`` holds)."""
        return middle_anchors(self.bins)

    def check_num_classes(self, num_classes: int, where: str = "model") -> None:
        """Raise a clear error when a model/logit tensor has a different number of classes."""
        if int(num_classes) != self.num_bins:
            raise ValueError(
                f"{where} has {num_classes} classes but the bin configuration has {self.num_bins} bins "
                f"({self.describe()}); build the model and the loss from the same BinConfig"
            )

    def describe(self) -> str:
        parts = [f"[{_bound_to_json(lo)}, {_bound_to_json(hi)}]" for lo, hi in self.bins]
        return f"reduction={self.reduction}, {self.granularity} bins " + " ".join(parts)

    # ------------------------------------------------------------------ tensor helpers
    def anchors_tensor(self, device=None, dtype=torch.float32) -> Tensor:
        return torch.tensor(self.anchor_points, dtype=dtype, device=device)

    def lower_bounds_tensor(self, device=None, dtype=torch.float32) -> Tensor:
        return torch.tensor([lo for lo, _ in self.bins], dtype=dtype, device=device)

    def counts_to_classes(self, counts: Tensor) -> Tensor:
        """Map block counts (any shape) to bin indices (``int64``, same shape), vectorised.

        The class is the last bin whose lower bound is ``<= count`` (``torch.bucketize`` on the
        lower bounds), which equals membership for integer counts and rounds fractional counts down.
        Works on any device (float64 where the device supports it, float32 on MPS — exact for
        integer counts below 2^24). Negative or non-finite counts raise ``ValueError``.
        """
        counts = torch.as_tensor(counts)
        if counts.numel() and (not torch.isfinite(counts).all() or (counts < 0).any()):
            raise ValueError("counts_to_classes: block counts must be finite and non-negative")
        dtype = torch.float32 if counts.device.type == "mps" else torch.float64
        lows = self.lower_bounds_tensor(device=counts.device, dtype=dtype)
        return torch.bucketize(counts.to(dtype), lows, right=True) - 1

    def classes_to_counts(self, classes: Tensor) -> Tensor:
        """Anchor value of each class index (the count a hard classification stands for)."""
        return self.anchors_tensor(device=classes.device)[classes]

    def expected_count(self, probs: Tensor, dim: int = 1) -> Tensor:
        """``sum_k p_k * anchor_k`` along ``dim`` (kept as a size-1 dim), i.e. the block density.

        Accumulates in at least float32 (half/bfloat16 inputs under autocast would otherwise round
        the anchors, e.g. 4.21937 -> 4.21875 in bfloat16) and returns ``probs.dtype``.
        """
        self.check_num_classes(probs.shape[dim], where="probabilities")
        shape = [1] * probs.ndim
        shape[dim] = self.num_bins
        work = torch.promote_types(probs.dtype, torch.float32)
        anchors = self.anchors_tensor(device=probs.device, dtype=work).view(shape)
        return (probs.to(work) * anchors).sum(dim=dim, keepdim=True).to(probs.dtype)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def fine(cls, truncation: int, anchor_points: Sequence[float] | None = None, reduction: int = 8,
             anchor_kind: str | None = None) -> "BinConfig":
        """Fine bins; anchors default to the bins' lower bounds (``middle`` for fine bins)."""
        bins = fine_bins(truncation)
        if anchor_points is None:
            anchor_points = [lo for lo, _ in bins]
            anchor_kind = anchor_kind or "middle"
        return cls(bins=bins, anchor_points=tuple(anchor_points), reduction=reduction,
                   granularity="fine", anchor_kind=anchor_kind or "average")

    @classmethod
    def gigacount_qnrf(cls) -> "BinConfig":
        """The official GigaCount configuration on UCF-QNRF: reduction 8, truncation 4, fine bins,
        ``average`` anchors ``[0, 1, 2, 3, 4.21937]`` (CLIP-EBC's published configs, qnrf / T=4)."""
        return cls.fine(4, anchor_points=(0.0, 1.0, 2.0, 3.0, 4.21937), reduction=8, anchor_kind="average")

    @classmethod
    def from_histogram(cls, histogram: "CountHistogram | Mapping", truncation: int, granularity: str = "fine",
                       anchor_kind: str = "average", reduction: int | None = None, **bin_options) -> "BinConfig":
        """Bins of ``granularity`` at truncation ``T`` with anchors derived from ``histogram``.

        ``reduction`` defaults to the histogram's block size (they must agree: the histogram has to
        count blocks of the model's output stride). ``bin_options`` go to :func:`make_bins`.
        """
        hist = CountHistogram.coerce(histogram)
        if reduction is None:
            if hist.block_size is None:
                raise ValueError("from_histogram: the histogram has no block_size; pass reduction=")
            reduction = hist.block_size
        elif hist.block_size is not None and hist.block_size != reduction:
            raise ValueError(f"from_histogram: the histogram counts {hist.block_size}px blocks but "
                             f"reduction={reduction}; use the histogram of the model's output stride")
        check_truncation(hist, truncation)
        bins = make_bins(granularity, truncation, hist, **bin_options)
        anchors = compute_anchors(bins, anchor_kind, hist)
        meta = {"truncation": int(truncation), "histogram": hist.describe()}
        if bin_options:
            meta["bin_options"] = dict(bin_options)
        return cls(bins=bins, anchor_points=anchors, reduction=int(reduction), granularity=granularity,
                   anchor_kind=anchor_kind, metadata=meta)

    def with_anchors(self, kind: str, histogram: "CountHistogram | Mapping | None" = None) -> "BinConfig":
        """The same bins with ``middle`` or ``average`` anchors."""
        return BinConfig(bins=self.bins, anchor_points=compute_anchors(self.bins, kind, histogram),
                         reduction=self.reduction, granularity=self.granularity, anchor_kind=kind,
                         metadata=dict(self.metadata))

    # ------------------------------------------------------------------ IO
    def to_dict(self) -> dict:
        """A JSON-ready dict in CLIP-EBC's layout (``"inf"`` for the open bin).

        ``anchor_points`` maps the anchor kind to its values (this config's kind first) and, as in
        CLIP-EBC's files, also carries the ``middle`` anchors of the bins.
        """
        anchors = {self.anchor_kind: [_number_to_json(a) for a in self.anchor_points]}
        if self.anchor_kind != "middle":
            anchors["middle"] = [_number_to_json(a) for a in self.middle_anchor_points]
        return {
            "reduction": self.reduction,
            "granularity": self.granularity,
            "bins": [[_bound_to_json(lo), _bound_to_json(hi)] for lo, hi in self.bins],
            "anchor_points": anchors,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict, anchor_kind: str | None = None, *, truncation: int | None = None,
                  dataset: str | None = None, granularity: str | None = None,
                  reduction: int | None = None) -> "BinConfig":
        """From :meth:`to_dict`'s layout, or from CLIP-EBC's multi-entry layout (then select the entry
        with ``truncation``/``dataset``/``granularity`` where the file holds more than one)."""
        if _is_clip_ebc_multi(data):
            configs = load_clip_ebc_configs(data, reduction=reduction or 8, anchor_kind=anchor_kind or "average")
            return _select_entry(configs, truncation, dataset, granularity)
        try:
            bins = [(_bound_from_json(lo), _bound_from_json(hi)) for lo, hi in data["bins"]]
            anchors_by_kind = data["anchor_points"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bin configuration: expected keys 'bins' and 'anchor_points' ({exc})") from exc
        if isinstance(anchors_by_kind, dict):
            kind = anchor_kind or ("average" if "average" in anchors_by_kind else next(iter(anchors_by_kind)))
            if kind not in anchors_by_kind:
                raise ValueError(f"bin configuration has no '{kind}' anchors (has {sorted(anchors_by_kind)})")
            anchors = anchors_by_kind[kind]
        else:
            kind, anchors = anchor_kind or "custom", anchors_by_kind
        return cls(bins=tuple(bins), anchor_points=tuple(anchors),
                   reduction=int(reduction or data.get("reduction", 8)),
                   granularity=data.get("granularity", "custom"), anchor_kind=kind,
                   metadata=dict(data.get("metadata", {})))

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (atomically); :meth:`load` reads it back."""
        return atomic_write_json(path, self.to_dict())

    def save_clip_ebc(self, path: str | os.PathLike, dataset: str = "custom", truncation: int | None = None) -> Path:
        """Write this config as a one-entry file in CLIP-EBC's ``reduction_<B>.json`` layout."""
        return save_clip_ebc_configs({(truncation, dataset): [self]}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, anchor_kind: str | None = None, *, truncation: int | None = None,
             dataset: str | None = None, granularity: str | None = None,
             reduction: int | None = None) -> "BinConfig":
        """Read :meth:`save`'s JSON or a CLIP-EBC ``reduction_<B>.json`` file (one entry selected)."""
        path = Path(path)
        data = read_json(path, "bin configuration file")
        try:
            if _is_clip_ebc_multi(data):
                configs = load_clip_ebc_configs(path, reduction=reduction, anchor_kind=anchor_kind or "average")
                return _select_entry(configs, truncation, dataset, granularity)
            return cls.from_dict(data, anchor_kind=anchor_kind, reduction=reduction)
        except ValueError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def from_clip_ebc(cls, source: "str | os.PathLike | Mapping", truncation: int, dataset: str,
                      granularity: str = "fine", anchor_kind: str = "average",
                      reduction: int | None = None) -> "BinConfig":
        """One entry of a CLIP-EBC ``reduction_<B>.json`` file (path or parsed dict)."""
        configs = load_clip_ebc_configs(source, reduction=reduction, anchor_kind=anchor_kind)
        return _select_entry(configs, truncation, dataset, granularity)


# ====================================================================== CLIP-EBC multi-entry files
ClipEbcKey = tuple[int, str, str]  # (truncation, dataset, granularity)


def load_clip_ebc_configs(source: "str | os.PathLike | Mapping", reduction: int | None = None,
                          anchor_kind: str = "average") -> dict[ClipEbcKey, BinConfig]:
    """Read CLIP-EBC's published ``reduction_<B>.json`` into ``{(T, dataset, granularity): BinConfig}``.

    Layout: ``{"<T>": {"<dataset>": {"bins": {"<granularity>": [[lo, hi], …]},
    "anchor_points": {"<granularity>": {"middle": […], "average": […]}}}}``. ``reduction`` defaults
    to the ``<B>`` in the file name (``clip_ebc_reduction_8.json`` -> 8), else 8 for a dict.
    Each config's metadata records ``truncation`` and ``dataset``. Malformed entries raise
    ``ValueError`` naming the file and the entry.
    """
    where = "CLIP-EBC config"
    if isinstance(source, Mapping):
        data = source
    else:
        path = Path(source)
        where = str(path)
        data = read_json(path, "CLIP-EBC bin configuration")
        if reduction is None:
            match = re.search(r"reduction_(\d+)", path.name)
            reduction = int(match.group(1)) if match else None
    if reduction is None:
        reduction = 8
    if anchor_kind not in ANCHOR_KINDS:
        raise ValueError(f"anchor_kind must be one of {ANCHOR_KINDS}, got {anchor_kind!r}")
    if not _is_clip_ebc_multi(data):
        raise ValueError(f"{where}: expected {{\"<truncation>\": {{\"<dataset>\": {{\"bins\": …, \"anchor_points\": …}}}}}}")
    out: dict[ClipEbcKey, BinConfig] = {}
    for t_key, datasets in data.items():
        for dataset, entry in datasets.items():
            name = f"{where}: entry T={t_key} / {dataset}"
            if not isinstance(entry, dict) or "bins" not in entry or "anchor_points" not in entry:
                raise ValueError(f"{name}: expected keys 'bins' and 'anchor_points'")
            for gran, raw_bins in entry["bins"].items():
                try:
                    anchors = entry["anchor_points"][gran][anchor_kind]
                except (KeyError, TypeError):
                    raise ValueError(f"{name}: no '{anchor_kind}' anchors for the {gran} bins") from None
                try:
                    bins = tuple((_bound_from_json(lo), _bound_from_json(hi)) for lo, hi in raw_bins)
                    cfg = BinConfig(bins=bins, anchor_points=tuple(anchors), reduction=int(reduction),
                                    granularity=gran, anchor_kind=anchor_kind,
                                    metadata={"truncation": int(t_key), "dataset": dataset})
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{name} ({gran}): {exc}") from exc
                out[(int(t_key), dataset, gran)] = cfg
    return out


def _select_entry(configs: Mapping[ClipEbcKey, BinConfig], truncation, dataset, granularity) -> BinConfig:
    hits = [k for k in configs
            if (truncation is None or k[0] == int(truncation)) and (dataset is None or k[1] == dataset)
            and (granularity is None or k[2] == granularity)]
    if len(hits) == 1:
        return configs[hits[0]]
    available = ", ".join(f"T={t}/{d}/{g}" for t, d, g in sorted(configs))
    if not hits:
        raise ValueError(f"no entry with truncation={truncation}, dataset={dataset}, granularity={granularity}; "
                         f"available: {available}")
    raise ValueError(f"{len(hits)} entries match truncation={truncation}, dataset={dataset}, "
                     f"granularity={granularity}; say which (available: {available})")


def clip_ebc_configs_to_dict(configs: Mapping[tuple, "BinConfig | Sequence[BinConfig]"]) -> dict:
    """Inverse of :func:`load_clip_ebc_configs`: ``{(T, dataset): config(s)}`` -> CLIP-EBC's layout.

    Keys may be ``(T, dataset)`` or ``(T, dataset, granularity)``; ``T=None`` uses the config's
    ``metadata["truncation"]`` or the lower bound of its open bin. Each granularity is written with
    its ``middle`` anchors and, when the config holds them, its ``average`` anchors; two configs of
    one granularity in the same entry must share their bins.
    """
    out: dict[str, dict] = {}
    for key, value in configs.items():
        t, dataset = key[0], key[1]
        items = [value] if isinstance(value, BinConfig) else list(value)
        for cfg in items:
            trunc = t if t is not None else cfg.metadata.get("truncation", int(cfg.truncation))
            entry = out.setdefault(str(int(trunc)), {}).setdefault(str(dataset), {"bins": {}, "anchor_points": {}})
            bins_json = [[_bound_to_json(lo), _bound_to_json(hi)] for lo, hi in cfg.bins]
            gran = cfg.granularity
            if gran in entry["bins"] and entry["bins"][gran] != bins_json:
                raise ValueError(f"T={trunc} / {dataset}: two different {gran} bin sets")
            entry["bins"][gran] = bins_json
            anchors = entry["anchor_points"].setdefault(gran, {})
            anchors["middle"] = [_number_to_json(a) for a in cfg.middle_anchor_points]
            if cfg.anchor_kind != "middle":
                anchors[cfg.anchor_kind] = [_number_to_json(a) for a in cfg.anchor_points]
    return out


def save_clip_ebc_configs(configs: Mapping[tuple, "BinConfig | Sequence[BinConfig]"], path: str | os.PathLike) -> Path:
    """Write :func:`clip_ebc_configs_to_dict` to ``path`` (atomically)."""
    return atomic_write_json(path, clip_ebc_configs_to_dict(configs))


# ====================================================================== quantisation error
def reconstruct_counts(block_counts: Tensor, config: BinConfig) -> Tensor:
    """Count recovered from the ground-truth class map: ``sum_blocks anchor[class(block)]``.

    ``block_counts``: ``(..., h, w)``; returns ``(...)``. This is the count a perfect classifier
    would predict: the error against ``block_counts.sum((-2, -1))`` is the quantisation error the
    bins and anchors impose before any learning.
    """
    classes = config.counts_to_classes(block_counts)
    return config.anchors_tensor(device=classes.device, dtype=torch.float64)[classes].sum(dim=(-2, -1))


def quantisation_errors(annotations, configs: Mapping[str, BinConfig], *, progress: bool = False,
                        total: int | None = None):
    """Per-configuration error of counts reconstructed from ground-truth class maps.

    For every image ``i`` and configuration, ``hat{C}_i = sum_b anchor[class(c_b)]`` and
    ``C_i = sum_b c_b`` over its ``reduction``-pixel blocks ``b``. Returns a ``pandas.DataFrame``
    indexed by configuration name with columns ``bins`` (K), ``MAE`` (``mean_i |hat C_i - C_i|``),
    ``bias`` (``mean_i (hat C_i - C_i)``), ``RMSE``, ``rel_total_error``
    (``(sum hat C - sum C) / sum C``) and ``max_abs_error``.
    """
    import pandas as pd
    from tqdm import tqdm

    from .data.density import block_count_map

    if not configs:
        raise ValueError("quantisation_errors: no configurations given")
    iterable, inferred = _iter_annotations(annotations)
    errors: dict[str, list[float]] = {name: [] for name in configs}
    truths: list[float] = []
    for name, points, size in tqdm(iterable, total=total or inferred, disable=not progress, leave=False):
        maps = {}
        true = None
        for key, cfg in configs.items():
            if cfg.reduction not in maps:
                try:
                    maps[cfg.reduction] = block_count_map(torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2),
                                                          (int(size[0]), int(size[1])), cfg.reduction)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from exc
            counts = maps[cfg.reduction]
            true = float(counts.sum())
            errors[key].append(float(reconstruct_counts(counts, cfg)) - true)
        truths.append(true)
    if not truths:
        raise ValueError("quantisation_errors: the dataset is empty (no images/annotations)")
    total_true = float(sum(truths))
    rows = []
    for key, cfg in configs.items():
        err = np.asarray(errors[key])
        rows.append({"config": key, "bins": cfg.num_bins, "MAE": float(np.abs(err).mean()),
                     "bias": float(err.mean()), "RMSE": float(np.sqrt((err ** 2).mean())),
                     "rel_total_error": float(err.sum() / total_true) if total_true else float("nan"),
                     "max_abs_error": float(np.abs(err).max())})
    return pd.DataFrame(rows).set_index("config")


# ====================================================================== reference data
def find_shared_reference(start: str | os.PathLike | None = None) -> Path | None:
    """The folder of published reference figures (``shared/reference`` beside the checkout), or ``None``.

    Looks at ``$GIGACOUNT_REFERENCE`` (``none`` disables the search), then ``<checkout>/../shared/reference`` for the checkout that
    holds this package, then for ``shared/reference`` beside ``start`` (default: the working
    directory) and each of its parents. Returns ``None`` when absent (e.g. on Colab), so callers
    can say so and carry on.
    """
    env = os.environ.get("GIGACOUNT_REFERENCE")
    if env is not None and env.strip().lower() in {"none", "off"}:
        return None  # explicitly disabled (used to test the code path without reference data)
    candidates: list[Path] = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent.parent / "shared" / "reference")
    here = Path(start) if start is not None else Path.cwd()
    here = here.resolve()
    candidates += [d / "shared" / "reference" for d in (here, *here.parents)]
    for c in candidates:
        if (c / "clip_ebc_block_counts").is_dir() or (c / "clip_ebc_reduction_8.json").is_file():
            return c
    return None


# ====================================================================== plots (notebook 02)
def plot_count_histograms(ax, histograms: Mapping[str, "CountHistogram | Mapping"], *, share: bool = True,
                          log: bool = True, max_count: int | None = None):
    """Share (or number) of blocks per head count, one line per histogram, log-scaled y.

    Different datasets have very different numbers of blocks, so shares make them comparable.
    """
    for label, h in histograms.items():
        hist = CountHistogram.coerce(h)
        y = hist.shares() if share else hist.as_array()
        x = hist.counts()
        keep = y > 0
        if max_count is not None:
            keep &= x <= max_count
        ax.plot(x[keep], y[keep], marker="o", markersize=3, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("heads in a block (count c)")
    ax.set_ylabel("share of blocks" if share else "number of blocks")
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_bins(ax, configs: Mapping[str, BinConfig], max_count: int | None = None):
    """Each configuration as a row of intervals (one colour per bin) with its anchors marked."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20")
    rows = list(configs.items())
    top = max_count if max_count is not None else max(int(c.truncation) for _, c in rows) + 2
    for r, (label, cfg) in enumerate(rows):
        for k, ((lo, hi), a) in enumerate(zip(cfg.bins, cfg.anchor_points)):
            right = top + 0.5 if math.isinf(hi) else hi + 0.5
            ax.barh(r, right - (lo - 0.5), left=lo - 0.5, height=0.6, color=cmap(k % 20), edgecolor="black",
                    linewidth=0.5)
            ax.plot([a], [r], marker="|", color="black", markersize=14)
        ax.annotate(f"K={cfg.num_bins}", (top + 0.6, r), va="center", fontsize="small")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_xlim(-0.5, top + 2)
    ax.set_xlabel("heads in a block (| = anchor point)")
    ax.invert_yaxis()
    return ax


def plot_class_balance(ax, configs: Mapping[str, BinConfig], histogram: "CountHistogram | Mapping", log: bool = True):
    """Share of training blocks per class for each configuration (grouped bars, log y)."""
    n = len(configs)
    width = 0.8 / max(n, 1)
    for i, (label, cfg) in enumerate(configs.items()):
        shares = class_shares(cfg.bins, histogram)
        x = np.arange(len(shares)) + (i - (n - 1) / 2) * width
        ax.bar(x, np.where(shares > 0, shares, np.nan), width=width, label=f"{label} (K={cfg.num_bins})")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("class index k")
    ax.set_ylabel("share of training blocks")
    ax.legend(fontsize="small")
    return ax
