"""Batched Sinkhorn for DM-Count against straightforward per-image references.

* ``reference`` mode against a per-image, dense implementation of the published update rule (written
  here from the description in the module docstring), to 1e-5;
* ``exact`` mode against a per-image float64 log-domain Sinkhorn run to convergence, to 1e-4 relative
  in the dual potential (up to its constant shift) and in the gradient;
* the OT gradient against finite differences of the converged OT value and against autograd.
"""
from __future__ import annotations

import math

import pytest
import torch

from gigacount_lib.data.transforms import pad_points
from gigacount_lib.losses import DMCountLoss
from gigacount_lib.losses.ot import (block_centres, ot_gradient, published_axis_kernels,
                                     ot_potentials, published_squared_distances, sinkhorn_exact,
                                     squared_distances, stabilised_kernel)

from _ot_reference import sinkhorn_log_domain

REG = 10.0


# ------------------------------------------------------------------------------------------ per-image references
def published_per_image(points: torch.Tensor, b: torch.Tensor, grid: tuple[int, int], r: int, reg: float = REG,
                        max_iter: int = 100, stop_thr: float = 1e-9) -> tuple[torch.Tensor, int]:
    """The published update rule for one image, dense kernel, float32, with its stop rule and NaN rollback."""
    cost = published_squared_distances(points[None], grid, r)[0]
    kernel = torch.exp(cost / -reg)
    n = points.shape[0]
    a = torch.ones(n) / n
    u = torch.ones(n) / n
    v = torch.ones(b.numel()) / b.numel()
    it, err = 1, 1.0
    while err > stop_thr and it <= max_iter:
        u_prev, v_prev = u, v
        v = b / (u @ kernel + 1e-16)
        u = a / (kernel @ v + 1e-16)
        if not (torch.isfinite(u).all() and torch.isfinite(v).all()):
            u, v = u_prev, v_prev
            break
        if it % 10 == 0:
            err = float(((b - (u @ kernel) * v) ** 2).sum())
        it += 1
    return reg * torch.log(v + 1e-16), it - 1


