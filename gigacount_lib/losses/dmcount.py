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
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from .ot import DEFAULT_NUM_ITERS, DEFAULT_REG, OT_MODES, ot_gradient, ot_potentials

__all__ = [
    "PointsLike", "as_padded_points", "block_counts_padded", "check_image_size", "check_loss_inputs", "resolve_checks",
    "finish_terms",
    "count_l1", "tv_term", "ot_surrogate", "DMCountLoss", "LOSS_EPS",
]

LOSS_EPS = 1e-8  # CLIP-EBC's guard in the normalisations and in the OT gradient
PointsLike = Union[Sequence[Tensor], tuple[Tensor, Tensor]]


# ---------------------------------------------------------------------------------------------- inputs
def as_padded_points(points: PointsLike, batch: int, device) -> tuple[Tensor, Tensor]:
    """A list of ``(N_i, 2)`` tensors (or NumPy arrays) or a ``(padded (B, N, 2), mask (B, N))`` pair ->
    the padded pair."""
    if isinstance(points, tuple) and len(points) == 2 and torch.is_tensor(points[0]) and points[0].ndim == 3:
        padded, mask = points
        if mask.shape != padded.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"points: the mask must be a bool tensor of shape {tuple(padded.shape[:2])}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
    else:
        from ..data.transforms import pad_points

        if torch.is_tensor(points) or isinstance(points, np.ndarray):
            raise ValueError(f"points: expected a list of (N_i, 2) tensors, one per image, or a (padded, mask) "
                             f"pair, got a single {type(points).__name__} of shape {tuple(points.shape)}")
        points = [torch.from_numpy(np.asarray(p, dtype=np.float32)) if isinstance(p, np.ndarray) else p
                  for p in points]
        for i, p in enumerate(points):
            if not torch.is_tensor(p):
                raise ValueError(f"points[{i}]: expected an (N, 2) tensor of (x, y), got a {type(p).__name__}; "
                                 "convert it with torch.as_tensor(..., dtype=torch.float32)")
            if p.ndim != 2 or p.shape[-1] != 2:
                raise ValueError(f"points[{i}]: expected an (N, 2) tensor of (x, y), got shape {tuple(p.shape)}")
        if not points:
            raise ValueError("points: empty list")
        padded, mask = pad_points(points)
    if padded.shape[0] != batch:
        raise ValueError(f"points: {padded.shape[0]} point sets for a batch of {batch} predictions")
    return padded.to(device=device, dtype=torch.float32), mask.to(device)


