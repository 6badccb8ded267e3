"""Notebook 04's exercises: L_Prob, the DM-Count OT gradient and the TV term."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import ot_gradient, probability_euclidean
from ..losses.dmcount import tv_term
from ._check import Case, CheckResult, run_check

__all__ = ["solution_prob_loss", "check_prob_loss", "solution_ot_gradient", "check_ot_gradient",
           "solution_tv_loss", "check_tv_loss"]

# Notebook 04's hand example: four blocks, three bins, the true bins (0, 1, 2, 0).
_HAND_PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
_HAND_LOGITS = _HAND_PROBS.log().T.reshape(1, 3, 2, 2)
_HAND_CLASSES = torch.tensor([[[0, 1], [2, 0]]])
_HAND_DENSITY = (_HAND_PROBS @ torch.tensor([0.0, 1.0, 2.0])).reshape(1, 1, 2, 2)
_HAND_BLOCKS = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]]]])


# ------------------------------------------------------------------------------ 1. L_Prob
def solution_prob_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``(1/B) sum_b sum_blocks ||softmax(z) - onehot(c)||^2``: logits ``(B, K, h, w)``, classes ``(B, h, w)``."""
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(classes, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    per_image = ((probs - onehot) ** 2).sum(dim=(1, 2, 3))
    return per_image.mean()


def _prob_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 5, 3, 4, generator=g) * 3
    classes = torch.randint(0, 5, (2, 3, 4), generator=g)
    inputs = [
        ("notebook 04's hand example (1.06)", _HAND_LOGITS, _HAND_CLASSES, "sum over the blocks, not a mean"),
        ("2 images, 5 bins, 3x4 blocks", logits, classes,
         "softmax over the bins (dim 1); sum over the blocks of an image, then average over the images"),
        ("very large logits (softmax must stay finite)", logits * 100, classes, "use torch's softmax, not exp / sum"),
        ("a single bin: the loss is 0", torch.randn(1, 1, 2, 2, generator=g), torch.zeros(1, 2, 2, dtype=torch.long), ""),
    ]
    return [Case(label, (z, c), probability_euclidean(z, c), hint) for label, z, c, hint in inputs]


def check_prob_loss(answer) -> CheckResult:
    """Compare ``answer(logits, classes)`` with ``losses.probability_euclidean``."""
    return run_check("check_prob_loss", answer, _prob_cases, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ 2. OT gradient
def solution_ot_gradient(beta: torch.Tensor, density: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``d <beta, s/S> / d s = (beta S - <beta, s>) / (S^2 + eps)`` per image: ``(B, M)`` -> ``(B, M)``."""
    total = density.sum(dim=1, keepdim=True)
    weighted = (beta * density).sum(dim=1, keepdim=True)
    return (beta * total - weighted) / (total ** 2 + eps)


def _ot_cases() -> list[Case]:
    g = torch.Generator().manual_seed(6)
    beta = torch.randn(3, 16, generator=g) * 50
    density = torch.rand(3, 16, generator=g)
    inputs = [
        ("one image, four blocks", torch.tensor([[-12.0, 30.0, -8.0, 44.0]]), torch.tensor([[0.4, 1.0, 1.5, 0.6]]),
         "d/ds_j of <beta, s>/S has two terms: beta_j / S and -<beta, s> / S^2"),
        ("3 images, 16 blocks (each image has its own S)", beta, density,
         "S and <beta, s> are sums over the blocks of each image (dim 1), not over the batch"),
        ("an image without density (S = 0): a zero gradient", beta[:2], torch.stack([density[0], torch.zeros(16)]),
         "divide by S^2 + eps (eps = 1e-8) so that S = 0 gives 0, not NaN"),
    ]
    return [Case(label, (b, s), ot_gradient(b, s), hint) for label, b, s, hint in inputs]


def check_ot_gradient(answer) -> CheckResult:
    """Compare ``answer(beta, density)`` with ``losses.ot_gradient``."""
    return run_check("check_ot_gradient", answer, _ot_cases, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ 3. TV term
def solution_tv_loss(density: torch.Tensor, gt_blocks: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``mean_b N_b ||s_b / S_b - g_b / N_b||_1`` for density and true block counts ``(B, 1, h, w)``."""
    s, g = density.flatten(1), gt_blocks.flatten(1).to(density.dtype)
    total, n = s.sum(1, keepdim=True), g.sum(1, keepdim=True)
    return (n.squeeze(1) * (s / (total + eps) - g / (n + eps)).abs().sum(1)).mean()


def _tv_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    density = torch.rand(2, 1, 4, 4, generator=g)
    blocks = torch.poisson(torch.full((2, 1, 4, 4), 0.7), generator=g)
    inputs = [
        ("notebook 04's hand example (1.714)", _HAND_DENSITY, _HAND_BLOCKS,
         "normalise both maps to sum 1, take the L1 distance, multiply by N"),
        ("2 images of 4x4 blocks", density, blocks, "one N and one S per image; average the images"),
        ("an image without heads contributes 0", density, torch.stack([blocks[0], torch.zeros(1, 4, 4)]),
         "N = 0: the factor N makes the term 0 (add eps to the denominators so nothing is 0/0)"),
    ]
    return [Case(label, (s, b), tv_term(s, b, b.flatten(1).sum(1)), hint) for label, s, b, hint in inputs]


def check_tv_loss(answer) -> CheckResult:
    """Compare ``answer(density, gt_blocks)`` with ``losses.dmcount.tv_term``."""
    return run_check("check_tv_loss", answer, _tv_cases, rtol=1e-4, atol=1e-5)
