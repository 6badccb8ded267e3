r"""Entropic optimal transport for the DM-Count loss: batched Sinkhorn in two modes.

The problem (DM-Count, Wang et al., NeurIPS 2020, Sec. 3.2). For one image, the predicted density
``s`` (one value per output block, ``M = h*w`` blocks) is normalised to ``b = s / S`` with
``S = sum(s)``, and the ``N`` annotated heads carry uniform mass ``a_i = 1/N``. With the squared
Euclidean cost ``C_ij = |p_i - c_j|^2`` (pixels^2) between head ``p_i`` and block centre ``c_j``,

.. math::
    \mathrm{OT}_\varepsilon(a, b) = \min_{P \ge 0,\, P1 = a,\, P^T 1 = b}
        \langle C, P\rangle + \varepsilon \sum_{ij} P_{ij} (\log P_{ij} - 1),

with ``eps = reg = 10`` px^2. Its dual potentials ``(alpha, beta)`` satisfy
``P_ij = exp((alpha_i + beta_j - C_ij) / eps)`` and ``d OT / d b = beta`` (up to a constant), so the
gradient with respect to the *unnormalised* density is (chain rule through ``b = s / S``)

.. math::
    \frac{\partial\, \mathrm{OT}}{\partial s_j} = \frac{\beta_j S - \langle \beta, s\rangle}{S^2}.

Block centres. The published code (``cvlab-stonybrook/DM-Count``, ``losses/ot_loss.py``, and
CLIP-EBC's ``losses/dm_loss.py``) places the centre of block ``(i, j)`` at
``x = j*r + r/2``, ``y = i*r + r/2`` pixels (``torch.arange(0, size, r) + r / 2``), with the cost
in raw pixels^2 (``norm_cood`` off). We use the same centres; unlike the published code (square crops
only) the height and width may differ.

Two modes
---------
``reference`` (:func:`sinkhorn_reference`) reproduces the published numerics: scaling-domain
Sinkhorn with ``K = exp(C / -reg)`` in float32, ``u = 1/N`` at start, then per iteration
``v = b / (K^T u + 1e-16)`` and ``u = a / (K v + 1e-16)``, at most 100 iterations, and the
published stopping rule (every 10th iteration the squared marginal error ``sum((b - v * K^T u)^2)``
is compared with ``1e-9``; an image whose error is below stops updating). ``beta = reg*log(v+1e-16)``.
The cost uses the published per-axis expansion ``-2xc + x^2 + c^2``, whose float32 rounding is part of
those numerics. Differences from the published code, all without effect on valid inputs:

* the whole batch is solved at once, over padded point sets with masks; images stop by masking,
  not by leaving a Python loop (no ``.item()``, no host-device sync);
* the kernel is never materialised. The cost is a sum of a row part and a column part, so
  ``K = exp(-(C_y + C_x)/reg)`` factorises per head into ``KY_i (h,)`` and ``KX_i (w,)``:
  ``K^T u = KY diag(u) KX`` and ``(K v)_i = KY_i^T V KX_i`` are batched GEMMs on ``(B, h, N)`` and
  ``(B, N, w)`` factors (28 x 200 floats per image at 224 px instead of 200 x 784), which stay in cache.
  ``exp(a) exp(b)`` differs from the published ``exp(a + b)`` by a few float32 ulps (the rounding of
  the sum ``a + b``), about 1e-7 relative in ``beta``. Factors below the smallest normal float32
  (1.18e-38) are set to 0: no subnormal is stored. The published dense kernel holds 0.9% of its
  entries as subnormals (and 94% exact zeros; 200 random heads on 224^2 crops); their total contribution to ``K^T u`` is below ``1e-21`` of the ``1e-16``
  guard, far below float32 resolution;
* the per-iteration NaN/inf check with rollback is not reproduced: with ``b`` finite and non-negative
  (checked once, up front) every ``v <= 1e16`` and ``u <= 1e16 * a``, so it cannot fire.

Because ``K^T u`` underflows to 0 for blocks farther than about 30 px from every head, such a block
gets ``v = b * 1e16`` and ``beta = reg * (36.8 + log b)``: its potential is capped instead of growing with
the squared distance to the nearest head, and the block is effectively disconnected from the heads.

``exact`` (:func:`sinkhorn_exact`) gives the potentials of the problem as posed, free of underflow:
a *stabilised scaling* Sinkhorn (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy
regularized transport problems", Alg. 2/3): the potentials are carried in the log domain and absorbed
into the kernel ``K~_ij = exp((alpha_i + beta_j - C_ij) / eps)`` every ``absorb_every`` iterations,
so the scaling vectors stay near 1 and the kernel entries that matter never underflow; entries below
1e-30 (negligible against the dominant entry of their row/column, which is O(1) after absorption) are
set to 0 so that no subnormal is ever multiplied. It is combined with epsilon-scaling (eps starts at
the squared image diagonal and is divided by 4 per stage down to ``reg``; each stage re-absorbs), because plain Sinkhorn
at ``reg = 10`` px^2 on a 224^2 crop is far from converged after 100 iterations (measured in float64
on 224^2 crops with 50-2000 heads: the potentials are still 70-80% off, relative to their largest
centred value, after 100 iterations and about 1% off after 4000; see notebook 04 and
``tests/test_ot.py``). Defaults: eps divided by 4 per stage with 6 iterations each, the rest of the
100-iteration budget at ``reg``, absorption every 50 iterations (measured on a 96^2 crop with 40
heads: 9.5% potential error after 100 iterations against 68% for the published iteration; to
converge fully, raise ``num_iters``).

Why these algorithms (measured on the 2-core CPU of the course machine, shared with other jobs, batch 8,
150-250 heads per 224^2 crop, 784 blocks, float32; ``benchmarks/bench_losses.py`` reports the current
numbers against the published per-image loop, about 50 ms there):

* ``reference``: a dense batched ``bmm`` Sinkhorn on the materialised kernel took about 67 ms (slower
  than the loop: 5 MB of kernel read 200 times); a windowed gather/scatter kernel (61 blocks per head)
  about 12-15 ms; the separable GEMM form about 9 ms, 5.8x faster than the loop. We use the GEMM form.
* ``exact``: log-domain Sinkhorn (two ``logsumexp`` over the dense ``B x N x M`` tensor per iteration,
  an ``exp`` per entry per half-iteration) took about 1.4 s; stabilised scaling does the same
  iterations with two batched matrix-vector products and one ``exp`` pass per absorption. A first
  version took 130-160 ms (0.35x the loop); profiling showed three CPU-specific costs, now removed
  (the potentials agree with that version to 1.2e-6 relative):

  - ``torch.exp`` is about 10x slower on arguments whose result underflows (below about -87), and
    95% of the entries of a stabilised kernel at ``eps = 10`` do: clamping the exponent at
    ``log(1e-30) - 1`` before the ``exp`` (:func:`stabilised_kernel`) cut an absorption from about 6 ms
    to 0.7 ms (8 x 250 x 784, 2 threads);
  - ``bmm(K, v)`` (vector on the right) was about 7x slower than ``bmm(v^T, K^T)`` on a transposed
    view (0.6 ms against 0.09 ms): ``K v`` is computed the second way;
  - :func:`squared_distances` broadcast a strided column of the centres; contiguous rows halve it.

  Now (batch 8, 150-250 heads, 2 threads) one iteration costs about 0.1 ms, almost all of it the two
  ``bmm`` that stream the 5 MB kernel from L3 (about 100 GB/s), and each of the 9 absorptions about
  0.7 ms (the ``exp`` of 1.6 M entries). ``benchmarks/results/losses.json`` (2 threads): 22.9 ms against
  54.5 ms for the published loop, 2.4x faster (was 0.38x), but short of the issue's 5x, which
  ``reference`` meets (8.7 ms, 6.3x); the exact OT is 1.0% of a GigaCount training step (was 5.7%).
  With ``--threads 1`` on the loaded machine: 44.8 ms against 59.7 ms (1.3x). The floor of this
  design is the 200 kernel streams (about 9 ms) plus the 9 absorptions. Where the kernel no longer
  fits in L3 (``N = 2000`` heads: 50 MB at batch 8) ``exact`` stays slower than the loop (0.6x).
  What was measured and not adopted:

  - *Schmitzer's sparse truncation of the stabilised kernel.* After absorption at ``eps = 10`` only
    3% of the entries are >= 1e-30 (at most 18-21 heads per block, 52-60 blocks per head), but at
    ``eps >= 392`` 40-84% are, so 36 of the 100 iterations stay dense anyway; and on this CPU a
    per-block top-k gather (``K^T u``) takes 0.05 ms at k = 16 and a ``scatter_add`` (``K v``) 0.04 ms,
    no faster than the dense ``bmm`` (0.045 ms each), before counting the top-k selection per
    absorption. No gain.
  - *Chunking the kernel for cache.* One pass per iteration over L2-sized chunks would need about 8
    chunks (1 MB of L2 per core) and 4 small ops per chunk per iteration; the per-op overhead
    (5-10 us) exceeds the saving (under 0.05 ms per iteration).
  - *Fewer absorptions.* Absorption is a numerical no-op (absorbing every 100 instead of every 50
    iterations changes converged potentials by 2e-7), and the scalings stay small (``|log u|, |log v|``
    < 9 over the final 58 iterations), so the second absorption of the final stage could go (0.7 ms).
    The first two eps stages (``eps >= diag^2 / 4``) do nothing measurable (starting at ``diag^2 / 16``
    gives the same error after 100 iterations, 0.137 against 0.142 of the largest centred potential on
    three 224^2 crops), saving 2 more. Together about 10-15%: not adopted, to keep the defaults'
    outputs unchanged; ``eps_start`` and ``absorb_every`` are options.
  - *A steeper eps schedule* (``eps_factor = 0.1``) made the first version return NaN: after an eps
    step the stabilised kernel's entries are about ``P^(eps_old / eps_new)`` with ``P ~ b_j / N``, so
    whole columns fell below 1e-30, ``v`` hit its bound and the next absorption overflowed. Each
    absorption now first shifts ``beta`` by ``-eps_old * log b`` (free: the first update recomputes
    ``v`` from ``u`` alone, so a per-block shift of ``beta`` leaves the iterates unchanged; same
    potentials to 1e-6), which puts the largest entry of every column in
    ``[-(eps_old / eps_new) log N, 0]``: no column can be flushed while that bound stays above
    ``log 1e-30 = -69``, i.e. for any realistic ``N`` at the default factor 0.25 and up to about 1000
    heads at 0.1 (a pessimistic bound: it assumes a block's mass is spread evenly over all heads).
    Measured: ``eps_factor = 0.1`` is now finite, marginal error 3e-7 after 1000 iterations on the
    benchmark batch; 0.05 still fails, and factors below 0.1 are rejected with a ``ValueError``. An
    exact per-column maximum (one more reduction pass) would remove the limit at about +25%
    absorption time (measured); not needed for the defaults.

  The exact problem couples every block to its nearest heads however far they are, so it needs the
  dense ``B x N x M`` kernel. The separable GEMM form needs the *unscaled* kernel, which underflows
  for far blocks (the very artefact ``exact`` removes), and a truncated (windowed) kernel cannot
  represent the exact problem either: a block far from every head must still send its mass to its
  nearest head, so the exact plan is not local in the unscaled kernel. ``exact`` is the ablation
  option; the default is ``reference``.

All functions work on whole batches: points ``(B, N, 2)`` padded with a mask ``(B, N)``, densities
``(B, M)``. Images with no heads (all-False mask rows) are allowed; their potentials are finite and
their OT gradient is defined as zero by the caller (the published code skips them).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_REG", "DEFAULT_NUM_ITERS", "OT_MODES", "OTResult", "block_centres", "squared_distances",
    "published_squared_distances", "published_axis_kernels", "sinkhorn_reference", "sinkhorn_exact",
    "stabilised_kernel", "sinkhorn_log_domain", "ot_potentials", "ot_gradient", "transport_plan",
]

DEFAULT_REG = 10.0
DEFAULT_NUM_ITERS = 100
OT_MODES = ("reference", "exact")
M_EPS = 1e-16  # the published guard in the scaling updates and in log(v + 1e-16)
_FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)  # 1.18e-38, the smallest normal float32
_STAB_FLUSH = 1e-30  # stabilised-kernel entries below this are set to 0 (no subnormals)
_SCALING_MAX = 1e30  # bound on the scaling vectors between absorptions (never reached in practice)
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
def block_centres(grid_size: tuple[int, int], reduction: int, *, device=None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Centres ``(x, y)`` of the ``h x w`` output blocks in pixels, row-major: ``(h*w, 2)``.

    Block ``(i, j)`` covers pixels ``[j r, (j+1) r) x [i r, (i+1) r)``; its centre is
    ``((j + 0.5) r, (i + 0.5) r)``, as in the published DM-Count code.
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    ys = torch.arange(h, device=device, dtype=dtype) * reduction + reduction / 2
    xs = torch.arange(w, device=device, dtype=dtype) * reduction + reduction / 2
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)


def squared_distances(points: Tensor, centres: Tensor) -> Tensor:
    """``C[b, i, j] = |points[b, i] - centres[j]|^2``: points ``(B, N, 2)``, centres ``(M, 2)`` -> ``(B, N, M)``.

    Computed as ``(x - cx)^2 + (y - cy)^2`` (no cancellation), in the dtype of ``points``.
    """
    # contiguous coordinate rows: broadcasting a strided column is about 2x slower on CPU (same values)
    dx = points[..., 0:1] - centres[:, 0].to(points.dtype).contiguous()
    dy = points[..., 1:2] - centres[:, 1].to(points.dtype).contiguous()
    return dx * dx + dy * dy


def _published_axis_cost(p: Tensor, c: Tensor) -> Tensor:
    """``-2 p c + p^2 + c^2`` evaluated in the order the published code does (float rounding included)."""
    return -2 * (p * c) + p * p + c * c


def published_squared_distances(points: Tensor, grid_size: tuple[int, int], reduction: int) -> Tensor:
    """The published cost: per-axis ``-2pc + p^2 + c^2``, then ``y_part + x_part``: ``(B, N, h*w)``.

    Equal to :func:`squared_distances` up to float32 rounding (about ``1e-3`` px^2 at 224 px).
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    cx = torch.arange(w, device=points.device, dtype=torch.float32) * reduction + reduction / 2
    cy = torch.arange(h, device=points.device, dtype=torch.float32) * reduction + reduction / 2
    x_part = _published_axis_cost(points[..., 0:1].float(), cx)  # (B, N, w)
    y_part = _published_axis_cost(points[..., 1:2].float(), cy)  # (B, N, h)
    return (y_part.unsqueeze(-1) + x_part.unsqueeze(-2)).flatten(-2)


