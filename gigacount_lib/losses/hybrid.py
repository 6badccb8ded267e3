r"""Blockwise classification losses: cross-entropy, probability-Euclidean, DACE and the Adaptive Hybrid loss.

Notation (per image): ``h x w`` output blocks, ``K`` count bins (a :class:`~gigacount_lib.binning.BinConfig`),
logits ``z`` (``K x h x w``), probabilities ``p = softmax(z)`` over the bins, the predicted block density
``s = sum_k p_k a_k`` (anchors ``a_k``), the ground-truth block count ``g`` and class ``c = bin(g)``.

* **L_CE** (GigaCount eq. 2-3; CLIP-EBC's DACE): ``sum_blocks -log p_c``, averaged over the batch
  (CLIP-EBC's ``losses/dace_loss.py`` sums over blocks and averages over images).
* **L_Prob** (GigaCount eq. 4): ``sum_blocks || p - onehot(c) ||_2^2``, reduced like L_CE (the paper
  does not state the reduction; we use the same as L_CE so that the two terms have comparable scale).
* **L_Count**: the DM-Count loss (:class:`~gigacount_lib.losses.dmcount.DMCountLoss`).
* **Adaptive Hybrid** (GigaCount eq. 1): ``L = L_CE + L_Prob + lambda_1 L_Count`` with ``lambda_1 = 1``.
* **DACE** (CLIP-EBC, Ma et al. 2024, Sec. 3): ``L = L_CE + lambda L_count`` with the count loss
  ``"dmcount"`` (DM-Count), ``"mae"`` or ``"mse"`` (the latter two blockwise, ``sum_blocks |s - g|`` or
  ``(s - g)^2``, averaged over images, as in CLIP-EBC's code).

Every loss takes ``(logits, density, points, image_size)`` and returns ``(loss, terms)`` with ``terms``
a dict of floats for logging (one host sync per call, which also resolves the input checks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..binning import BinConfig
from .dmcount import (DMCountLoss, PointsLike, _input_flags, as_padded_points, block_counts_padded,
                      check_image_size, check_loss_inputs, finish_terms)

__all__ = ["block_targets", "CrossEntropyBlockLoss", "ProbabilityEuclideanLoss", "DACELoss",
           "AdaptiveHybridLoss", "build_loss"]


def block_targets(points: Tensor, mask: Tensor, grid_size: tuple[int, int], bin_config: BinConfig,
                  lower_bounds: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Ground-truth block counts ``(B, 1, h, w)`` and bin classes ``(B, h, w)`` (int64) from padded points.

    ``lower_bounds``: the bins' lower bounds, float32 on the points' device (made from
    ``bin_config`` when None). The losses pass a cached copy: building it from a Python list on a
    GPU is a blocking host-to-device copy, which would wait for the forward pass at every step.
    """
    counts = block_counts_padded(points, mask, grid_size, bin_config.reduction)
    lows = bin_config.lower_bounds_tensor(device=counts.device) if lower_bounds is None else lower_bounds
    classes = torch.bucketize(counts.squeeze(1), lows, right=True) - 1  # same rule as counts_to_classes
    return counts, classes


class CrossEntropyBlockLoss(nn.Module):
    r"""``L_CE = (1/B) sum_b sum_{blocks} -log softmax(z)_{c}`` (cross-entropy per block, summed, batch mean)."""

    def forward(self, logits: Tensor, classes: Tensor) -> Tensor:
        return F.cross_entropy(logits, classes, reduction="none").flatten(1).sum(-1).mean()


class ProbabilityEuclideanLoss(nn.Module):
    r"""``L_Prob = (1/B) sum_b sum_{blocks} || softmax(z) - onehot(c) ||_2^2`` (GigaCount eq. 4)."""

    def forward(self, logits: Tensor, classes: Tensor) -> Tensor:
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(classes, num_classes=logits.shape[1]).movedim(-1, 1).to(probs.dtype)
        return (probs - onehot).pow(2).sum(1).flatten(1).sum(-1).mean()


