r"""Calibration of the bin probabilities: reliability statistics and expected calibration error (ECE).

Top-label calibration (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): for every
block take the confidence ``max_k p_k`` and whether ``argmax_k p_k`` is the true bin. Group the blocks
into ``n_bins`` equal-width confidence bins ``B_m``; then

.. math::
    \mathrm{ECE} = \sum_m \frac{|B_m|}{n} \left| \mathrm{acc}(B_m) - \mathrm{conf}(B_m) \right|.

A calibrated classifier has ``acc = conf`` in every bin (the diagonal of the reliability diagram).

Top-label ECE says little when one bin dominates (most blocks of a crowd image are empty): a model that
puts 97% on "0 heads" everywhere is top-label calibrated while its probabilities for the other bins can
be far off. The *classwise* variant (Kull et al., NeurIPS 2019) therefore looks at every bin: for each
class ``k`` the pairs ``(p_k, [c == k])`` are binned as above, and classwise-ECE is the mean over the
classes of their ECEs; ``kind="classwise"`` in :func:`reliability_stats` pools the pairs of all classes
for the diagram and reports that mean as ``ece``.
GigaCount's L_Prob (squared distance between ``p`` and the one-hot target, the Brier score) is a proper
scoring rule, so it rewards calibrated probabilities; notebook 04 measures its effect.
:class:`ReliabilityAccumulator` sums these statistics over many images without keeping their blocks
(:func:`gigacount_lib.evaluate.evaluate_model` uses it); :func:`gigacount_lib.evaluate` re-exports the
public names. The reliability diagram is drawn by :func:`gigacount_lib.losses.plots.plot_reliability`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ReliabilityStats", "reliability_stats", "expected_calibration_error", "block_probabilities",
           "ReliabilityAccumulator"]


@dataclass
class ReliabilityStats:
    """Per confidence bin: edges ``(n_bins+1,)``, mean confidence, accuracy and block count ``(n_bins,)``."""

    edges: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    kind: str = "top"
    class_ece: Tensor | None = None  # classwise: ECE of each class

    @property
    def ece(self) -> float:
        if self.class_ece is not None:
            return float(self.class_ece.mean())
        return _ece(self.count, self.accuracy, self.confidence)


def _ece(count: Tensor, accuracy: Tensor, confidence: Tensor) -> float:
    total = float(count.sum())
    if total == 0:
        return float("nan")
    return float(((count / total) * (accuracy - confidence).abs()).sum())


def _binned_sums(conf: Tensor, hit: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per confidence bin ``(n_bins,)`` float64: block count, sum of confidences, sum of hits."""
    conf, hit = conf.contiguous(), hit.contiguous()
    idx = torch.bucketize(conf, _edges(n_bins)[1:-1], right=False)  # bin m holds (edges[m], edges[m+1]]
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, hit)
    return count, conf_sum, hit_sum


def _edges(n_bins: int) -> Tensor:
    return torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)


def _check_probs(probs: Tensor, classes: Tensor, where: str) -> tuple[Tensor, Tensor]:
    """``(n, K)`` float64 probabilities and ``(n,)`` classes on the host."""
    if probs.ndim == 4:
        probs = probs.movedim(1, -1).reshape(-1, probs.shape[1])
    classes = classes.reshape(-1)
    if probs.shape[0] != classes.shape[0]:
        raise ValueError(f"{where}: {probs.shape[0]} probability rows for {classes.shape[0]} classes")
    return probs.detach().cpu().double(), classes.cpu()  # to the host first: MPS has no float64


def reliability_stats(probs: Tensor, classes: Tensor, n_bins: int = 10, kind: str = "top") -> ReliabilityStats:
    """Reliability statistics of block probabilities, top-label (``kind="top"``) or classwise.

    Args:
        probs: ``(B, K, h, w)`` (or ``(n, K)``) probabilities over the bins (rows sum to 1).
        classes: ``(B, h, w)`` (or ``(n,)``) true bin indices.
    """
    accumulator = ReliabilityAccumulator(n_bins, kind, where="reliability_stats")
    accumulator.add(probs, classes)
    return accumulator.result()


def expected_calibration_error(probs: Tensor, classes: Tensor, n_bins: int = 10, kind: str = "top") -> float:
    """Top-label (default) or classwise ECE (see the module docstring)."""
    return reliability_stats(probs, classes, n_bins, kind=kind).ece


