r"""The DM-Count loss (Wang et al., "Distribution Matching for Crowd Counting", NeurIPS 2020).

For a predicted block density ``s`` (``B x 1 x h x w``, expected count per block), its sum ``S``, the
ground-truth heads ``p_1..p_N`` and their block counts ``g`` (so ``sum(g) = N``):

.. math::
    L_{\mathrm{DM}} = \underbrace{|S - N|}_{\text{count}}
      + \lambda_{OT}\, \underbrace{\mathrm{OT}_\varepsilon(s / S,\ \tfrac1N \textstyle\sum_i \delta_{p_i})}_{\text{OT}}
      + \lambda_{TV}\, \underbrace{N \,\| s / S - g / N \|_1}_{\text{TV}},

with ``lambda_OT = 0.1``, ``lambda_TV = 0.01``, ``eps = 10`` px^2 and 100 Sinkhorn iterations (the
published defaults, also used by CLIP-EBC's DMLoss). Batch reductions follow CLIP-EBC's
``losses/dm_loss.py``: count and TV are averaged over the batch, the OT term is *summed* over the
images (``ot_reduction="sum"``; ``"mean"`` is offered as an option). ``S`` and ``N`` are guarded by
``+1e-8`` as in that code.

The OT term is not differentiated through Sinkhorn. Its gradient is the closed form
``(beta S - <beta, s>) / S^2`` (see :mod:`gigacount_lib.losses.ot`), injected with the surrogate
``<s, stopgrad(grad)>``. The surrogate's *value* is ``S <beta,s>/(S^2+eps) - S <beta,s>/(S^2+eps)``,
which is 0 up to rounding: that is why logged "OT losses" of the published code hover around 0 and
are sometimes negative. We log that surrogate as ``ot`` (it is what enters the loss) and the
meaningful number, the dual objective ``<beta, s/S>`` summed like the loss, as ``ot_objective``.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from ._common import (LOSS_EPS, CountingLoss, PointsLike, _input_flags, as_padded_points, block_counts_padded,
                      check_image_size, check_loss_inputs, finish_terms)
from .ot import DEFAULT_NUM_ITERS, DEFAULT_REG, OT_MODES, ot_gradient, ot_potentials

__all__ = ["count_l1", "tv_term", "ot_surrogate", "DMCountLoss"]


# ---------------------------------------------------------------------------------------------- terms
def count_l1(density: Tensor, gt_count: Tensor) -> Tensor:
    """``mean_b |S_b - N_b|`` with ``S_b = sum(s_b)``: the count term."""
    return (density.flatten(1).sum(-1) - gt_count).abs().mean()


def tv_term(density: Tensor, gt_blocks: Tensor, gt_count: Tensor, eps: float = LOSS_EPS) -> Tensor:
    """``mean_b N_b || s_b/(S_b+eps) - g_b/(N_b+eps) ||_1``: the TV term (CLIP-EBC's normalisation)."""
    s = density.flatten(1)
    g = gt_blocks.flatten(1).to(s.dtype)
    total = s.sum(-1, keepdim=True)
    n = gt_count.to(s.dtype).unsqueeze(-1)
    return ((s / (total + eps) - g / (n + eps)).abs().sum(-1) * n.squeeze(-1)).mean()


def ot_surrogate(density: Tensor, beta: Tensor, has_points: Tensor, reduction: str = "sum",
                 eps: float = LOSS_EPS) -> tuple[Tensor, Tensor]:
    """``sum_b <s_b, stopgrad(g_b)>`` with ``g = (beta S - <beta, s>) / (S^2 + eps)``; images without heads give 0.

    Returns the surrogate (whose gradient is ``g``) and the dual objective ``sum_b <beta_b, s_b / S_b>``.
    """
    s = density.flatten(1)
    grad = ot_gradient(beta.to(s.dtype), s.detach(), eps=eps)
    grad = torch.where(has_points.unsqueeze(-1), grad, torch.zeros_like(grad))
    per_image = (s * grad).sum(-1)
    normed = s.detach() / (s.detach().sum(-1, keepdim=True) + eps)
    objective = torch.where(has_points, (normed * beta.to(s.dtype)).sum(-1), torch.zeros_like(per_image))
    if reduction == "sum":
        return per_image.sum(), objective.sum()
    if reduction == "mean":
        return per_image.mean(), objective.mean()
    raise ValueError(f"ot_reduction must be 'sum' or 'mean', got {reduction!r}")


# ---------------------------------------------------------------------------------------------- module
class DMCountLoss(CountingLoss):
    r"""DM-Count: ``L = |S - N| + 0.1 OT_eps(s/S, points) + 0.01 N ||s/S - g/N||_1``.

    Args:
        reduction: block size in pixels; must be the model's output stride (checked against the
            density grid and the image size at every call).
        mode: ``"reference"`` (published Sinkhorn numerics, the default because it produced the
            paper's results) or ``"exact"`` (converged, underflow-free potentials); see
            :mod:`gigacount_lib.losses.ot`.
        reg, num_iters: entropic regularisation (px^2) and Sinkhorn iterations.
        weight_count, weight_ot, weight_tv: term weights (1, 0.1, 0.01).
        ot_reduction: ``"sum"`` over images (published) or ``"mean"``.
        check_inputs: validate density and points (NaN/negative density, points outside the crop);
            the check costs no extra sync: it is resolved together with the logged values.
        ot_options: passed to the Sinkhorn solver (e.g. ``stop_threshold`` or ``eps_scaling``).

    Called as ``loss_fn(output, batch) -> (loss, terms)`` with a ``CountingOutput`` (only its
    ``density`` ``(B, 1, h, w)`` is used) and a ``CrowdBatch``; on raw tensors,
    ``loss_fn.compute(logits, density, points, image_size)`` (``logits`` ignored, may be ``None``;
    ``points`` a list of ``(N_i, 2)`` tensors or a ``(padded, mask)`` pair). ``terms`` is a dict of
    floats (``loss, count, ot, ot_objective, tv``). The density grid must be
    ``ceil(H / reduction) x ceil(W / reduction)`` for the image size ``(H, W)``; otherwise a
    ``ValueError`` says which stride the grid fits. The loss is computed in float32 (float64 inputs
    stay float64), also under autocast.
    """

    def __init__(self, reduction: int = 8, mode: str = "reference", *, reg: float = DEFAULT_REG,
                 num_iters: int = DEFAULT_NUM_ITERS, weight_count: float = 1.0, weight_ot: float = 0.1,
                 weight_tv: float = 0.01, ot_reduction: str = "sum", check_inputs: bool = True,
                 **ot_options) -> None:
        super().__init__()
        if mode not in OT_MODES:
            raise ValueError(f"DMCountLoss: mode must be one of {OT_MODES}, got {mode!r}")
        if ot_reduction not in ("sum", "mean"):
            raise ValueError(f"DMCountLoss: ot_reduction must be 'sum' or 'mean', got {ot_reduction!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, numbers.Real) \
                or not math.isfinite(reduction) or reduction != int(reduction) \
                or reduction < 1:
            raise ValueError(f"DMCountLoss: reduction must be a positive whole number of pixels (the model's "
                             f"output stride), got {reduction!r}")
        self.reduction = int(reduction)
        self.mode = mode
        self.reg = float(reg)
        self.num_iters = int(num_iters)
        self.weight_count = float(weight_count)
        self.weight_ot = float(weight_ot)
        self.weight_tv = float(weight_tv)
        self.ot_reduction = ot_reduction
        self.check_inputs = check_inputs
        self.ot_options = dict(ot_options)

    def extra_repr(self) -> str:
        return (f"reduction={self.reduction}, mode={self.mode!r}, reg={self.reg}, num_iters={self.num_iters}, "
                f"weights=(count {self.weight_count}, ot {self.weight_ot}, tv {self.weight_tv})")

    def terms(self, density: Tensor, points: Tensor, mask: Tensor, image_size: tuple[int, int],
              gt_blocks: Tensor | None = None) -> dict[str, Tensor]:
        """The terms as tensors, before weighting (no host sync): ``count, tv, ot, ot_objective``.

        ``gt_blocks``: the ground-truth block counts ``(B, 1, h, w)`` when the caller already has them
        (the block losses do); otherwise they are computed here from the points.
        """
        grid = tuple(density.shape[-2:])
        dtype = torch.promote_types(density.dtype, torch.float32)
        density = density.to(dtype)
        gt_count = mask.sum(-1).to(dtype)
        out: dict[str, Tensor] = {}
        zero = density.new_zeros(())
        out["count"] = count_l1(density, gt_count) if self.weight_count else zero
        if self.weight_tv:
            if gt_blocks is None:
                gt_blocks = block_counts_padded(points, mask, grid, self.reduction)
            out["tv"] = tv_term(density, gt_blocks, gt_count)
        else:
            out["tv"] = zero
        if self.weight_ot:
            s = density.detach().flatten(1).float()
            b = s / (s.sum(-1, keepdim=True) + LOSS_EPS)
            result = ot_potentials(points, mask, b, grid, self.reduction, mode=self.mode, reg=self.reg,
                                   num_iters=self.num_iters, image_size=image_size, **self.ot_options)
            out["ot"], out["ot_objective"] = ot_surrogate(density, result.beta, mask.any(-1), self.ot_reduction)
        else:
            out["ot"], out["ot_objective"] = zero, zero
        return out

    def weighted_sum(self, terms: dict[str, Tensor]) -> Tensor:
        return self.weight_count * terms["count"] + self.weight_ot * terms["ot"] + self.weight_tv * terms["tv"]

    def compute(self, logits: Tensor | None, density: Tensor, points: PointsLike,
                image_size: tuple[int, int]) -> tuple[Tensor, dict]:
        """The loss on raw tensors (``logits`` are not used); see the class docstring."""
        with torch.autocast(device_type=density.device.type if torch.is_tensor(density) else "cpu", enabled=False):
            image_size = check_image_size(image_size, "DMCountLoss")
            check_loss_inputs(density, image_size, self.reduction, where="DMCountLoss",
                              reduction_source=f"DMCountLoss(reduction={self.reduction})")
            padded, mask = as_padded_points(points, density.shape[0], density.device)
            flags = _input_flags(density, padded, mask, image_size) if self.check_inputs else None
            terms = self.terms(density, padded, mask, image_size)
            return finish_terms(self.weighted_sum(terms), terms, flags, "DMCountLoss", image_size)