def block_counts_padded(points: Tensor, mask: Tensor, grid_size: tuple[int, int], reduction: int) -> Tensor:
    """Heads per block from padded points, ``(B, 1, h, w)`` float32, without a loop over images.

    Same convention as :func:`gigacount_lib.data.density.block_count_map` (floor, border points in the
    last block).
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    batch = points.shape[0]
    col = (points[..., 0] / reduction).floor().long().clamp(0, w - 1)
    row = (points[..., 1] / reduction).floor().long().clamp(0, h - 1)
    counts = torch.zeros(batch, h * w, dtype=torch.float32, device=points.device)
    counts.scatter_add_(1, row * w + col, mask.float())
    return counts.view(batch, 1, h, w)


def check_image_size(image_size, where: str = "loss") -> tuple[int, int]:
    """``image_size`` as ``(H, W)``: two positive whole numbers (pixels); ``ValueError`` otherwise."""
    try:
        height, width = (v.item() if torch.is_tensor(v) else v for v in image_size)
        ok = all(not isinstance(v, bool) and float(v).is_integer() and v > 0 for v in (height, width))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{where}: image_size must be (H, W), two positive integers (the crop size in pixels), "
                         f"got {image_size!r}")
    return int(height), int(width)


def check_loss_inputs(density: Tensor, image_size: tuple[int, int], reduction: int, *,
                      logits: Tensor | None = None, where: str = "loss") -> tuple[int, int]:
    """Shape checks (no host sync): returns the block grid ``(h, w)``; raises ``ValueError`` on mismatch."""
    if not torch.is_tensor(density):
        raise ValueError(f"{where}: density must be a tensor (B, 1, h, w), got a {type(density).__name__}")
    if density.ndim != 4 or density.shape[1] != 1:
        raise ValueError(f"{where}: density must have shape (B, 1, h, w), got {tuple(density.shape)}")
    if logits is not None and not torch.is_tensor(logits):
        raise ValueError(f"{where}: logits must be a tensor (B, K, h, w), got a {type(logits).__name__}")
    height, width = check_image_size(image_size, where)
    grid = (math.ceil(height / reduction), math.ceil(width / reduction))
    if tuple(density.shape[-2:]) != grid:
        raise ValueError(f"{where}: density grid {tuple(density.shape[-2:])} does not match image size "
                         f"{height}x{width} at reduction {reduction} (expected {grid})")
    if logits is not None:
        if logits.ndim != 4 or logits.shape[0] != density.shape[0] or logits.shape[-2:] != density.shape[-2:]:
            raise ValueError(f"{where}: logits {tuple(logits.shape)} and density {tuple(density.shape)} do not "
                             "match; expected logits (B, K, h, w) and density (B, 1, h, w)")
    return grid


def _input_flags(density: Tensor, points: Tensor, mask: Tensor, image_size: tuple[int, int],
                 tolerance: float = 1e-3, logits: Tensor | None = None) -> Tensor:
    """Per-image problem flags ``(B, 4)`` (bad density, negative density, bad points, bad logits),
    computed on device."""
    d = density.detach().flatten(1)
    nonfinite = ~torch.isfinite(d).all(-1)
    bad_logits = ~torch.isfinite(logits.detach().flatten(1)).all(-1) if logits is not None \
        else torch.zeros_like(nonfinite)
    negative = (d < 0).any(-1)
    height, width = image_size
    x, y = points[..., 0], points[..., 1]
    outside = (~torch.isfinite(points).all(-1)) | (x < -tolerance) | (x > width + tolerance) \
        | (y < -tolerance) | (y > height + tolerance)
    bad_points = (outside & mask).any(-1)
    return torch.stack([nonfinite, negative, bad_points, bad_logits], dim=-1)


def resolve_checks(flags: Tensor | None, values: Tensor, where: str, image_size: tuple[int, int]) -> list[float]:
    """One host sync for the flags and the logged values; raises ``ValueError`` naming the bad images.

    ``values`` keep their dtype (float32, or float64 for float64 inputs): no float64 tensor is made
    on the device (MPS has no float64).
    """
    values = values.detach().flatten()
    if flags is None:
        return values.tolist()
    merged = torch.cat([values, flags.to(values.dtype).flatten()]).tolist()
    n = values.numel()
    flag_list = merged[n:]
    texts = ("NaN or infinite predicted density", "negative predicted density",
             f"points outside the {image_size[1]}x{image_size[0]} crop (or NaN points)", "NaN or infinite logits")
    width = flags.shape[-1]
    batch = len(flag_list) // width
    problems = []
    for k, text in enumerate(texts[:width]):
        bad = [i for i in range(batch) if flag_list[width * i + k]]
        if bad:
            problems.append(f"{text} in batch image(s) {bad}")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems) + ". The model output or the crop/point "
                         "transform is broken; no loss was returned.")
    return merged[:n]


def finish_terms(loss: Tensor, named: dict[str, Tensor], flags: Tensor | None, where: str,
                 image_size: tuple[int, int]) -> tuple[Tensor, dict[str, float]]:
    """``(loss, {"loss": float, **{name: float}})`` with one host sync, which also resolves the input checks."""
    values = torch.stack([loss.detach()] + [t.detach().reshape(()).to(loss.dtype) for t in named.values()])
    return loss, dict(zip(["loss", *named], resolve_checks(flags, values, where, image_size)))


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
class DMCountLoss(nn.Module):
    r"""DM-Count: ``L = |S - N| + 0.1 OT_eps(s/S, points) + 0.01 N ||s/S - g/N||_1``.

    Args:
        reduction: block size in pixels (the model's output stride).
        mode: ``"reference"`` (published Sinkhorn numerics, the default because it produced the
            paper's results) or ``"exact"`` (converged, underflow-free potentials); see
            :mod:`gigacount_lib.losses.ot`.
        reg, num_iters: entropic regularisation (px^2) and Sinkhorn iterations.
        weight_count, weight_ot, weight_tv: term weights (1, 0.1, 0.01).
        ot_reduction: ``"sum"`` over images (published) or ``"mean"``.
        check_inputs: validate density and points (NaN/negative density, points outside the crop);
            the check costs no extra sync: it is resolved together with the logged values.
        ot_options: passed to the Sinkhorn solver (e.g. ``stop_threshold`` or ``eps_scaling``).

    ``forward(density (B,1,h,w), points, image_size) -> (loss, terms)`` where ``points`` is a list of
    ``(N_i, 2)`` tensors or a ``(padded, mask)`` pair, and ``terms`` is a dict of floats
    (``loss, count, ot, ot_objective, tv``). The loss is computed in float32 (float64 inputs stay
    float64), also under autocast.
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

    def forward(self, density: Tensor, points: PointsLike, image_size: tuple[int, int]) -> tuple[Tensor, dict]:
        with torch.autocast(device_type=density.device.type, enabled=False):
            image_size = check_image_size(image_size, "DMCountLoss")
            check_loss_inputs(density, image_size, self.reduction, where="DMCountLoss")
            padded, mask = as_padded_points(points, density.shape[0], density.device)
            flags = _input_flags(density, padded, mask, image_size) if self.check_inputs else None
            terms = self.terms(density, padded, mask, image_size)
            return finish_terms(self.weighted_sum(terms), terms, flags, "DMCountLoss", image_size)