# ---------------------------------------------------------------------------------------------- reference
def published_axis_kernels(points: Tensor, mask: Tensor, grid_size: tuple[int, int], reduction: int,
                           reg: float = DEFAULT_REG) -> tuple[Tensor, Tensor]:
    """The published kernel in separable form: ``KY (B, h, N)`` and ``KX (B, N, w)``.

    ``K[b, i, r*w + c] = KY[b, r, i] * KX[b, i, c]`` with ``KX = exp(x_part / -reg)``, ``KY = exp(y_part / -reg)``
    and the published per-axis costs. Factors below the smallest normal float32 are 0, padding heads are 0.
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    cx = torch.arange(w, device=points.device, dtype=torch.float32) * reduction + reduction / 2
    cy = torch.arange(h, device=points.device, dtype=torch.float32) * reduction + reduction / 2
    kx = torch.exp(_published_axis_cost(points[..., 0:1].float(), cx) / -reg)  # (B, N, w)
    ky = torch.exp(_published_axis_cost(points[..., 1:2].float(), cy) / -reg)  # (B, N, h)
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
    """The published DM-Count Sinkhorn, batched (see the module docstring for what is reproduced).

    Args:
        points: ``(B, N, 2)`` padded ``(x, y)`` heads in pixels; mask ``(B, N)`` marks real heads.
        b: ``(B, M)`` normalised predicted density (``M = h*w``, row-major), finite and ``>= 0``.
        grid_size: ``(h, w)``; reduction: block size in pixels.
        stop_threshold, eval_every: the published early stop (``0`` disables it). An image whose
            squared marginal error is ``<= stop_threshold`` at an evaluation keeps the ``u, v`` of that
            iteration; to save work the batch keeps iterating and such images are reverted at each
            evaluation (one ``where`` per ``eval_every`` iterations instead of one per iteration).
    Returns:
        :class:`OTResult` with ``alpha = reg*log(u+1e-16)`` and ``beta = reg*log(v+1e-16)``.
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    batch = b.shape[0]
    b = b.float().reshape(batch, h, w)
    ky, kx = published_axis_kernels(points, mask, grid_size, reduction, reg)
    counts = mask.sum(-1, keepdim=True)
    a = mask.float() / counts.clamp_min(1)
    u = a.clone()  # the published start: ones(N) / N
    v = torch.full_like(b, 1.0 / (h * w))
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
def _eps_schedule(reg: float, start: float, factor: float) -> list[float]:
    """Geometric eps-scaling schedule ``start, start*factor, ...`` ending exactly at ``reg``."""
    schedule = []
    eps = max(start, reg)
    while eps > reg * (1 + 1e-9):
        schedule.append(eps)
        eps *= factor
    schedule.append(reg)
    return schedule