class _BlockLossBase(nn.Module):
    """Shared plumbing: shape/class checks, targets, float32 computation, one-sync logging."""

    def __init__(self, bin_config: BinConfig, check_inputs: bool = True) -> None:
        super().__init__()
        self.bin_config = bin_config
        self.check_inputs = check_inputs
        self.ce = CrossEntropyBlockLoss()
        self._lower_bounds: dict[torch.device, Tensor] = {}  # per device, made once (see block_targets)

    def lower_bounds(self, device: torch.device) -> Tensor:
        lows = self._lower_bounds.get(device)
        if lows is None:
            lows = self._lower_bounds[device] = self.bin_config.lower_bounds_tensor(device=device)
        return lows

    def _prepare(self, logits: Tensor, density: Tensor, points: PointsLike, image_size: tuple[int, int], where: str):
        grid = check_loss_inputs(density, image_size, self.bin_config.reduction, logits=logits, where=where)
        self.bin_config.check_num_classes(logits.shape[1], where=f"{where}: logits")
        padded, mask = as_padded_points(points, density.shape[0], density.device)
        flags = _input_flags(density, padded, mask, image_size, logits=logits) if self.check_inputs else None
        gt_blocks, classes = block_targets(padded, mask, grid, self.bin_config, self.lower_bounds(padded.device))
        dtype = torch.promote_types(logits.dtype, torch.float32)
        return logits.to(dtype), density.to(torch.promote_types(density.dtype, torch.float32)), padded, mask, \
            flags, gt_blocks, classes

    def _dmcount(self, density: Tensor, padded: Tensor, mask: Tensor, image_size, gt_blocks: Tensor,
                 name: str) -> dict[str, Tensor]:
        """``{name: weighted DM-Count loss, "dm_count", "dm_ot", "dm_ot_objective", "dm_tv": its terms}``."""
        terms = self.dm.terms(density, padded, mask, image_size, gt_blocks)
        return {name: self.dm.weighted_sum(terms), **{f"dm_{k}": v for k, v in terms.items()}}


class DACELoss(_BlockLossBase):
    r"""CLIP-EBC's distance-aware cross-entropy: ``L = L_CE + lambda * L_count``.

    Args:
        bin_config: bins (the number of logits must equal ``bin_config.num_bins``).
        count_loss: ``"dmcount"`` (DM-Count, :class:`DMCountLoss`), ``"mae"`` or ``"mse"`` (blockwise).
        weight_count: ``lambda`` (1.0).
        dm_options: passed to :class:`DMCountLoss` (``mode``, ``reg``, ``num_iters``, ...).
    """

    def __init__(self, bin_config: BinConfig, count_loss: str = "dmcount", weight_count: float = 1.0,
                 check_inputs: bool = True, **dm_options) -> None:
        super().__init__(bin_config, check_inputs)
        count_loss = count_loss.lower()
        if count_loss not in ("dmcount", "mae", "mse"):
            raise ValueError(f"DACELoss: count_loss must be 'dmcount', 'mae' or 'mse', got {count_loss!r}")
        self.count_loss = count_loss
        self.weight_count = float(weight_count)
        self.dm = DMCountLoss(bin_config.reduction, check_inputs=False, **dm_options) if count_loss == "dmcount" else None

    def forward(self, logits: Tensor, density: Tensor, points: PointsLike, image_size) -> tuple[Tensor, dict]:
        with torch.autocast(device_type=density.device.type, enabled=False):
            image_size = check_image_size(image_size, "DACELoss")
            logits, density, padded, mask, flags, gt_blocks, classes = self._prepare(
                logits, density, points, image_size, "DACELoss")
            named = {"ce": self.ce(logits, classes)}
            if self.dm is not None:
                named.update(self._dmcount(density, padded, mask, image_size, gt_blocks, "dmcount"))
                count = named["dmcount"]
            else:
                diff = density - gt_blocks.to(density.dtype)
                per_block = diff.abs() if self.count_loss == "mae" else diff.pow(2)
                count = per_block.flatten(1).sum(-1).mean()
                named[self.count_loss] = count
            loss = named["ce"] + self.weight_count * count
            return finish_terms(loss, named, flags, "DACELoss", image_size)


