"""Enhanced blockwise classification (EBC): block counts, count bins, anchor points, ``BinConfig``.

Counting becomes classification: each output block (``reduction`` x ``reduction`` pixels) is
assigned to one of K count bins, and the model predicts a distribution over the bins. A bin
``[low, high]`` is inclusive on both ends (integer counts); ``high`` may be ``inf`` for the open
last bin. Each bin is represented by an *anchor point*, and the predicted block count is
``sum_k p_k * anchor_k``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["BinConfig", "fine_bins", "validate_bins"]

Bin = tuple[float, float]


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
        Works on any device. Negative or non-finite counts raise ``ValueError``.
        """
        counts = torch.as_tensor(counts)
        if counts.numel() and (not torch.isfinite(counts).all() or (counts < 0).any()):
            raise ValueError("counts_to_classes: block counts must be finite and non-negative")
        lows = self.lower_bounds_tensor(device=counts.device, dtype=torch.float64)
        return torch.bucketize(counts.to(torch.float64), lows, right=True) - 1

    def classes_to_counts(self, classes: Tensor) -> Tensor:
        """Anchor value of each class index (the count a hard classification stands for)."""
        return self.anchors_tensor(device=classes.device)[classes]

    def expected_count(self, probs: Tensor, dim: int = 1) -> Tensor:
        """``sum_k p_k * anchor_k`` along ``dim`` (kept as a size-1 dim), i.e. the block density."""
        self.check_num_classes(probs.shape[dim], where="probabilities")
        shape = [1] * probs.ndim
        shape[dim] = self.num_bins
        anchors = self.anchors_tensor(device=probs.device, dtype=probs.dtype).view(shape)
        return (probs * anchors).sum(dim=dim, keepdim=True)

    # ------------------------------------------------------------------ constructors / IO
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

    def to_dict(self) -> dict:
        """A JSON-ready dict in CLIP-EBC's layout (``"inf"`` for the open bin)."""
        return {
            "reduction": self.reduction,
            "granularity": self.granularity,
            "bins": [[_bound_to_json(lo), _bound_to_json(hi)] for lo, hi in self.bins],
            "anchor_points": {self.anchor_kind: list(self.anchor_points)},
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict, anchor_kind: str | None = None) -> "BinConfig":
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
        return cls(bins=tuple(bins), anchor_points=tuple(anchors), reduction=int(data.get("reduction", 8)),
                   granularity=data.get("granularity", "custom"), anchor_kind=kind,
                   metadata=dict(data.get("metadata", {})))

    def save(self, path: str | os.PathLike) -> Path:
        from .utils import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, anchor_kind: str | None = None) -> "BinConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"bin configuration file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        try:
            return cls.from_dict(data, anchor_kind=anchor_kind)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