def stabilised_kernel(alpha: Tensor, beta: Tensor, cost: Tensor, eps: float) -> Tensor:
    """``K~_ij = exp((alpha_i + beta_j - C_ij) / eps)`` with entries below 1e-30 set to 0: ``(B, N, M)``.

    ``alpha`` ``(B, N)`` may hold ``-inf`` for rows that must be 0 (padding heads). Written as five
    in-place passes over one new ``B x N x M`` tensor. The exponent is clamped from below at
    ``log(1e-30) - 1`` *before* the ``exp``: ``torch.exp`` on arguments whose result underflows
    (below about -87) takes a slow path, and 95% of the entries of a stabilised kernel at ``eps = 10``
    do; the clamp makes the absorption about 8x faster (measured: 0.7 ms instead of 6 ms for
    8 x 250 x 784 on the 2-core course machine). The clamped entries (about 3.7e-31) are then set to 0
    by the threshold, so the result is the same as ``where(K~ >= 1e-30, K~, 0)`` on the unclamped kernel.
    """
    x = alpha.unsqueeze(-1) + beta.unsqueeze(-2)
    x.sub_(cost).mul_(1.0 / eps).clamp_min_(_LOG_FLUSH_FLOOR).exp_()
    return torch.nn.functional.threshold_(x, _STAB_FLUSH, 0.0)


