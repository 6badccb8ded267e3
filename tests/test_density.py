"""Density maps: count preservation, kernel shape, adaptive sigmas, block counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gigacount_lib.data.density import (
    adaptive_density_map, adaptive_sigmas, block_count_map, block_count_maps, check_points,
    density_map, gaussian_density_map, inside_points, point_map, sum_pool,
)

SIZE = (60, 80)  # (H, W)


def _random_points(n: int, size=SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return torch.rand(n, 2, generator=g) * torch.tensor([float(w), float(h)])


def _border_points() -> torch.Tensor:
    h, w = SIZE
    return torch.tensor([[0.0, 0.0], [w, h], [w, 0.0], [0.0, h], [w - 0.01, 30.0], [40.0, 0.2],
                         [1.0, 1.0], [1.2, 1.1], [1.1, 1.3]])  # corners, edges and a tight cluster


MAPS = {
    "point": lambda p, s: point_map(p, s),
    "fixed_sigma1": lambda p, s: gaussian_density_map(p, s, sigma=1.0),
    "fixed_sigma8": lambda p, s: gaussian_density_map(p, s, sigma=8.0),
    "fixed_sigma40": lambda p, s: gaussian_density_map(p, s, sigma=40.0),  # kernels much wider than the image
    "adaptive": lambda p, s: adaptive_density_map(p, s),
    "adaptive_k1_big_beta": lambda p, s: adaptive_density_map(p, s, k=1, beta=2.0),
}


@pytest.mark.parametrize("name", sorted(MAPS))
@pytest.mark.parametrize("points_kind", ["random", "border", "single", "empty", "dense"])
def test_every_density_map_preserves_the_count(name, points_kind):
    points = {"random": _random_points(57), "border": _border_points(),
              "single": torch.tensor([[79.5, 59.5]]), "empty": torch.zeros(0, 2),
              "dense": _random_points(2000, seed=3)}[points_kind]
    d = MAPS[name](points, SIZE)
    assert d.shape == SIZE and d.dtype == torch.float32
    assert float(d.min()) >= 0.0
    n = points.shape[0]
    assert abs(float(d.double().sum()) - n) <= 1e-3 * max(n, 1)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_points_outside_or_nan_are_dropped_from_the_count(name, caplog):
    inside = _random_points(10)
    bad = torch.tensor([[-3.0, 5.0], [81.0, 5.0], [5.0, 61.0], [float("nan"), 3.0], [2.0, float("inf")]])
    d = MAPS[name](torch.cat([inside, bad]), SIZE)
    assert abs(float(d.sum()) - 10) <= 1e-3 * 10
    assert "dropped 2 non-finite and 3 outside" in caplog.text


def test_point_map_puts_mass_in_the_containing_pixel():
    d = point_map(torch.tensor([[3.7, 2.2], [3.1, 2.9], [80.0, 60.0]]), SIZE)
    assert d[2, 3] == 2 and d[59, 79] == 1 and d.sum() == 3


def test_gaussian_kernel_is_centred_symmetric_and_has_the_right_width():
    sigma = 3.0
    d = gaussian_density_map(torch.tensor([[40.5, 30.5]]), SIZE, sigma=sigma)
    assert d.argmax() == 30 * SIZE[1] + 40
    torch.testing.assert_close(d, d.flip(0).roll(1, 0), atol=1e-7, rtol=0)  # symmetric around row 30
    ys, xs = torch.meshgrid(torch.arange(SIZE[0]) + 0.5, torch.arange(SIZE[1]) + 0.5, indexing="ij")
    var_x = float((d * (xs - 40.5) ** 2).sum())
    assert abs(math.sqrt(var_x) - sigma) < 0.1  # truncation at 3 sigma shrinks it by ~3 %
    assert float(d[30, 40 + 10]) == 0.0  # beyond truncate * sigma = 9 pixels


def test_border_kernel_is_renormalised_inside_the_image():
    d = gaussian_density_map(torch.tensor([[0.5, 0.5]]), SIZE, sigma=5.0)
    assert abs(float(d.sum()) - 1.0) < 1e-5
    interior = gaussian_density_map(torch.tensor([[40.5, 30.5]]), SIZE, sigma=5.0)
    assert float(d[0, 0]) > 3 * float(interior[30, 40])  # a quarter kernel carries all the mass


def test_tiny_sigma_degrades_to_the_point_map():
    pts = _random_points(20)
    torch.testing.assert_close(gaussian_density_map(pts, SIZE, sigma=1e-4), point_map(pts, SIZE))
    torch.testing.assert_close(gaussian_density_map(pts, SIZE, sigma=0.0), point_map(pts, SIZE))


def test_adaptive_sigmas_follow_mcnn():
    # three collinear points: distances 3 and 4 -> kNN(k=2) means: (3+7)/2, (3+4)/2, (4+7)/2
    pts = torch.tensor([[10.0, 10.0], [13.0, 10.0], [17.0, 10.0]])
    sig = adaptive_sigmas(pts, k=2, beta=0.3)
    torch.testing.assert_close(sig, 0.3 * torch.tensor([5.0, 3.5, 5.5]))
    # k larger than the number of neighbours uses the neighbours that exist
    torch.testing.assert_close(adaptive_sigmas(pts, k=10, beta=1.0), torch.tensor([5.0, 3.5, 5.5]))
    assert adaptive_sigmas(pts[:1], fallback_sigma=7.0).tolist() == [7.0]
    assert adaptive_sigmas(pts, k=1, beta=1.0, max_sigma=3.5).max() == 3.5
    assert adaptive_sigmas(torch.zeros(0, 2)).shape == (0,)


def test_adaptive_map_is_narrower_in_dense_regions():
    dense = torch.tensor([[20.0 + i, 20.0] for i in range(5)])  # neighbours 1 px apart
    sparse = torch.tensor([[60.0, 50.0], [75.0, 50.0]])  # 15 px apart
    d = adaptive_density_map(torch.cat([dense, sparse]), SIZE, k=1, beta=0.3)
    assert float(d[20, 20:25].sum()) / 5 > 10 * float(d[50, 60])  # peaked vs spread


def test_density_map_dispatch():
    pts = _random_points(5)
    torch.testing.assert_close(density_map(pts, SIZE, "point"), point_map(pts, SIZE))
    torch.testing.assert_close(density_map(pts, SIZE, "fixed", sigma=2.0), gaussian_density_map(pts, SIZE, 2.0))
    torch.testing.assert_close(density_map(pts, SIZE, "adaptive", k=2), adaptive_density_map(pts, SIZE, k=2))
    with pytest.raises(ValueError, match="unknown method"):
        density_map(pts, SIZE, "gauss")


def test_large_image_is_fast_and_exact():
    import time

    pts = _random_points(3000, size=(768, 1024), seed=5)
    start = time.perf_counter()
    d = adaptive_density_map(pts, (768, 1024))
    elapsed = time.perf_counter() - start
    assert abs(float(d.double().sum()) - 3000) < 1e-3 * 3000
    assert elapsed < 10.0


# --------------------------------------------------------------------------------------------------
# block counts (existing API) and sum pooling
# --------------------------------------------------------------------------------------------------
def test_block_count_map_matches_brute_force():
    pts = _random_points(200, seed=7)
    b = 16
    got = block_count_map(pts, SIZE, b)
    assert got.shape == (math.ceil(60 / b), math.ceil(80 / b))
    want = np.zeros(got.shape)
    for x, y in pts.tolist():
        want[min(int(y // b), got.shape[0] - 1), min(int(x // b), got.shape[1] - 1)] += 1
    np.testing.assert_array_equal(got.numpy(), want)
    assert block_count_maps([pts, pts[:3]], SIZE, b).shape == (2, 1, *got.shape)


@pytest.mark.parametrize("block", [1, 4, 7, 8, 16])
def test_sum_pool_preserves_the_count_and_equals_block_counts_for_points(block):
    pts = _random_points(123, seed=2)
    pm = point_map(pts, SIZE)
    torch.testing.assert_close(sum_pool(pm, block), block_count_map(pts, SIZE, block))
    g = gaussian_density_map(pts, SIZE, sigma=4.0)
    assert abs(float(sum_pool(g, block).sum()) - 123) < 1e-3 * 123
    assert sum_pool(g[None, None], block).shape[:2] == (1, 1)


def test_check_points_and_inside_points():
    with pytest.raises(ValueError, match="outside"):
        check_points(torch.tensor([[100.0, 1.0]]), SIZE)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        inside_points(torch.zeros(3, 3), SIZE)
    assert inside_points(np.array([[1.0, 2.0]]), SIZE).dtype == torch.float32
