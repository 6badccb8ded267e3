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

Every loss is called as ``loss_fn(output, batch) -> (loss, terms)`` with a ``CountingOutput`` and a
``CrowdBatch``, or on raw tensors as ``loss_fn.compute(logits, density, points, image_size)``; ``terms``
is a dict of floats for logging (one host sync per call, which also resolves the input checks). The
block targets are made from the batch's points at ``bin_config.reduction``, which must be the model's
output stride (checked against the output grid and the image size). :class:`CrossEntropyBlockLoss`
and :class:`ProbabilityEuclideanLoss` are L_CE and L_Prob alone as training losses; the functions
:func:`cross_entropy_blocks` and :func:`probability_euclidean` compute them from logits and classes.

References: "GigaCount: Enhancing Crowd Counting by Integrating a Multi-Scale Feature Fusion Model
into CLIP-EBC" (eq. 1-4; official code AdamHermes/GigaCount); Ma, Sanchez, Guha, "CLIP-EBC: CLIP Can
Count Accurately through Enhanced Blockwise Classification", arXiv:2403.09281 (DACE); Wang et al.,
"Distribution Matching for Crowd Counting", NeurIPS 2020 (DM-Count).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..binning import BinConfig
from ._common import (CountingLoss, PointsLike, _input_flags, as_padded_points, block_counts_padded,
                      check_image_size, check_loss_inputs, finish_terms)
from .dmcount import DMCountLoss

__all__ = ["block_targets", "cross_entropy_blocks", "probability_euclidean", "CrossEntropyBlockLoss",
           "ProbabilityEuclideanLoss", "DACELoss", "AdaptiveHybridLoss", "LOSS_NAMES", "build_loss"]


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


def cross_entropy_blocks(logits: Tensor, classes: Tensor, focal_gamma: float = 0.0) -> Tensor:
    r"""``L_CE = (1/B) sum_b sum_{blocks} -log softmax(z)_{c}`` (GigaCount eq. 2-3).

    ``logits`` ``(B, K, h, w)``, ``classes`` ``(B, h, w)`` int64 (e.g. from :func:`block_targets`).
    ``focal_gamma > 0`` gives the focal variant ``sum_blocks -(1 - p_c)^gamma log p_c`` (Lin et al.,
    "Focal Loss for Dense Object Detection", ICCV 2017): not in the paper, an option for the CPU preset's
    search, where 98% of the blocks are empty and easy.
    """
    ce = F.cross_entropy(logits, classes, reduction="none")
    if focal_gamma:
        ce = ce * (1.0 - torch.exp(-ce)).clamp_min(0.0).pow(float(focal_gamma))  # (1 - p_c)^gamma
    return ce.flatten(1).sum(-1).mean()