def sinkhorn_exact(cost: Tensor, mask: Tensor, b: Tensor, *, reg: float = DEFAULT_REG,
                   num_iters: int = DEFAULT_NUM_ITERS, eps_scaling: bool = True, eps_start: float | None = None,
                   eps_factor: float = 0.25, iters_per_stage: int = 6, absorb_every: int = 50) -> OTResult:
    """Stabilised scaling Sinkhorn with eps-scaling, batched (see the module docstring).

    Args:
        cost: ``(B, N, M)`` squared distances in pixels^2 (padding rows are ignored via ``mask``).
        mask: ``(B, N)`` real heads; b: ``(B, M)`` normalised density, finite and ``>= 0``.
        num_iters: total iteration budget (eps-scaling stages included); the last
            ``num_iters - stages * iters_per_stage`` (at least ``absorb_every``) run at ``reg``.
        eps_scaling: anneal eps from ``eps_start`` (default: the largest cost, bounded by the caller's
            image diagonal) down to ``reg`` by ``eps_factor`` per stage.
    Returns:
        :class:`OTResult` (``beta`` includes the ``reg * log b_j`` term; ``b_j`` is floored at 1.18e-38
        inside that log so that empty blocks get a finite potential). Computed in float32 with autocast
        off. ``marginal_error`` is that of the plan ``diag(u) K~ diag(v)`` of the last absorption.
    """
    if eps_scaling and not 0.1 <= eps_factor < 1.0:
        raise ValueError(f"sinkhorn_exact: eps_factor must be in [0.1, 1), got {eps_factor!r} (a larger drop per "
                         "stage can flush whole columns of the stabilised kernel; see the module docstring)")
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
    b = b.clamp_min(_FLOAT32_TINY)
    if eps_scaling:
        start = eps_start if eps_start is not None else float(cost.detach().amax()) if cost.numel() else reg
        schedule = _eps_schedule(reg, start, eps_factor)
    else:
        schedule = [reg]
    stage_iters = [iters_per_stage] * (len(schedule) - 1)
    stage_iters.append(max(num_iters - sum(stage_iters), absorb_every if num_iters > 0 else 0))
    # padding heads: -inf in the exponent gives exactly-zero kernel rows (so u = a / Kv = 0 there)
    row_off = torch.zeros(batch, num_points, device=device).masked_fill_(~mask_eff, -math.inf)
    alpha = torch.zeros(batch, num_points, device=device)
    beta = torch.zeros(batch, num_blocks, device=device)
    one = torch.ones((), device=device)
    log_b = b.log()
    iterations = 0
    eps_prev = 0.0  # eps at which the current potentials were computed (0: none yet)
    kernel = u = v = None
    for eps, n_iter in zip(schedule, stage_iters):
        done = 0
        while done < n_iter:
            steps = min(absorb_every, n_iter - done)
            # Free column shift: the first update recomputes v from u alone, so any per-block shift of
            # beta leaves the iterates unchanged. Shifting by eps_prev*log(b) puts the largest entry of
            # every column of the new kernel in [-(eps_prev/eps) log N, 0] (the previous plan's columns
            # summed to b), instead of near (b/N)^(eps_prev/eps), which flushes whole columns to 0 and
            # drives v towards its bound when eps drops by more than about 4x per stage.
            beta = beta - eps_prev * log_b
            kernel = stabilised_kernel(alpha + row_off, beta, cost, eps)
            # K v as v^T K^T on a transposed *view*: torch's batched matrix-vector product with the
            # vector on the right is about 7x slower on CPU (0.6 ms against 0.09 ms at 8 x 250 x 784).
            kernel_t = kernel.transpose(1, 2)
            u = torch.ones(batch, 1, num_points, device=device)
            for _ in range(steps):
                ktu = torch.bmm(u, kernel).squeeze(1)
                v = torch.div(b, ktu.clamp_min_(_FLOAT32_TINY)).clamp_max_(_SCALING_MAX)
                kv = torch.bmm(v.unsqueeze(1), kernel_t)
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


