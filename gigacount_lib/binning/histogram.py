"""Block-count histograms: how many ``B x B`` blocks of a dataset hold exactly ``c`` heads.

Everything in blockwise classification is derived from this histogram (bins, anchors, the
truncation T), so it is built once by streaming over the annotations and stored in CLIP-EBC's
``counts_<B>.json`` layout (Ma, Sanchez & Guha, arXiv:2403.09281). The truncation checks live here
because they are statements about a histogram's tail.
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

from ..utils import atomic_write_bytes, read_json

__all__ = ["CountHistogram", "block_count_histogram", "block_count_histograms", "check_truncation",
           "suggest_truncation"]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


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
    from ..data.datasets import target_size

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

    from ..data.density import block_count_map

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
