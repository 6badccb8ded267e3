"""Reference solver for ``tests/test_ot.py``: batched log-domain Sinkhorn, slow and robust.

Two ``logsumexp`` over the dense ``B x N x M`` cost per iteration, in the dtype of the cost (float64 in
the tests), with the same epsilon-scaling schedule as :func:`gigacount_lib.losses.ot.sinkhorn_exact`,
so the two can be compared at the same iteration budget.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from gigacount_lib.losses.ot import DEFAULT_NUM_ITERS, DEFAULT_REG, OTResult, eps_schedule

_FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)


def sinkhorn_log_domain(cost: Tensor, mask: Tensor, b: Tensor, *, reg: float = DEFAULT_REG,
                        num_iters: int = DEFAULT_NUM_ITERS, eps_scaling: bool = True,
                        eps_start: float | None = None, eps_factor: float = 0.25,
                        iters_per_stage: int = 6) -> OTResult:
    """Log-domain Sinkhorn on ``cost (B, N, M)``, ``mask (B, N)``, ``b (B, M)``; outputs as ``sinkhorn_exact``.

    Per iteration: ``beta = eps (log b - logsumexp_i((alpha_i - C_ij) / eps))``, then
    ``alpha = eps (log a - logsumexp_j((beta_j - C_ij) / eps))``.
    """
    cost = cost.to(torch.promote_types(cost.dtype, torch.float32))
    b = b.to(cost.dtype)
    batch, num_points, num_blocks = cost.shape
    counts = mask.sum(-1, keepdim=True)
    empty = counts.squeeze(-1) == 0
    mask_eff = mask.clone()
    mask_eff[:, 0] |= empty  # an image without heads gets one dummy head (its result is not used)
    a = mask_eff.to(cost.dtype) / mask_eff.sum(-1, keepdim=True)
    log_a = torch.where(mask_eff, a.clamp_min(1e-300).log(), torch.full_like(a, -float("inf")))
    log_b = b.clamp_min(_FLOAT32_TINY).log()
    start = reg
    if eps_scaling:
        start = eps_start if eps_start is not None else float(cost.detach().amax())
    stages = eps_schedule(reg, num_iters, start, factor=eps_factor, iters_per_stage=iters_per_stage)
    alpha = torch.zeros(batch, num_points, dtype=cost.dtype, device=cost.device)
    beta = torch.zeros(batch, num_blocks, dtype=cost.dtype, device=cost.device)
    iterations = 0
    for eps, n_iter in stages:
        for _ in range(n_iter):
            scores = ((alpha.unsqueeze(-1) - cost) / eps).masked_fill(~mask_eff.unsqueeze(-1), -math.inf)
            beta = eps * (log_b - torch.logsumexp(scores, dim=1))
            scores = (beta.unsqueeze(-2) - cost) / eps
            alpha = torch.where(mask_eff, eps * (log_a - torch.logsumexp(scores, dim=2)), torch.zeros_like(alpha))
            iterations += 1
    plan_cols = torch.exp((alpha.unsqueeze(-1) + beta.unsqueeze(-2) - cost) / reg)
    plan_cols = plan_cols.masked_fill(~mask_eff.unsqueeze(-1), 0).sum(1)
    err = (b - plan_cols).pow(2).sum(-1)
    its = torch.full((batch,), iterations, dtype=torch.long, device=cost.device)
    return OTResult(alpha=alpha.masked_fill(~mask, 0.0), beta=beta, iterations=its, marginal_error=err)