class AdaptiveHybridLoss(_BlockLossBase):
    r"""GigaCount's Adaptive Hybrid loss (eq. 1): ``L = w_ce L_CE + w_prob L_Prob + lambda_1 L_Count``.

    Defaults ``w_ce = w_prob = lambda_1 = 1`` and ``L_Count`` = DM-Count (count L1 + 0.1 OT + 0.01 TV).
    Setting a weight to 0 switches the term off (and skips its computation; for ``L_Count`` this skips
    the Sinkhorn solve).

    Args:
        bin_config: bins; the logits must have ``bin_config.num_bins`` channels.
        weight_ce, weight_prob, weight_count: the three term weights.
        dm_options: passed to :class:`DMCountLoss` (``mode="reference"|"exact"``, ``weight_ot``, ...).

    ``forward(logits (B,K,h,w), density (B,1,h,w), points, image_size) -> (loss, terms)`` with ``terms``
    the floats ``loss, ce, prob, count`` and the DM-Count parts ``dm_count, dm_ot, dm_ot_objective, dm_tv``.
    """

    def __init__(self, bin_config: BinConfig, weight_ce: float = 1.0, weight_prob: float = 1.0,
                 weight_count: float = 1.0, check_inputs: bool = True, **dm_options) -> None:
        super().__init__(bin_config, check_inputs)
        self.weight_ce = float(weight_ce)
        self.weight_prob = float(weight_prob)
        self.weight_count = float(weight_count)
        self.prob = ProbabilityEuclideanLoss()
        self.dm = DMCountLoss(bin_config.reduction, check_inputs=False, **dm_options)

    def extra_repr(self) -> str:
        return f"weights=(ce {self.weight_ce}, prob {self.weight_prob}, count {self.weight_count})"

    def forward(self, logits: Tensor, density: Tensor, points: PointsLike, image_size) -> tuple[Tensor, dict]:
        with torch.autocast(device_type=density.device.type, enabled=False):
            image_size = check_image_size(image_size, "AdaptiveHybridLoss")
            logits, density, padded, mask, flags, gt_blocks, classes = self._prepare(
                logits, density, points, image_size, "AdaptiveHybridLoss")
            zero = density.new_zeros(())
            named = {
                "ce": self.ce(logits, classes) if self.weight_ce else zero,
                "prob": self.prob(logits, classes) if self.weight_prob else zero,
            }
            if self.weight_count:
                named.update(self._dmcount(density, padded, mask, image_size, gt_blocks, "count"))
            else:
                named["count"] = zero
            loss = self.weight_ce * named["ce"] + self.weight_prob * named["prob"] + self.weight_count * named["count"]
            return finish_terms(loss, named, flags, "AdaptiveHybridLoss", image_size)


def build_loss(name: str, bin_config: BinConfig, **options) -> nn.Module:
    """``"hybrid"`` -> :class:`AdaptiveHybridLoss`, ``"dace"`` -> :class:`DACELoss`, ``"dmcount"`` -> :class:`DMCountLoss`."""
    name = name.lower()
    if name in ("hybrid", "adaptive_hybrid"):
        return AdaptiveHybridLoss(bin_config, **options)
    if name == "dace":
        return DACELoss(bin_config, **options)
    if name == "dmcount":
        return DMCountLoss(bin_config.reduction, **options)
    raise ValueError(f"unknown loss {name!r}; choose 'hybrid', 'dace' or 'dmcount'")
