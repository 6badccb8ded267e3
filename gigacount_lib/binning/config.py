"""``BinConfig``: one bin set with its anchors, the object models and losses are built from.

It maps block counts to classes (vectorised, any device), turns class probabilities back into a
count, and reads/writes JSON in CLIP-EBC's layout (Ma, Sanchez & Guha, arXiv:2403.09281). The
multi-entry ``reduction_<B>.json`` files are handled in :mod:`.clip_ebc_io`, which builds on this
class; the methods that need it import it when called.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..utils import atomic_write_json, read_json
from .anchors import compute_anchors, middle_anchors
from .histogram import CountHistogram, check_truncation
from .rules import Bin, fine_bins, make_bins, validate_bins

__all__ = ["BinConfig"]

_REDUCTIONS = (4, 8, 16, 32, 64)  # block sizes (model output strides, pixels)


# JSON spelling shared with CLIP-EBC's files: "inf" for the open bound, whole numbers as ints.
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
            if not math.isfinite(a):
                raise ValueError(f"BinConfig: anchor_points[{i}]={a} is not finite; an anchor is the count its "
                                 f"bin [{_bound_to_json(low)}, {_bound_to_json(high)}] stands for, a finite "
                                 f"number >= {_bound_to_json(low)}")
            if not (low <= a <= high):
                raise ValueError(f"BinConfig: anchor_points[{i}]={a} lies outside its bin [{low}, {high}]")
        object.__setattr__(self, "anchor_points", anchors)
        reduction = self.reduction
        if isinstance(reduction, bool) or not isinstance(reduction, numbers.Real) \
                or not math.isfinite(reduction) or int(reduction) != reduction or int(reduction) not in _REDUCTIONS:
            raise ValueError(f"BinConfig: reduction must be one of {', '.join(map(str, _REDUCTIONS))} "
                             f"(block size in pixels), got {reduction!r}")
        object.__setattr__(self, "reduction", int(reduction))

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
        from .clip_ebc_io import _is_clip_ebc_multi, _select_entry, load_clip_ebc_configs

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
        if not isinstance(anchors, (list, tuple)):
            raise ValueError(f"bin configuration: anchor_points must be a list of numbers, got {anchors!r}")
        try:
            anchors = [_bound_from_json(a) for a in anchors]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bin configuration: anchor_points must be numbers ({exc})") from exc
        return cls(bins=tuple(bins), anchor_points=tuple(anchors),
                   reduction=reduction or data.get("reduction", 8),
                   granularity=data.get("granularity", "custom"), anchor_kind=kind,
                   metadata=dict(data.get("metadata", {})))

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (atomically); :meth:`load` reads it back."""
        return atomic_write_json(path, self.to_dict())

    def save_clip_ebc(self, path: str | os.PathLike, dataset: str = "custom", truncation: int | None = None) -> Path:
        """Write this config as a one-entry file in CLIP-EBC's ``reduction_<B>.json`` layout."""
        from .clip_ebc_io import save_clip_ebc_configs

        return save_clip_ebc_configs({(truncation, dataset): [self]}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, anchor_kind: str | None = None, *, truncation: int | None = None,
             dataset: str | None = None, granularity: str | None = None,
             reduction: int | None = None) -> "BinConfig":
        """Read :meth:`save`'s JSON or a CLIP-EBC ``reduction_<B>.json`` file (one entry selected)."""
        from .clip_ebc_io import _is_clip_ebc_multi, _select_entry, load_clip_ebc_configs

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
        from .clip_ebc_io import _select_entry, load_clip_ebc_configs

        configs = load_clip_ebc_configs(source, reduction=reduction, anchor_kind=anchor_kind)
        return _select_entry(configs, truncation, dataset, granularity)
