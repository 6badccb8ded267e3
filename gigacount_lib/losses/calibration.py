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
The reliability diagram is drawn by :func:`gigacount_lib.losses.plots.plot_reliability`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ReliabilityStats", "reliability_stats", "expected_calibration_error", "block_probabilities"]


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


def _binned(conf: Tensor, hit: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    conf, hit = conf.contiguous(), hit.contiguous()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges[1:-1], right=False)  # bin m holds (edges[m], edges[m+1]]
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, hit)
    safe = count.clamp_min(1)
    return edges, conf_sum / safe, hit_sum / safe, count


def reliability_stats(probs: Tensor, classes: Tensor, n_bins: int = 10, kind: str = "top") -> ReliabilityStats:
    """Reliability statistics of block probabilities, top-label (``kind="top"``) or classwise.

    Args:
        probs: ``(B, K, h, w)`` (or ``(n, K)``) probabilities over the bins (rows sum to 1).
        classes: ``(B, h, w)`` (or ``(n,)``) true bin indices.
    """
    if probs.ndim == 4:
        probs = probs.movedim(1, -1).reshape(-1, probs.shape[1])
    classes = classes.reshape(-1)
    if probs.shape[0] != classes.shape[0]:
        raise ValueError(f"reliability_stats: {probs.shape[0]} probability rows for {classes.shape[0]} classes")
    if n_bins < 1:
        raise ValueError(f"reliability_stats: n_bins must be >= 1, got {n_bins}")
    probs = probs.detach().cpu().double()  # to the host first: MPS has no float64
    classes = classes.cpu()
    if kind == "top":
        conf, pred = probs.max(dim=1)
        edges, conf_m, acc_m, count = _binned(conf, (pred == classes).double(), n_bins)
        return ReliabilityStats(edges, conf_m, acc_m, count, kind="top")
    if kind == "classwise":
        onehot = torch.nn.functional.one_hot(classes, probs.shape[1]).double()
        per_class = []
        for k in range(probs.shape[1]):
            _, c_m, a_m, n_m = _binned(probs[:, k], onehot[:, k], n_bins)
            per_class.append(_ece(n_m, a_m, c_m))
        edges, conf_m, acc_m, count = _binned(probs.reshape(-1), onehot.reshape(-1), n_bins)
        return ReliabilityStats(edges, conf_m, acc_m, count, kind="classwise",
                                class_ece=torch.tensor(per_class, dtype=torch.float64))
    raise ValueError(f"reliability_stats: kind must be 'top' or 'classwise', got {kind!r}")


def expected_calibration_error(probs: Tensor, classes: Tensor, n_bins: int = 10, kind: str = "top") -> float:
    """Top-label (default) or classwise ECE (see the module docstring)."""
    return reliability_stats(probs, classes, n_bins, kind=kind).ece


def block_probabilities(logits: Tensor, points, bin_config) -> tuple[Tensor, Tensor]:
    """Bin probabilities ``(B*h*w, K)`` (float32) and true bin classes ``(B*h*w,)`` of every block of a batch.

    ``logits`` ``(B, K, h, w)``; ``points`` a list of ``(N_i, 2)`` tensors or a ``(padded, mask)``
    pair. Both results stay on the logits' device.
    """
    from .dmcount import as_padded_points
    from .hybrid import block_targets

    padded, mask = as_padded_points(points, logits.shape[0], logits.device)
    _, classes = block_targets(padded, mask, tuple(logits.shape[-2:]), bin_config)
    probs = logits.float().softmax(1)
    return probs.movedim(1, -1).reshape(-1, probs.shape[1]), classes.reshape(-1)