def probability_euclidean(logits: Tensor, classes: Tensor) -> Tensor:
    r"""``L_Prob = (1/B) sum_b sum_{blocks} || softmax(z) - onehot(c) ||_2^2`` (GigaCount eq. 4).

    ``logits`` ``(B, K, h, w)``, ``classes`` ``(B, h, w)`` int64 (e.g. from :func:`block_targets`).
    """
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(classes, num_classes=logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    return (probs - onehot).pow(2).sum(1).flatten(1).sum(-1).mean()


class _BlockLossBase(CountingLoss):
    """Shared plumbing: shape/class checks, targets, float32 computation, one-sync logging.

    A subclass sets ``uses_density`` and implements ``_named_terms``, which returns the loss and its
    named terms as tensors; :meth:`compute` does the rest.
    """

    uses_density = True

    def __init__(self, bin_config: BinConfig, check_inputs: bool = True) -> None:
        super().__init__()
        if not isinstance(bin_config, BinConfig):
            raise TypeError(f"{type(self).__name__}: bin_config must be a BinConfig, got a {type(bin_config).__name__}")
        self.bin_config = bin_config
        self.check_inputs = check_inputs
        self._lower_bounds: dict[torch.device, Tensor] = {}  # per device, made once (see block_targets)

    def lower_bounds(self, device: torch.device) -> Tensor:
        lows = self._lower_bounds.get(device)
        if lows is None:
            lows = self._lower_bounds[device] = self.bin_config.lower_bounds_tensor(device=device)
        return lows

    def compute(self, logits: Tensor, density: Tensor | None, points: PointsLike,
                image_size: tuple[int, int]) -> tuple[Tensor, dict]:
        """The loss on raw tensors: ``logits (B, K, h, w)``, ``density (B, 1, h, w)`` (ignored, may be
        ``None``, for the losses of the logits alone), ``points`` (list of ``(N_i, 2)`` or
        ``(padded, mask)``), ``image_size (H, W)``."""
        where = type(self).__name__
        if not self.uses_density:
            density = None
        elif density is None:
            raise ValueError(f"{where}: density (B, 1, h, w) is required")
        if logits is None:
            raise ValueError(f"{where}: logits (B, K, h, w) are required")
        device_type = logits.device.type if torch.is_tensor(logits) else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            image_size = check_image_size(image_size, where)
            grid = check_loss_inputs(density, image_size, self.bin_config.reduction, logits=logits, where=where,
                                     reduction_source=f"bin_config.reduction = {self.bin_config.reduction}")
            self.bin_config.check_num_classes(logits.shape[1], where=f"{where}: logits")
            padded, mask = as_padded_points(points, logits.shape[0], logits.device)
            flags = _input_flags(density, padded, mask, image_size, logits=logits) if self.check_inputs else None
            gt_blocks, classes = block_targets(padded, mask, grid, self.bin_config, self.lower_bounds(padded.device))
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            if density is not None:
                density = density.to(torch.promote_types(density.dtype, torch.float32))
            loss, named = self._named_terms(logits, density, padded, mask, image_size, gt_blocks, classes)
            return finish_terms(loss, named, flags, where, image_size)

    def _named_terms(self, logits: Tensor, density: Tensor | None, padded: Tensor, mask: Tensor,
                     image_size: tuple[int, int], gt_blocks: Tensor,
                     classes: Tensor) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def _dmcount(self, density: Tensor, padded: Tensor, mask: Tensor, image_size, gt_blocks: Tensor,
                 name: str) -> dict[str, Tensor]:
        """``{name: weighted DM-Count loss, "dm_count", "dm_ot", "dm_ot_objective", "dm_tv": its terms}``."""
        terms = self.dm.terms(density, padded, mask, image_size, gt_blocks)
        return {name: self.dm.weighted_sum(terms), **{f"dm_{k}": v for k, v in terms.items()}}


class CrossEntropyBlockLoss(_BlockLossBase):
    r"""L_CE alone as a training loss: ``L = (1/B) sum_b sum_{blocks} -log softmax(z)_{c}`` (eq. 2-3).

    Args:
        bin_config: bins; the logits must have ``bin_config.num_bins`` channels, and the block
            targets are counted at ``bin_config.reduction``.
        check_inputs: refuse NaN/inf logits and points outside the crop.

    ``loss_fn(output, batch) -> (loss, {"loss", "ce"})`` (the density is not used);
    ``loss_fn.compute(logits, density, points, image_size)`` on raw tensors. For logits and classes
    already at hand, :func:`cross_entropy_blocks`.
    """

    uses_density = False

    def _named_terms(self, logits, density, padded, mask, image_size, gt_blocks, classes):
        ce = cross_entropy_blocks(logits, classes)
        return ce, {"ce": ce}


class ProbabilityEuclideanLoss(_BlockLossBase):
    r"""L_Prob alone as a training loss: ``L = (1/B) sum_b sum_{blocks} || softmax(z) - onehot(c) ||_2^2`` (eq. 4).

    Args:
        bin_config: bins; the logits must have ``bin_config.num_bins`` channels, and the block
            targets are counted at ``bin_config.reduction``.
        check_inputs: refuse NaN/inf logits and points outside the crop.

    ``loss_fn(output, batch) -> (loss, {"loss", "prob"})`` (the density is not used);
    ``loss_fn.compute(logits, density, points, image_size)`` on raw tensors. For logits and classes
    already at hand, :func:`probability_euclidean`.
    """

    uses_density = False

    def _named_terms(self, logits, density, padded, mask, image_size, gt_blocks, classes):
        prob = probability_euclidean(logits, classes)
        return prob, {"prob": prob}


class DACELoss(_BlockLossBase):
    r"""CLIP-EBC's distance-aware cross-entropy: ``L = L_CE + lambda * L_count``.

    Args:
        bin_config: bins (the number of logits must equal ``bin_config.num_bins``; the block size is
            ``bin_config.reduction``).
        count_loss: ``"dmcount"`` (DM-Count, :class:`DMCountLoss`), ``"mae"`` or ``"mse"`` (blockwise).
        weight_count: ``lambda`` (1.0).
        dm_options: passed to :class:`DMCountLoss` (``mode``, ``reg``, ``num_iters``, ...).

    ``loss_fn(output, batch) -> (loss, terms)``, or ``loss_fn.compute(logits, density, points,
    image_size)`` on raw tensors; ``terms``: ``loss, ce`` and ``dmcount`` (with the DM-Count parts
    ``dm_count, dm_ot, dm_ot_objective, dm_tv``), ``mae`` or ``mse``.
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

    def _named_terms(self, logits, density, padded, mask, image_size, gt_blocks, classes):
        named = {"ce": cross_entropy_blocks(logits, classes)}
        if self.dm is not None:
            named.update(self._dmcount(density, padded, mask, image_size, gt_blocks, "dmcount"))
            count = named["dmcount"]
        else:
            diff = density - gt_blocks.to(density.dtype)
            per_block = diff.abs() if self.count_loss == "mae" else diff.pow(2)
            count = per_block.flatten(1).sum(-1).mean()
            named[self.count_loss] = count
        return named["ce"] + self.weight_count * count, named


class AdaptiveHybridLoss(_BlockLossBase):
    r"""GigaCount's Adaptive Hybrid loss (eq. 1): ``L = w_ce L_CE + w_prob L_Prob + lambda_1 L_Count``.

    Defaults ``w_ce = w_prob = lambda_1 = 1`` and ``L_Count`` = DM-Count (count L1 + 0.1 OT + 0.01 TV).
    Setting a weight to 0 switches the term off (and skips its computation; for ``L_Count`` this skips
    the Sinkhorn solve).

    Args:
        bin_config: bins; the logits must have ``bin_config.num_bins`` channels, and the block size is
            ``bin_config.reduction``.
        weight_ce, weight_prob, weight_count: the three term weights.
        focal_gamma: 0 (the paper) or the focusing exponent of a focal L_CE (:func:`cross_entropy_blocks`).
        dm_options: passed to :class:`DMCountLoss` (``mode="reference"|"exact"``, ``weight_ot``, ...).

    ``loss_fn(output, batch) -> (loss, terms)`` with a ``CountingOutput`` (``logits (B,K,h,w)``,
    ``density (B,1,h,w)``) and a ``CrowdBatch``, or ``loss_fn.compute(logits, density, points,
    image_size)`` on raw tensors; ``terms`` the floats ``loss, ce, prob, count`` and the DM-Count
    parts ``dm_count, dm_ot, dm_ot_objective, dm_tv``.
    """

    def __init__(self, bin_config: BinConfig, weight_ce: float = 1.0, weight_prob: float = 1.0,
                 weight_count: float = 1.0, check_inputs: bool = True, focal_gamma: float = 0.0,
                 **dm_options) -> None:
        super().__init__(bin_config, check_inputs)
        if focal_gamma < 0:
            raise ValueError(f"AdaptiveHybridLoss: focal_gamma must be >= 0, got {focal_gamma!r}")
        self.focal_gamma = float(focal_gamma)
        self.weight_ce = float(weight_ce)
        self.weight_prob = float(weight_prob)
        self.weight_count = float(weight_count)
        self.dm = DMCountLoss(bin_config.reduction, check_inputs=False, **dm_options)

    def extra_repr(self) -> str:
        focal = f", focal_gamma={self.focal_gamma}" if self.focal_gamma else ""
        return f"weights=(ce {self.weight_ce}, prob {self.weight_prob}, count {self.weight_count}){focal}"

    def _named_terms(self, logits, density, padded, mask, image_size, gt_blocks, classes):
        zero = density.new_zeros(())
        named = {
            "ce": cross_entropy_blocks(logits, classes, self.focal_gamma) if self.weight_ce else zero,
            "prob": probability_euclidean(logits, classes) if self.weight_prob else zero,
        }
        if self.weight_count:
            named.update(self._dmcount(density, padded, mask, image_size, gt_blocks, "count"))
        else:
            named["count"] = zero
        loss = self.weight_ce * named["ce"] + self.weight_prob * named["prob"] + self.weight_count * named["count"]
        return loss, named


LOSS_NAMES = ("hybrid", "dace", "dmcount", "ce", "prob")
"""The names :func:`build_loss` accepts (``"adaptive_hybrid"`` is an alias of ``"hybrid"``)."""


def build_loss(name: str, bin_config: BinConfig, **options) -> CountingLoss:
    """A training loss by name, called as ``loss_fn(output, batch)``.

    ``"hybrid"`` -> :class:`AdaptiveHybridLoss`, ``"dace"`` -> :class:`DACELoss`, ``"dmcount"`` ->
    :class:`DMCountLoss` (at ``bin_config.reduction``), ``"ce"`` -> :class:`CrossEntropyBlockLoss`,
    ``"prob"`` -> :class:`ProbabilityEuclideanLoss`; ``options`` go to the constructor.
    """
    name = name.lower()
    if name in ("hybrid", "adaptive_hybrid"):
        return AdaptiveHybridLoss(bin_config, **options)
    if name == "dace":
        return DACELoss(bin_config, **options)
    if name == "dmcount":
        return DMCountLoss(bin_config.reduction, **options)
    if name == "ce":
        return CrossEntropyBlockLoss(bin_config, **options)
    if name == "prob":
        return ProbabilityEuclideanLoss(bin_config, **options)
    raise ValueError(f"unknown loss {name!r}; choose {', '.join(repr(n) for n in LOSS_NAMES)}")