def block_probabilities(logits: Tensor, points, bin_config) -> tuple[Tensor, Tensor]:
    """Bin probabilities ``(B*h*w, K)`` (float32) and true bin classes ``(B*h*w,)`` of every block of a batch.

    ``logits`` ``(B, K, h, w)``; ``points`` a list of ``(N_i, 2)`` tensors or a ``(padded, mask)``
    pair. Both results stay on the logits' device.
    """
    from .losses._common import as_padded_points
    from .losses.hybrid import block_targets

    padded, mask = as_padded_points(points, logits.shape[0], logits.device)
    _, classes = block_targets(padded, mask, tuple(logits.shape[-2:]), bin_config)
    probs = logits.float().softmax(1)
    return probs.movedim(1, -1).reshape(-1, probs.shape[1]), classes.reshape(-1)


class ReliabilityAccumulator:
    """Reliability statistics summed over many calls of :meth:`add` (e.g. one per image), without
    keeping the blocks: :meth:`result` is the :func:`reliability_stats` of all the blocks at once
    (which is this class with a single :meth:`add`).

    ``kind="top"`` (top-label) or ``"classwise"`` (per-class sums are kept, so the classwise ECE is
    the mean over the classes of their ECEs, as in :func:`reliability_stats`).
    """

    def __init__(self, n_bins: int = 10, kind: str = "top", *, where: str = "ReliabilityAccumulator") -> None:
        if kind not in ("top", "classwise"):
            raise ValueError(f"{where}: kind must be 'top' or 'classwise', got {kind!r}")
        if n_bins < 1:
            raise ValueError(f"{where}: n_bins must be >= 1, got {n_bins}")
        self.n_bins, self.kind, self._where = int(n_bins), kind, where
        self._sums: Tensor | None = None  # (3, n_bins) top; (K, 3, n_bins) classwise: count, conf, hit
        self._hits = 0.0   # top-label: correct blocks
        self._blocks = 0

    def add(self, probs: Tensor, classes: Tensor) -> None:
        """Add blocks: ``probs`` ``(B, K, h, w)`` or ``(n, K)``, ``classes`` ``(B, h, w)`` or ``(n,)``."""
        probs, classes = _check_probs(probs, classes, self._where)
        if self.kind == "top":
            conf, pred = probs.max(dim=1)
            hit = (pred == classes).double()
            sums = torch.stack(_binned_sums(conf, hit, self.n_bins))
            self._hits += float(hit.sum())
        else:
            onehot = torch.nn.functional.one_hot(classes, probs.shape[1]).double()
            sums = torch.stack([torch.stack(_binned_sums(probs[:, k], onehot[:, k], self.n_bins))
                                for k in range(probs.shape[1])])
        if self._sums is not None and self._sums.shape != sums.shape:
            raise ValueError(f"{self._where}: {probs.shape[1]} classes after "
                             f"{self._sums.shape[0]} in earlier blocks")
        self._sums = sums if self._sums is None else self._sums + sums
        self._blocks += int(classes.numel())

    @property
    def blocks(self) -> int:
        return self._blocks

    def accuracy(self) -> float:
        """Top-label block accuracy (NaN without blocks; ``kind="top"`` only)."""
        if self.kind != "top":
            raise ValueError("ReliabilityAccumulator.accuracy: top-label only (kind='top')")
        return self._hits / self._blocks if self._blocks else float("nan")

    def result(self) -> ReliabilityStats | None:
        """The pooled statistics (``None`` before the first :meth:`add`; with no blocks the counts are
        0 and the ECE is NaN)."""
        if self._sums is None:
            return None
        if self.kind == "top":
            count, conf_sum, hit_sum = self._sums
            safe = count.clamp_min(1)
            return ReliabilityStats(_edges(self.n_bins), conf_sum / safe, hit_sum / safe, count.clone())
        per_class = [_ece(c, h / c.clamp_min(1), s / c.clamp_min(1)) for c, s, h in self._sums]
        count, conf_sum, hit_sum = self._sums.sum(0)
        safe = count.clamp_min(1)
        return ReliabilityStats(_edges(self.n_bins), conf_sum / safe, hit_sum / safe, count.clone(),
                                kind="classwise", class_ece=torch.tensor(per_class, dtype=torch.float64))
