r"""Entropic optimal transport for the DM-Count loss: batched Sinkhorn in two modes.

The problem (Wang et al. 2020, Sec. 3.2). For one image, the predicted block density ``s``
(``M = h*w`` blocks, total ``S``) is normalised to ``b = s / S``; the ``N`` heads carry ``a_i = 1/N``.
With the squared Euclidean cost ``C_ij = |p_i - c_j|^2`` (px^2) from head ``p_i`` to block centre ``c_j``

.. math::
    \mathrm{OT}_\varepsilon(a, b) = \min_{P \ge 0,\, P1 = a,\, P^T 1 = b}
        \langle C, P\rangle + \varepsilon \sum_{ij} P_{ij} (\log P_{ij} - 1), \qquad \varepsilon = 10.

The dual potentials give ``P_ij = exp((alpha_i + beta_j - C_ij) / eps)`` and ``d OT / d b = beta`` (up to
a constant), so through ``b = s / S`` (:func:`ot_gradient`)

.. math::
    \frac{\partial\, \mathrm{OT}}{\partial s_j} = \frac{\beta_j S - \langle \beta, s\rangle}{S^2}.

Block ``(i, j)`` is centred at ``((j + 1/2) r, (i + 1/2) r)`` px, as in the published code (DM-Count
``losses/ot_loss.py``, CLIP-EBC ``losses/dm_loss.py``). Modes (:func:`ot_potentials`):

* ``reference`` (:func:`sinkhorn_reference`): the published numerics (Cuturi 2013's scaling
  iteration in float32, 100 iterations, the published stopping rule). A block farther than
  ``sqrt(87.3 eps)``, about 30 px, from every head has a column of ``K`` that underflows to 0: its
  potential is capped at ``eps (log b_j + 36.8)``.
* ``exact`` (:func:`sinkhorn_exact`): the same problem without underflow, by stabilised scaling with
  epsilon-scaling (Schmitzer 2019), much closer to convergence in 100 iterations (``tests/test_ot.py``).

Timings and the designs measured and not adopted: ``benchmarks/README.md``.

References:
    M. Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
    B. Wang, H. Liu, D. Samaras, M. Hoai, "Distribution Matching for Crowd Counting", NeurIPS 2020.
    B. Schmitzer, "Stabilized Sparse Scaling Algorithms for Entropy Regularized Transport Problems",
    SIAM J. Sci. Comput. 41(3), 2019.
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_REG", "DEFAULT_NUM_ITERS", "OT_MODES", "OTResult", "axis_block_centres", "block_centres",
    "squared_distances", "published_squared_distances", "published_axis_kernels", "sinkhorn_reference",
    "eps_schedule", "stabilised_kernel", "sinkhorn_exact", "ot_potentials", "ot_gradient", "transport_plan",
    "plan_entropy", "nearest_head_distance", "near_far_stats",
]

DEFAULT_REG = 10.0
DEFAULT_NUM_ITERS = 100
OT_MODES = ("reference", "exact")
M_EPS = 1e-16  # the published guard in the scaling updates and in log(v + 1e-16)
_FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # 1.18e-38, the smallest normal float32
_STAB_FLUSH = 1e-30  # stabilised-kernel entries below this are set to 0 (no subnormals)
_SCALING_MAX = 1e30  # bound on the scaling vectors between absorptions
_LOG_FLUSH_FLOOR = math.log(_STAB_FLUSH) - 1.0  # exponents are clamped here before exp (then flushed to 0)


class OTResult(NamedTuple):
    """Output of a batched Sinkhorn solve.

    alpha: ``(B, N)`` dual potential of the heads (0 on padding), pixels^2.
    beta: ``(B, M)`` dual potential of the blocks, pixels^2 (what the DM-Count gradient uses).
    iterations: ``(B,)`` int64, Sinkhorn iterations actually applied to each image.
    marginal_error: ``(B,)`` float32, ``sum_j (b_j - (P^T 1)_j)^2`` at the end (the published criterion).
    """

    alpha: Tensor
    beta: Tensor
    iterations: Tensor
    marginal_error: Tensor


# ---------------------------------------------------------------------------------------------- geometry
def axis_block_centres(length: int, reduction: int, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Centres of the blocks along one axis, ``k r + r/2`` px for ``k < length``: ``(length,)``."""
    return torch.arange(int(length), device=device, dtype=dtype) * reduction + reduction / 2


