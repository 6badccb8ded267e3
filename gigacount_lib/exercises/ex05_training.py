"""Notebook 05's exercises: the official learning-rate schedule and gradient clipping by the global norm."""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ..config import ScheduleConfig
from ..train import build_scheduler, clip_gradients
from ._check import Case, CheckResult, run_check

__all__ = ["solution_official_lr", "check_official_lr", "solution_clip_gradients", "check_clip_gradients"]


# ------------------------------------------------------------------------------ 1. the schedule
def solution_official_lr(epoch: int, base_lr: float = 5e-4, warmup: int = 20, warmup_start_lr: float = 1e-5,
                         t0: int = 80, eta_min: float = 5e-6) -> float:
    """Learning rate of epoch ``epoch`` (from 0): linear warm-up from ``warmup_start_lr`` to ``base_lr`` over
    ``warmup`` epochs, then cosine annealing to ``eta_min`` restarted every ``t0`` epochs (``T_mult = 1``)."""
    if epoch < warmup:
        return warmup_start_lr + (base_lr - warmup_start_lr) * epoch / warmup
    t = (epoch - warmup) % t0  # epochs since the last restart
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / t0)) / 2


def library_lrs(epochs: int, base_lr: float, warmup: int, warmup_start_lr: float, t0: int,
                eta_min: float) -> list[float]:
    """The learning rate of epochs ``0 ... epochs - 1`` from ``train.build_scheduler`` (stepped once per epoch)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    config = ScheduleConfig(name="official", warmup=warmup, warmup_start_lr=warmup_start_lr, t0=t0, t_mult=1,
                            eta_min=eta_min)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about stepping a scheduler without optimizer.step()
        scheduler = build_scheduler(optimizer, config, total=epochs)
        lrs = []
        for _ in range(epochs):
            lrs.append(optimizer.param_groups[0]["lr"])
            scheduler.step()
    return lrs


def _lr_cases() -> list[Case]:
    paper = dict(base_lr=5e-4, warmup=20, warmup_start_lr=1e-5, t0=80, eta_min=5e-6)
    lrs = library_lrs(600, **paper)
    short = dict(base_lr=1e-3, warmup=3, warmup_start_lr=1e-4, t0=5, eta_min=0.0)
    short_lrs = library_lrs(20, **short)
    p = tuple(paper.values())
    hints = {0: "epoch 0 is the first warm-up epoch: warmup_start_lr",
             10: "the warm-up is linear in the epoch",
             20: "the warm-up ends at epoch `warmup`, which already has the full base_lr",
             99: "the cosine phase counts from the end of the warm-up",
             100: "T_mult = 1: a warm restart every t0 epochs brings the rate back to base_lr",
             599: "take the epochs since the last restart (modulo t0)"}
    cases = [Case(f"paper recipe, epoch {e}", (e, *p), lrs[e], hints.get(e, "")) for e in (0, 10, 19, 20, 60, 99, 100, 599)]
    cases += [Case(f"short schedule (warm-up 3, t0 5, eta_min 0), epoch {e}", (e, *short.values()), short_lrs[e],
                   "use the arguments, not the paper's numbers") for e in (1, 3, 7, 13)]
    return cases


def check_official_lr(answer) -> CheckResult:
    """Compare ``answer(epoch, base_lr, warmup, warmup_start_lr, t0, eta_min)`` with ``train.build_scheduler``."""
    return run_check("check_official_lr", answer, _lr_cases, rtol=1e-6, atol=1e-12)


# ------------------------------------------------------------------------------ 2. clipping
def solution_clip_gradients(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """Scale all gradients by one factor so that their global L2 norm is at most ``max_norm``."""
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(total) + 1e-6))  # never scale up
    return [g * scale for g in grads]


def _library_clip(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    model = nn.Module()
    model.params = nn.ParameterList([nn.Parameter(torch.zeros_like(g)) for g in grads])
    for p, g in zip(model.params, grads):
        p.grad = g.clone()
    clip_gradients(model, max_norm)
    return [p.grad.clone() for p in model.params]


def _clip_cases() -> list[Case]:
    g = torch.Generator().manual_seed(8)
    large = [torch.randn(4, 3, generator=g) * 5, torch.randn(7, generator=g) * 5, torch.randn(2, 2, 2, generator=g)]
    inputs = [
        ("three tensors, global norm about 20, max_norm 1", large, 1.0,
         "one factor for all tensors, from the norm of all their entries together (not tensor by tensor)"),
        ("norm below max_norm: unchanged", [t * 0.01 for t in large], 1.0, "clipping never scales gradients up"),
        ("one tensor, max_norm 2.5", [torch.tensor([3.0, 4.0])], 2.5, "the L2 norm of [3, 4] is 5"),
        ("all-zero gradients stay zero", [torch.zeros(3), torch.zeros(2, 2)], 1.0, "do not divide by a zero norm"),
    ]
    return [Case(label, (grads, m), _library_clip(grads, m), hint) for label, grads, m, hint in inputs]


def check_clip_gradients(answer) -> CheckResult:
    """Compare ``answer(grads, max_norm)`` with ``train.clip_gradients`` (``torch.nn.utils.clip_grad_norm_``)."""
    return run_check("check_clip_gradients", answer, _clip_cases, rtol=1e-4, atol=1e-6)
