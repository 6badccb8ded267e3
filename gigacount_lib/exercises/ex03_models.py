"""Notebook 03's exercises: the cosine head's logits and the width of the fused map."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.gigacount import attention_widths
from ..models.head import CosineBinHead
from ._check import Case, CheckResult, run_check

__all__ = ["solution_cosine_logits", "check_cosine_logits", "solution_fused_channels", "check_fused_channels"]


# ------------------------------------------------------------------------------ 1. cosine head
def solution_cosine_logits(features: torch.Tensor, prototypes: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``exp(s) * <f / |f|, t_k / |t_k|>`` per block: features ``(B, D, h, w)``, prototypes ``(K, D)`` ->
    logits ``(B, K, h, w)``."""
    f = F.normalize(features, dim=1)  # unit length along the channels of every block
    t = F.normalize(prototypes, dim=1)
    return math.exp(logit_scale) * torch.einsum("bdhw,kd->bkhw", f, t)


def _head_logits(features, prototypes, s):
    head = CosineBinHead(prototypes, torch.arange(prototypes.shape[0], dtype=torch.float32), logit_scale_init=s)
    with torch.no_grad():
        return head(features).logits


def _cosine_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    features = torch.randn(2, 8, 3, 4, generator=g)
    protos = torch.randn(5, 8, generator=g)
    clip_s = math.log(1 / 0.07)
    inputs = [
        ("2 images, D=8, K=5, CLIP's initial scale", features, protos, clip_s,
         "normalise each block's feature over the channel dimension (dim 1), and multiply by exp(s), not s"),
        ("prototypes of length 3 (the head normalises them)", features, 3 * protos, clip_s,
         "normalise the prototypes too: only directions matter"),
        ("features scaled by 10 give the same logits", 10 * features, protos, clip_s,
         "a cosine similarity does not depend on the length of the feature"),
        ("s = 0: plain cosine similarities", features[:1, :, :1, :2], protos[:2], 0.0, "exp(0) = 1"),
    ]
    return [Case(label, (f, p, s), _head_logits(f, p, s), hint) for label, f, p, s, hint in inputs]


def check_cosine_logits(answer) -> CheckResult:
    """Compare ``answer(features, prototypes, s)`` with the logits of ``models.head.CosineBinHead``."""
    return run_check("check_cosine_logits", answer, _cosine_cases, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ 2. fused width
def solution_fused_channels(encoder_channels) -> int:
    """Channels of the fused map: the sum of every attention block's output width ``max(C // 6, 4)``."""
    return sum(max(c // 6, 4) for c in encoder_channels)


def _fused_cases() -> list[Case]:
    inputs = [
        ("ConvNeXt-Tiny stages 1-3 (GigaCount)", (96, 192, 384), "the output width of a block is C // 6"),
        ("stages 1-4 (gigacount_stage4)", (96, 192, 384, 768), ""),
        ("ConvNeXt-Atto (gigacount_atto)", (40, 80, 160), "integer division: 40 // 6 = 6"),
        ("stride 16 alone (gigacount_no_fusion)", (384,), ""),
        ("very narrow maps", (12, 18), "a block keeps at least 4 output channels"),
    ]
    return [Case(label, (channels,), sum(attention_widths(c)[2] for c in channels), hint)
            for label, channels, hint in inputs]


def check_fused_channels(answer) -> CheckResult:
    """Compare ``answer(encoder_channels)`` with the widths of ``models.gigacount.attention_widths``."""
    return run_check("check_fused_channels", answer, _fused_cases, rtol=0, atol=0)