def sinkhorn_log_domain(cost: Tensor, mask: Tensor, b: Tensor, *, reg: float = DEFAULT_REG,
                        num_iters: int = DEFAULT_NUM_ITERS, eps_scaling: bool = True,
                        eps_start: float | None = None, eps_factor: float = 0.25,
                        iters_per_stage: int = 6) -> OTResult:
    """Batched log-domain Sinkhorn (two ``logsumexp`` per iteration): the robust, slower alternative.

    Same schedule and outputs as :func:`sinkhorn_exact`; kept for the benchmark and as a cross-check.
    """
    cost = cost.to(torch.promote_types(cost.dtype, torch.float32))
    b = b.to(cost.dtype)
    batch, num_points, num_blocks = cost.shape
    counts = mask.sum(-1, keepdim=True)
    empty = counts.squeeze(-1) == 0
    mask_eff = mask.clone()
    mask_eff[:, 0] |= empty
    a = mask_eff.to(cost.dtype) / mask_eff.sum(-1, keepdim=True)
    log_a = torch.where(mask_eff, a.clamp_min(1e-300).log(), torch.full_like(a, -float("inf")))
    log_b = b.clamp_min(_FLOAT32_TINY).log()
    if eps_scaling:
        start = eps_start if eps_start is not None else float(cost.detach().amax())
        schedule = _eps_schedule(reg, start, eps_factor)
    else:
        schedule = [reg]
    stage_iters = [iters_per_stage] * (len(schedule) - 1)
    stage_iters.append(max(num_iters - sum(stage_iters), 1))
    alpha = torch.zeros(batch, num_points, dtype=cost.dtype, device=cost.device)
    beta = torch.zeros(batch, num_blocks, dtype=cost.dtype, device=cost.device)
    iterations = 0
    for eps, n_iter in zip(schedule, stage_iters):
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


# ---------------------------------------------------------------------------------------------- front end
def ot_potentials(points: Tensor, mask: Tensor, b: Tensor, grid_size: tuple[int, int], reduction: int, *,
                  mode: str = "reference", reg: float = DEFAULT_REG, num_iters: int = DEFAULT_NUM_ITERS,
                  image_size: tuple[int, int] | None = None, **options) -> OTResult:
    """Dual potentials for a batch: dispatches to :func:`sinkhorn_reference` or :func:`sinkhorn_exact`.

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
    total = density.sum(-1, keepdim=True)
    denom = total * total + eps
    return total / denom * beta - (density * beta).sum(-1, keepdim=True) / denom


def transport_plan(cost: Tensor, alpha: Tensor, beta: Tensor, reg: float = DEFAULT_REG) -> Tensor:
    """``P_ij = exp((alpha_i + beta_j - C_ij) / reg)`` for one image or a batch (last two dims ``N x M``)."""
    return torch.exp((alpha.unsqueeze(-1) + beta.unsqueeze(-2) - cost) / reg)