def block_centres(grid_size: tuple[int, int], reduction: int, *, device=None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Centres ``(x, y)`` of the ``h x w`` output blocks in pixels, row-major: ``(h*w, 2)``.

    Block ``(i, j)`` covers pixels ``[j r, (j+1) r) x [i r, (i+1) r)``; its centre is
    ``((j + 0.5) r, (i + 0.5) r)``, as in the published DM-Count code.
    """
    ys = axis_block_centres(grid_size[0], reduction, device=device, dtype=dtype)  # (h,)
    xs = axis_block_centres(grid_size[1], reduction, device=device, dtype=dtype)  # (w,)
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)


def squared_distances(points: Tensor, centres: Tensor) -> Tensor:
    """``C[b, i, j] = |points[b, i] - centres[j]|^2``: points ``(B, N, 2)``, centres ``(M, 2)`` -> ``(B, N, M)``.

    Computed as ``(x - cx)^2 + (y - cy)^2`` (no cancellation), in the dtype of ``points``.
    """
    # contiguous coordinate rows: broadcasting a strided column gives the same values, more slowly on CPU
    dx = points[..., 0:1] - centres[:, 0].to(points.dtype).contiguous()  # (B, N, M)
    dy = points[..., 1:2] - centres[:, 1].to(points.dtype).contiguous()  # (B, N, M)
    return dx * dx + dy * dy


def _published_axis_costs(points: Tensor, grid_size: tuple[int, int], reduction: int) -> tuple[Tensor, Tensor]:
    """Per-axis published costs ``-2pc + p^2 + c^2`` (in that order, float32 rounding included).

    Returns ``y_part (B, N, h)`` and ``x_part (B, N, w)``; the cost is ``C = y_part + x_part``.
    """
    parts = []
    for axis, length in ((1, grid_size[0]), (0, grid_size[1])):
        c = axis_block_centres(length, reduction, device=points.device)
        p = points[..., axis:axis + 1].float()
        parts.append(-2 * (p * c) + p * p + c * c)
    return parts[0], parts[1]


def published_squared_distances(points: Tensor, grid_size: tuple[int, int], reduction: int) -> Tensor:
    """The published cost: per-axis ``-2pc + p^2 + c^2``, then ``y_part + x_part``: ``(B, N, h*w)``.

    Equal to :func:`squared_distances` up to float32 rounding (about ``1e-3`` px^2 at 224 px).
    """
    y_part, x_part = _published_axis_costs(points, grid_size, reduction)
    return (y_part.unsqueeze(-1) + x_part.unsqueeze(-2)).flatten(-2)


# ---------------------------------------------------------------------------------------------- reference
def published_axis_kernels(points: Tensor, mask: Tensor, grid_size: tuple[int, int], reduction: int,
                           reg: float = DEFAULT_REG) -> tuple[Tensor, Tensor]:
    """The published kernel in separable form: ``KY (B, h, N)`` and ``KX (B, N, w)``.

    ``K[b, i, r*w + c] = KY[b, r, i] * KX[b, i, c]`` with ``KX = exp(x_part / -reg)``, ``KY = exp(y_part / -reg)``
    and the published per-axis costs. Factors below the smallest normal float32 are 0, padding heads are 0.
    """
    y_part, x_part = _published_axis_costs(points, grid_size, reduction)
    kx = torch.exp(x_part / -reg)  # (B, N, w)
    ky = torch.exp(y_part / -reg)  # (B, N, h)
    zero = torch.zeros((), device=points.device)
    kx = torch.where(mask.unsqueeze(-1) & (kx >= _FLOAT32_TINY), kx, zero)
    ky = torch.where(ky >= _FLOAT32_TINY, ky, zero)
    return ky.transpose(1, 2).contiguous(), kx.contiguous()


def _kt_u(ky: Tensor, kx: Tensor, u: Tensor) -> Tensor:
    """``(K^T u)`` as an ``(B, h, w)`` map: ``KY diag(u) KX``, one batched GEMM."""
    return torch.bmm(ky * u.unsqueeze(1), kx)


def _k_v(ky: Tensor, kx: Tensor, v: Tensor) -> Tensor:
    """``(K v)_i = sum_{r,c} KY[r,i] v[r,c] KX[i,c]``: ``(B, N)`` (one batched GEMM and a reduction)."""
    return (ky * torch.bmm(v, kx.transpose(1, 2))).sum(1)


def sinkhorn_reference(points: Tensor, mask: Tensor, b: Tensor, grid_size: tuple[int, int], reduction: int,
                       *, reg: float = DEFAULT_REG, num_iters: int = DEFAULT_NUM_ITERS,
                       stop_threshold: float = 1e-9, eval_every: int = 10) -> OTResult:
    """The published DM-Count Sinkhorn, batched.

    Scaling iteration in float32 from ``u = a = 1/N``: ``v = b / (K^T u + 1e-16)``,
    ``u = a / (K v + 1e-16)``, at most ``num_iters`` times; every ``eval_every``-th iteration an image
    whose squared marginal error ``sum((b - v * K^T u)^2)`` is ``<= stop_threshold`` stops updating.
    The cost is the published per-axis expansion (:func:`published_squared_distances`), whose float32
    rounding is part of those numerics. Implementation, without effect on valid inputs:

    * the whole batch at once over padded point sets; images stop by masking (no host sync): the batch
      keeps iterating and stopped images are reverted at each evaluation;
    * the kernel is never formed. The cost is a row part plus a column part, so
      ``K = exp(-(C_y + C_x)/reg)`` factorises per head into ``KY_i (h,)`` and ``KX_i (w,)``
      (:func:`published_axis_kernels`) and both products are batched GEMMs (:func:`_kt_u`, :func:`_k_v`).
      ``exp(a) exp(b)`` differs from the published ``exp(a + b)`` by a few float32 ulps (about 1e-7
      relative in ``beta``). Factors below 1.18e-38 are 0 (no subnormals); what the published dense
      kernel holds there contributes far less than its own ``1e-16`` guard;
    * the published NaN/inf rollback is left out: with ``b`` finite and ``>= 0`` every ``v <= 1e16``
      and ``u <= 1e16 a``, so it cannot fire.

    Args:
        points: ``(B, N, 2)`` padded ``(x, y)`` heads in pixels; mask ``(B, N)`` marks real heads.
        b: ``(B, M)`` normalised predicted density (``M = h*w``, row-major), finite and ``>= 0``.
        grid_size: ``(h, w)``; reduction: block size in pixels.
        stop_threshold, eval_every: the published early stop (``0`` disables it).
    Returns:
        :class:`OTResult` with ``alpha = reg*log(u+1e-16)`` and ``beta = reg*log(v+1e-16)``.
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    batch = b.shape[0]
    b = b.float().reshape(batch, h, w)
    ky, kx = published_axis_kernels(points, mask, grid_size, reduction, reg)  # (B, h, N), (B, N, w)
    counts = mask.sum(-1, keepdim=True)
    a = mask.float() / counts.clamp_min(1)  # (B, N)
    u = a.clone()  # the published start: ones(N) / N
    v = torch.full_like(b, 1.0 / (h * w))  # (B, h, w)
    check = stop_threshold > 0 and eval_every > 0
    active = torch.ones(batch, 1, 1, dtype=torch.bool, device=b.device)
    stop_it = torch.full((batch,), num_iters, dtype=torch.long, device=b.device)
    u_frozen, v_frozen = u, v
    for it in range(1, num_iters + 1):
        v = b / (_kt_u(ky, kx, u) + M_EPS)
        u = a / (_k_v(ky, kx, v) + M_EPS)
        if check and it % eval_every == 0:
            u = torch.where(active[:, 0], u, u_frozen)
            v = torch.where(active, v, v_frozen)
            err = (b - _kt_u(ky, kx, u) * v).pow(2).sum((1, 2)).view(batch, 1, 1)
            newly = active & (err <= stop_threshold)
            stop_it = torch.where(newly.view(batch), it, stop_it)
            active = active & ~newly
            u_frozen, v_frozen = u, v
    if check:
        u = torch.where(active[:, 0], u, u_frozen)
        v = torch.where(active, v, v_frozen)
    err = (b - _kt_u(ky, kx, u) * v).pow(2).sum((1, 2))
    return OTResult(alpha=reg * torch.log(u + M_EPS), beta=reg * torch.log(v.reshape(batch, -1) + M_EPS),
                    iterations=stop_it, marginal_error=err)


# ---------------------------------------------------------------------------------------------- exact
def eps_schedule(reg: float, num_iters: int, start: float, *, factor: float = 0.25, iters_per_stage: int = 6,
                 min_final_iters: int = 1) -> list[tuple[float, int]]:
    """Epsilon-scaling stages ``[(eps, iterations), ...]``.

    ``eps = start, start*factor, ...`` while above ``reg``, ``iters_per_stage`` iterations each, then
    ``reg`` for the rest of the ``num_iters`` budget (at least ``min_final_iters``). A ``start`` at or
    below ``reg`` gives the single stage ``[(reg, max(num_iters, min_final_iters))]``.
    """
    stages = []
    eps = max(start, reg)
    while eps > reg * (1 + 1e-9):
        stages.append((eps, iters_per_stage))
        eps *= factor
    stages.append((reg, max(num_iters - iters_per_stage * len(stages), min_final_iters)))
    return stages


def stabilised_kernel(alpha: Tensor, beta: Tensor, cost: Tensor, eps: float) -> Tensor:
    """``K~_ij = exp((alpha_i + beta_j - C_ij) / eps)`` with entries below 1e-30 set to 0: ``(B, N, M)``.

    ``alpha`` ``(B, N)`` may hold ``-inf`` for rows that must be 0 (padding heads). Five in-place passes
    over one new ``B x N x M`` tensor. The exponent is clamped from below at ``log(1e-30) - 1`` before
    the ``exp``, because ``torch.exp`` is slow on CPU for arguments whose result underflows (most
    entries at ``eps = reg``); the clamped entries are then set to 0 by the threshold, so the result is
    ``where(K~ >= 1e-30, K~, 0)`` of the unclamped kernel.
    """
    x = alpha.unsqueeze(-1) + beta.unsqueeze(-2)  # (B, N, M)
    x.sub_(cost).mul_(1.0 / eps).clamp_min_(_LOG_FLUSH_FLOOR).exp_()
    return torch.nn.functional.threshold_(x, _STAB_FLUSH, 0.0)


def sinkhorn_exact(cost: Tensor, mask: Tensor, b: Tensor, *, reg: float = DEFAULT_REG,
                   num_iters: int = DEFAULT_NUM_ITERS, eps_scaling: bool = True, eps_start: float | None = None,
                   eps_factor: float = 0.25, iters_per_stage: int = 6, absorb_every: int = 50) -> OTResult:
    r"""Stabilised scaling Sinkhorn with epsilon-scaling, batched (Schmitzer 2019, Alg. 2 and 3).

    For each stage ``eps`` of :func:`eps_schedule` and every ``absorb_every`` iterations, the
    potentials are absorbed into the kernel, ``K~ = exp((alpha + beta - C) / eps)``
    (:func:`stabilised_kernel`), and the scaling iteration restarts from ``u = 1``:
    ``v = b / (K~^T u)``, ``u = a / (K~ v)``. Absorption adds ``eps log u`` to ``alpha`` and
    ``eps log v`` to ``beta``. Entries of ``K~`` below 1e-30 are 0, so no subnormal is multiplied.

    Before each absorption ``beta`` is shifted by ``-eps_prev log b`` (``eps_prev``: the eps of the
    current potentials). The first update recomputes ``v`` from ``u`` alone, so the shift leaves the
    iterates unchanged, and it puts the largest entry of every column of the new kernel in
    ``[-(eps_prev / eps) log N, 0]``; without it a column can fall below 1e-30 entirely when eps drops
    steeply. That bound stays above ``log 1e-30`` for any realistic ``N`` at ``eps_factor = 0.25``
    and up to about 1000 heads at 0.1; factors below 0.1 are rejected.

    Args:
        cost: ``(B, N, M)`` squared distances in pixels^2 (padding rows are ignored via ``mask``).
        mask: ``(B, N)`` real heads; b: ``(B, M)`` normalised density, finite and ``>= 0``.
        num_iters: total iteration budget (eps-scaling stages included); the last
            ``num_iters - stages * iters_per_stage`` (at least ``absorb_every``) run at ``reg``.
        eps_scaling: anneal eps from ``eps_start`` (default: the largest cost; :func:`ot_potentials`
            passes the squared image diagonal) down to ``reg`` by ``eps_factor`` per stage.
    Returns:
        :class:`OTResult` (``beta`` includes the ``reg * log b_j`` term; ``b_j`` is floored at 1.18e-38
        inside that log so that empty blocks get a finite potential). Computed in float32 with autocast
        off. ``marginal_error`` is that of the plan ``diag(u) K~ diag(v)`` of the last absorption.
    """
    if eps_scaling and not 0.1 <= eps_factor < 1.0:
        raise ValueError(f"sinkhorn_exact: eps_factor must be in [0.1, 1), got {eps_factor!r} (a larger drop per "
                         "stage can flush whole columns of the stabilised kernel; see the docstring)")
    with torch.autocast(device_type=cost.device.type, enabled=False):
        return _sinkhorn_exact(cost.float(), mask, b.float(), reg=reg, num_iters=num_iters,
                               eps_scaling=eps_scaling, eps_start=eps_start, eps_factor=eps_factor,
                               iters_per_stage=iters_per_stage, absorb_every=absorb_every)


def _sinkhorn_exact(cost: Tensor, mask: Tensor, b: Tensor, *, reg: float, num_iters: int, eps_scaling: bool,
                    eps_start: float | None, eps_factor: float, iters_per_stage: int, absorb_every: int) -> OTResult:
    batch, num_points, num_blocks = cost.shape
    device = cost.device
    counts = mask.sum(-1, keepdim=True)
    a = mask.float() / counts.clamp_min(1)
    # Images without heads: give them one dummy head with all the mass so that the iteration stays
    # well-posed (their result is discarded by the caller).
    empty = counts.squeeze(-1) == 0
    mask_eff = mask.clone()
    mask_eff[:, 0] |= empty
    a = torch.where(empty.unsqueeze(-1), mask_eff.float(), a).unsqueeze(1)  # (B, 1, N)
    b = b.clamp_min(_FLOAT32_TINY)  # (B, M)
    start = reg
    if eps_scaling:
        start = eps_start if eps_start is not None else float(cost.detach().amax()) if cost.numel() else reg
    stages = eps_schedule(reg, num_iters, start, factor=eps_factor, iters_per_stage=iters_per_stage,
                          min_final_iters=absorb_every if num_iters > 0 else 0)
    # padding heads: -inf in the exponent gives exactly-zero kernel rows (so u = a / Kv = 0 there)
    row_off = torch.zeros(batch, num_points, device=device).masked_fill_(~mask_eff, -math.inf)
    alpha = torch.zeros(batch, num_points, device=device)
    beta = torch.zeros(batch, num_blocks, device=device)
    one = torch.ones((), device=device)
    log_b = b.log()
    iterations = 0
    eps_prev = 0.0  # eps at which the current potentials were computed (0: none yet)
    kernel = u = v = None
    for eps, n_iter in stages:
        done = 0
        while done < n_iter:
            steps = min(absorb_every, n_iter - done)
            beta = beta - eps_prev * log_b  # the free column shift (see the docstring)
            kernel = stabilised_kernel(alpha + row_off, beta, cost, eps)  # (B, N, M)
            # K v computed as v^T K^T on a transposed view: on CPU, torch's batched product with the
            # vector on the right is much slower
            kernel_t = kernel.transpose(1, 2)  # (B, M, N)
            u = torch.ones(batch, 1, num_points, device=device)
            for _ in range(steps):
                ktu = torch.bmm(u, kernel).squeeze(1)  # (B, M)
                v = torch.div(b, ktu.clamp_min_(_FLOAT32_TINY)).clamp_max_(_SCALING_MAX)
                kv = torch.bmm(v.unsqueeze(1), kernel_t)  # (B, 1, N)
                u = torch.div(a, kv.clamp_min_(_FLOAT32_TINY)).clamp_max_(_SCALING_MAX)
            alpha = alpha + eps * torch.log(torch.where(mask_eff, u.squeeze(1), one))
            beta = beta + eps * torch.log(v)
            eps_prev = eps
            done += steps
            iterations += steps
    # marginal error of the final plan diag(u) K~ diag(v) (same definition as the published one)
    if kernel is None:
        plan_cols = torch.zeros_like(b)
    else:
        plan_cols = v * torch.bmm(u, kernel).squeeze(1)
    err = (b - plan_cols).pow(2).sum(-1)
    alpha = alpha.masked_fill(~mask, 0.0)
    its = torch.full((batch,), iterations, dtype=torch.long, device=device)
    return OTResult(alpha=alpha, beta=beta, iterations=its, marginal_error=err)


# ---------------------------------------------------------------------------------------------- front end
def ot_potentials(points: Tensor, mask: Tensor, b: Tensor, grid_size: tuple[int, int], reduction: int, *,
                  mode: str = "reference", reg: float = DEFAULT_REG, num_iters: int = DEFAULT_NUM_ITERS,
                  image_size: tuple[int, int] | None = None, **options) -> OTResult:
    """Dual potentials for a batch: dispatches to :func:`sinkhorn_reference` or :func:`sinkhorn_exact`.

    Inputs of every solver: points ``(B, N, 2)`` padded with a mask ``(B, N)`` (or their cost
    ``(B, N, M)``) and ``b`` ``(B, M)``, finite and ``>= 0``. Images without heads are allowed; the
    caller sets their gradient to 0 (the published code skips them). Returns :class:`OTResult`
    ``(alpha (B, N), beta (B, M), iterations (B,), marginal_error (B,))``.
    ``image_size`` (``(H, W)``) bounds the largest cost for eps-scaling without reading the data
    (no host sync); by default it is ``grid_size * reduction``.
    """
    if mode == "reference":
        return sinkhorn_reference(points, mask, b, grid_size, reduction, reg=reg, num_iters=num_iters, **options)
    if mode == "exact":
        if image_size is None:
            image_size = (grid_size[0] * reduction, grid_size[1] * reduction)
        centres = block_centres(grid_size, reduction, device=points.device)
        cost = squared_distances(points.float(), centres)
        options.setdefault("eps_start", float(image_size[0] ** 2 + image_size[1] ** 2))
        return sinkhorn_exact(cost, mask, b, reg=reg, num_iters=num_iters, **options)
    raise ValueError(f"OT mode must be one of {OT_MODES}, got {mode!r}")


def ot_gradient(beta: Tensor, density: Tensor, eps: float = 1e-8) -> Tensor:
    """Gradient of OT with respect to the unnormalised density: ``(beta S - <beta, s>) / (S^2 + eps)``.

    ``beta`` and ``density`` are ``(B, M)``; the published code writes the first term as
    ``S / (S^2 + eps) * beta`` with ``eps = 1e-8``, which we follow (``S = 0`` gives a zero gradient).
    """
    total = density.sum(-1, keepdim=True)  # S, (B, 1)
    denom = total * total + eps
    return total / denom * beta - (density * beta).sum(-1, keepdim=True) / denom


def transport_plan(cost: Tensor, alpha: Tensor, beta: Tensor, reg: float = DEFAULT_REG) -> Tensor:
    """``P_ij = exp((alpha_i + beta_j - C_ij) / reg)`` for one image or a batch (last two dims ``N x M``)."""
    return torch.exp((alpha.unsqueeze(-1) + beta.unsqueeze(-2) - cost) / reg)


# ---------------------------------------------------------------------------------------------- diagnostics
def plan_entropy(plan: Tensor) -> Tensor:
    """``-sum_ij P_ij log P_ij`` of one plan ``(N, M)`` or a batch ``(B, N, M)`` (``0 log 0 = 0``)."""
    return -(plan * (plan + 1e-30).log()).sum((-2, -1))


def nearest_head_distance(points: Tensor, mask: Tensor, grid_size: tuple[int, int], reduction: int) -> Tensor:
    """Distance in pixels from every block centre to its nearest real head: ``(B, h*w)`` (inf without heads)."""
    cost = squared_distances(points, block_centres(grid_size, reduction, device=points.device))  # (B, N, M)
    return cost.masked_fill(~mask.unsqueeze(-1), math.inf).amin(-2).sqrt()


def near_far_stats(potentials: Mapping[str, OTResult], density: Tensor, distance: Tensor,
                   threshold: float = 30.0) -> list[dict]:
    """Potentials and gradients near the heads and far from them, one row per solver, for image 0.

    ``potentials``: name -> :class:`OTResult` of the same batch; ``density`` ``(B, M)`` the unnormalised
    density the potentials were computed for; ``distance`` ``(M,)`` from each block to its nearest head
    (:func:`nearest_head_distance`). A block is *far* when ``distance > threshold`` px (the reference
    kernel underflows beyond about 30 px at ``reg = 10``). Each row: the range of ``beta`` and the mean
    absolute OT gradient over near and far blocks, the iterations and the marginal error.
    """
    far = distance > threshold
    rows = []
    for name, result in potentials.items():
        beta = result.beta[0]
        grad = ot_gradient(result.beta, density)[0]
        rows.append({"mode": name, "beta range near heads (px²)": float(beta[~far].max() - beta[~far].min()),
                     "beta range far blocks (px²)": float(beta[far].max() - beta[far].min()),
                     "mean |grad| near": float(grad[~far].abs().mean()),
                     "mean |grad| far": float(grad[far].abs().mean()),
                     "iterations": int(result.iterations[0]), "marginal error": float(result.marginal_error[0])})
    return rows