def log_domain_float64(points: torch.Tensor, b: torch.Tensor, grid: tuple[int, int], r: int, reg: float = REG,
                       tol: float = 1e-14, max_iter: int = 200_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain per-image log-domain Sinkhorn in float64, iterated until the marginals agree to ``tol``."""
    cost = squared_distances(points[None].double(), block_centres(grid, r, dtype=torch.float64))[0]
    n = points.shape[0]
    log_a = torch.full((n,), -math.log(n), dtype=torch.float64)
    b = b.double() / b.double().sum()  # exactly balanced in float64 (a float32 b sums to 1 +- 1e-7)
    log_b = b.log()
    f = torch.zeros(n, dtype=torch.float64)
    for _ in range(max_iter):
        g = reg * (log_b - torch.logsumexp((f[:, None] - cost) / reg, dim=0))
        f = reg * (log_a - torch.logsumexp((g[None, :] - cost) / reg, dim=1))
        col = torch.exp((f[:, None] + g[None, :] - cost) / reg).sum(0)
        if float((col - b).abs().max()) < tol:
            break
    else:  # pragma: no cover - the test problems converge
        raise AssertionError("float64 log-domain reference did not converge")
    return f, g


def centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean()


def rel_err_up_to_shift(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = centred(x.double()), centred(ref.double())
    return float((x - ref).abs().max() / ref.abs().max())


def random_batch(seed: int, counts: list[int], size: tuple[int, int]):
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    pts = [torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) for n in counts]
    return pts, gen


# ------------------------------------------------------------------------------------------ geometry
def test_block_centres_follow_published_convention():
    c = block_centres((2, 3), 8)
    assert c.shape == (6, 2)
    torch.testing.assert_close(c[0], torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(c[2], torch.tensor([20.0, 4.0]))   # row 0, column 2
    torch.testing.assert_close(c[3], torch.tensor([4.0, 12.0]))   # row 1, column 0


def test_published_cost_matches_direct_cost_up_to_rounding():
    pts, _ = random_batch(0, [7], (64, 40))
    padded, _ = pad_points(pts)
    direct = squared_distances(padded, block_centres((8, 5), 8))
    published = published_squared_distances(padded, (8, 5), 8)
    torch.testing.assert_close(published, direct, atol=1e-2, rtol=1e-5)


def test_separable_kernel_equals_dense_published_kernel():
    pts, _ = random_batch(1, [30, 5], (96, 120))
    padded, mask = pad_points(pts)
    grid = (12, 15)
    ky, kx = published_axis_kernels(padded, mask, grid, 8, REG)
    product = (ky.transpose(1, 2).unsqueeze(-1) * kx.unsqueeze(-2)).flatten(-2)  # (B, N, h*w)
    dense = torch.exp(published_squared_distances(padded, grid, 8) / -REG) * mask.unsqueeze(-1)
    normal = dense >= torch.finfo(torch.float32).tiny
    torch.testing.assert_close(product[normal], dense[normal], rtol=2e-5, atol=0.0)
    assert float(product[~normal].max()) < 1e-37  # what is dropped or subnormal stays negligible
    assert float((~normal).float().mean()) > 0.3  # and there is plenty of it on this crop


# ------------------------------------------------------------------------------------------ reference mode
def test_reference_mode_matches_per_image_published_rule():
    size, r = (72, 104), 8           # non-square, h = 9, w = 13
    grid = (9, 13)
    counts = [40, 0, 1, 3, 120]
    pts, gen = random_batch(2, counts, size)
    dens = torch.rand(len(counts), grid[0] * grid[1], generator=gen) ** 3 + 1e-6
    dens[3, :40] = 0.0               # some exactly empty blocks
    b = dens / dens.sum(-1, keepdim=True)
    padded, mask = pad_points(pts)
    res = ot_potentials(padded, mask, b, grid, r, mode="reference")
    for i, n in enumerate(counts):
        if n == 0:
            assert torch.isfinite(res.beta[i]).all()
            continue
        beta_ref, iters = published_per_image(pts[i], b[i], grid, r)
        scale = float(beta_ref.abs().max())
        assert float((res.beta[i] - beta_ref).abs().max()) <= 1e-5 * scale, i
        assert int(res.iterations[i]) == iters, (i, int(res.iterations[i]), iters)


def test_reference_early_stop_is_reproduced():
    # One head: the first iteration already matches the block marginal, so the published rule stops at 10.
    pts = [torch.tensor([[10.0, 6.0]]), torch.rand(50, 2, generator=torch.Generator().manual_seed(4)) * 16]
    b = torch.rand(2, 4, generator=torch.Generator().manual_seed(5)) + 0.1
    b = b / b.sum(-1, keepdim=True)
    padded, mask = pad_points(pts)
    res = ot_potentials(padded, mask, b, (2, 2), 8, mode="reference")
    for i in range(2):
        beta_ref, iters = published_per_image(pts[i], b[i], (2, 2), 8)
        assert int(res.iterations[i]) == iters
        torch.testing.assert_close(res.beta[i], beta_ref, rtol=1e-5, atol=1e-5 * float(beta_ref.abs().max()))
    assert int(res.iterations[0]) == 10


def test_reference_potential_is_capped_far_from_heads():
    # a single head in a corner of a 160 px crop: far blocks get beta = reg * (log b + 36.84)
    pts = [torch.tensor([[3.0, 3.0]])]
    grid = (20, 20)
    b = torch.full((1, 400), 1 / 400)
    padded, mask = pad_points(pts)
    res = ot_potentials(padded, mask, b, grid, 8, mode="reference")
    far = squared_distances(padded, block_centres(grid, 8))[0, 0] > 2000
    expected = REG * (math.log(1 / 400) + math.log(1e16))
    torch.testing.assert_close(res.beta[0, far], torch.full((int(far.sum()),), expected), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------ exact mode
@pytest.mark.parametrize("counts", [[6, 1, 3], [12, 2]])
def test_exact_mode_matches_float64_log_domain_at_convergence(counts):
    size, r, grid = (40, 32), 8, (5, 4)
    pts, gen = random_batch(3 + len(counts), counts, size)
    dens = torch.rand(len(counts), 20, generator=gen) + 0.05
    b = dens / dens.sum(-1, keepdim=True)
    padded, mask = pad_points(pts)
    res = ot_potentials(padded, mask, b, grid, r, mode="exact", num_iters=3000)
    for i in range(len(counts)):
        _, g = log_domain_float64(pts[i], b[i], grid, r)
        assert rel_err_up_to_shift(res.beta[i], g) <= 1e-4
        grad = ot_gradient(res.beta[i:i + 1].double(), dens[i:i + 1].double())[0]
        grad_ref = ot_gradient(g[None], dens[i:i + 1].double())[0]
        assert float((grad - grad_ref).abs().max() / grad_ref.abs().max()) <= 1e-4


def test_exact_single_head_is_analytic():
    # With one head all mass goes to it: P_1j = b_j, so beta_j = C_1j + reg*log(b_j) + const.
    pts = [torch.tensor([[50.0, 20.0]])]
    grid = (16, 16)
    b = torch.rand(1, 256) + 0.01
    b = b / b.sum()
    padded, mask = pad_points(pts)
    res = ot_potentials(padded, mask, b, grid, 8, mode="exact")
    cost = squared_distances(padded, block_centres(grid, 8))[0, 0]
    expected = cost + REG * b[0].log()
    assert rel_err_up_to_shift(res.beta[0], expected) <= 1e-5
    assert torch.isfinite(res.beta).all()


def test_exact_and_log_domain_solvers_agree_and_handle_empty_images():
    pts, gen = random_batch(5, [25, 0, 1], (64, 64))
    dens = torch.rand(3, 64, generator=gen)
    b = dens / dens.sum(-1, keepdim=True)
    padded, mask = pad_points(pts)
    cost = squared_distances(padded, block_centres((8, 8), 8))
    a = sinkhorn_exact(cost, mask, b, eps_start=8192.0)
    c = sinkhorn_log_domain(cost.double(), mask, b.double(), eps_start=8192.0)
    assert torch.isfinite(a.beta).all() and torch.isfinite(a.alpha).all()
    for i in (0, 2):
        assert rel_err_up_to_shift(a.beta[i], c.beta[i]) <= 1e-4


def test_exact_is_far_more_converged_than_100_plain_iterations():
    """The published 100 plain iterations at reg=10 are far from the converged potentials on a 64 px crop."""
    pts, gen = random_batch(6, [15], (64, 64))
    b = torch.rand(1, 64, generator=gen) + 0.05
    b = b / b.sum()
    padded, mask = pad_points(pts)
    _, g = log_domain_float64(pts[0], b[0], (8, 8), 8)
    exact = ot_potentials(padded, mask, b, (8, 8), 8, mode="exact")  # default budget: 100 iterations
    cost = squared_distances(padded, block_centres((8, 8), 8))
    plain = sinkhorn_exact(cost, mask, b, eps_scaling=False)  # 100 plain iterations, no underflow
    assert rel_err_up_to_shift(exact.beta[0], g) < 0.5 * rel_err_up_to_shift(plain.beta[0], g)


def test_stabilised_kernel_equals_flushed_exponential_without_subnormals():
    """The clamp-before-exp absorption equals where(K >= 1e-30, K, 0) of the direct float64 formula."""
    gen = torch.Generator().manual_seed(11)
    pts, _ = random_batch(11, [30, 4], (96, 96))
    padded, mask = pad_points(pts)
    cost = squared_distances(padded, block_centres((12, 12), 8))
    alpha = (torch.rand(2, 30, generator=gen) * 400).masked_fill(~mask, -math.inf)
    beta = torch.rand(2, 144, generator=gen) * 400 - 600
    for eps in (10.0, 200.0):
        kernel = stabilised_kernel(alpha, beta, cost, eps)
        direct = torch.exp((alpha.double().unsqueeze(-1) + beta.double().unsqueeze(-2) - cost.double()) / eps)
        direct = torch.where(direct >= 1e-30, direct, torch.zeros_like(direct))
        kept = kernel > 0
        assert float((direct[kept] - kernel[kept].double()).abs().div(direct[kept]).max()) < 1e-4
        assert bool((direct[~kept] <= 1.0001e-30).all())               # only negligible entries dropped
        assert bool((kernel[kept] >= 1e-30).all())                      # no subnormal, no tiny entry
        assert bool((kernel[1, 4:] == 0).all())                         # padding heads: zero rows
        assert 0.0 < float(kept.float().mean()) < 1.0


def test_exact_steep_schedule_stays_finite():
    """eps_factor 0.1 used to flush whole kernel columns (NaN); the free beta shift keeps it finite."""
    pts, gen = random_batch(12, [200, 160, 0], (224, 224))
    dens = torch.nn.functional.softplus(torch.randn(3, 784, generator=gen))
    b = dens / dens.sum(-1, keepdim=True)
    padded, mask = pad_points(pts)
    cost = squared_distances(padded, block_centres((28, 28), 8))
    steep = sinkhorn_exact(cost, mask, b, eps_start=2 * 224.0 ** 2, eps_factor=0.1)
    assert torch.isfinite(steep.beta).all() and torch.isfinite(steep.alpha).all()
    default = sinkhorn_exact(cost, mask, b, eps_start=2 * 224.0 ** 2)
    # the block marginal is about as well met as with the default schedule (both ~1e-5 after 100 iterations)
    assert float(steep.marginal_error[:2].max()) < 10 * float(default.marginal_error[:2].max()) + 1e-7
    with pytest.raises(ValueError, match="eps_factor"):
        sinkhorn_exact(cost, mask, b, eps_factor=0.05)


def test_exact_is_float32_and_unchanged_under_autocast():
    pts, gen = random_batch(13, [20, 3], (64, 64))
    b = torch.rand(2, 64, generator=gen) + 0.05
    b = b / b.sum(-1, keepdim=True)
    padded, mask = pad_points(pts)
    cost = squared_distances(padded, block_centres((8, 8), 8))
    plain = sinkhorn_exact(cost, mask, b, eps_start=8192.0)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cast = sinkhorn_exact(cost, mask, b, eps_start=8192.0)
    assert cast.beta.dtype == torch.float32
    torch.testing.assert_close(cast.beta, plain.beta)


# ------------------------------------------------------------------------------------------ gradient
def _ot_value_float64(points, s, grid, r):
    b = s / s.sum()
    f, g = log_domain_float64(points, b, grid, r, tol=1e-15)
    n = points.shape[0]
    return float(f.sum() / n + (g * b).sum())  # dual objective (the exp-penalty term is a constant here)


def test_ot_gradient_matches_finite_differences_of_the_ot_value():
    pts = [torch.tensor([[5.0, 9.0], [27.0, 30.0], [14.0, 20.0]])]
    grid = (4, 4)
    s = (torch.rand(16, generator=torch.Generator().manual_seed(7)) + 0.2).double()
    padded, mask = pad_points(pts)
    res = ot_potentials(padded, mask, (s / s.sum()).float()[None], grid, 8, mode="exact", num_iters=3000)
    grad = ot_gradient(res.beta.double(), s[None])[0]
    h = 1e-5
    for j in (0, 5, 10, 15):
        sp, sm = s.clone(), s.clone()
        sp[j] += h
        sm[j] -= h
        fd = (_ot_value_float64(pts[0], sp, grid, 8) - _ot_value_float64(pts[0], sm, grid, 8)) / (2 * h)
        assert abs(fd - float(grad[j])) <= 1e-3 * float(grad.abs().max()), j


@pytest.mark.parametrize("mode", ["reference", "exact"])
def test_autograd_of_ot_term_equals_dual_potential_formula(mode):
    pts, gen = random_batch(8, [9, 0, 1], (32, 48))
    density = (torch.rand(3, 1, 4, 6, generator=gen) + 0.1).requires_grad_(True)
    loss_fn = DMCountLoss(8, mode=mode, weight_count=0.0, weight_tv=0.0, weight_ot=1.0)
    loss, terms = loss_fn.compute(None, density, pts, (32, 48))
    loss.backward()
    padded, mask = pad_points(pts)
    s = density.detach().flatten(1)
    res = ot_potentials(padded, mask, s / (s.sum(-1, keepdim=True) + 1e-8), (4, 6), 8, mode=mode,
                        image_size=(32, 48))
    expected = ot_gradient(res.beta, s)
    expected[1] = 0.0  # no heads: no OT gradient (the published code skips the image)
    torch.testing.assert_close(density.grad.flatten(1), expected)
    assert abs(terms["ot"]) < 1e-3  # the surrogate's value is 0 up to rounding


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_pot_cross_check_for_the_published_rule():
    ot = pytest.importorskip("ot")
    pts = [torch.rand(6, 2, generator=torch.Generator().manual_seed(9)) * 24]
    b = torch.rand(9, generator=torch.Generator().manual_seed(10)) + 0.1
    b = b / b.sum()
    cost = published_squared_distances(pts[0][None], (3, 3), 8)[0].double()
    _, log = ot.sinkhorn(torch.ones(6, dtype=torch.float64) / 6, b.double(), cost, REG, numItermax=100,
                         stopThr=1e-9, log=True)
    padded, mask = pad_points(pts)
    res = ot_potentials(padded, mask, b[None], (3, 3), 8, mode="reference")
    beta_pot = REG * torch.log(torch.as_tensor(log["v"]) + 1e-16)
    # POT stops on a different criterion (L2 norm, checked every 10 iterations) so compare loosely
    assert rel_err_up_to_shift(res.beta[0], beta_pot) <= 1e-3
