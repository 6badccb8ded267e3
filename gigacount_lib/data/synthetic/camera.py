"""Scene geometry: a pinhole camera over flat ground, and where people stand on that ground.

With the horizon at row ``y_h`` (possibly above the image), a person whose feet touch row ``y`` is
``h(y) = k (y - y_h)`` pixels tall, so people grow linearly toward the bottom. Ground positions are
in metres: depth ``Z = 1.7 F / h(y)`` and lateral ``X = (x - c_x) Z / F`` for a focal length ``F``.
People stand in Gaussian clusters plus a sparse uniform part, at least ``min_spacing_m`` apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PERSON_HEIGHT_M", "Camera", "sample_ground", "place_people"]

PERSON_HEIGHT_M = 1.7


@dataclass
class Camera:
    """Pinhole camera over flat ground, in supersampled pixel units."""

    width: float
    height: float
    horizon: float      # y_h
    k: float            # person height (px) per pixel below the horizon
    focal: float        # F

    def person_height(self, y_foot: np.ndarray | float) -> np.ndarray | float:
        return self.k * (np.asarray(y_foot) - self.horizon)

    def to_image(self, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground point (X, Z) in metres -> foot pixel (x, y)."""
        y = self.horizon + PERSON_HEIGHT_M * self.focal / (self.k * Z)
        x = self.width / 2 + X * self.focal / Z
        return x, y

    def depth_of_row(self, y: float) -> float:
        return PERSON_HEIGHT_M * self.focal / (self.k * (y - self.horizon))

    def px_per_metre(self, y_foot: float) -> float:
        return float(self.person_height(y_foot)) / PERSON_HEIGHT_M


# ------------------------------------------------------------------------------------- scene layout
def sample_ground(rng: np.random.Generator, n: int, z_min: float, z_max: float,
                   half_width_per_z: float) -> np.ndarray:
    """``n`` points uniform on the visible ground trapezoid: density of Z is proportional to Z."""
    u = rng.random(n)
    Z = np.sqrt(u * (z_max**2 - z_min**2) + z_min**2)
    X = (rng.random(n) * 2 - 1) * half_width_per_z * Z
    return np.stack([X, Z], axis=1)


def place_people(rng: np.random.Generator, n_target: int, z_min: float, z_max: float,
                  half_width_per_z: float, spacing: float, blocked: list[tuple[float, float, float, float]]
                  ) -> np.ndarray:
    """Ground positions (M, 2) of up to ``n_target`` people: Gaussian clusters + a sparse uniform part."""
    from scipy.spatial import cKDTree

    if n_target == 0:
        return np.zeros((0, 2))
    cluster_share = rng.uniform(0.35, 0.95) if n_target > 8 else rng.uniform(0.0, 0.6)
    n_cluster = int(round(n_target * cluster_share))
    n_clusters = int(rng.integers(1, 5))
    candidates = [sample_ground(rng, int(1.6 * (n_target - n_cluster)) + 4, z_min, z_max, half_width_per_z)]
    if n_cluster:
        centres = sample_ground(rng, n_clusters, z_min, z_max, half_width_per_z * 0.8)
        shares = rng.dirichlet(np.ones(n_clusters) * 1.5)
        for (cx, cz), share in zip(centres, shares):
            m = int(round(2.0 * n_cluster * share)) + 1
            # spread so that the cluster roughly holds its people at ~2-3 persons / m^2
            radius = math.sqrt(max(share * n_cluster, 1) / (math.pi * rng.uniform(1.2, 3.0)))
            sx = radius * rng.uniform(0.8, 2.2)
            sz = radius * rng.uniform(0.6, 1.6) * (1 + cz / max(z_max, 1e-6))
            pts = np.stack([rng.normal(cx, sx, m), rng.normal(cz, sz, m)], axis=1)
            candidates.append(pts)
    cand = np.concatenate(candidates)
    Z = cand[:, 1]
    keep = (Z >= z_min) & (Z <= z_max) & (np.abs(cand[:, 0]) <= half_width_per_z * Z)
    for x0, z0, x1, z1 in blocked:  # vehicles occupy their footprint
        keep &= ~((cand[:, 0] >= x0) & (cand[:, 0] <= x1) & (cand[:, 1] >= z0) & (cand[:, 1] <= z1))
    cand = cand[keep]
    cand = cand[rng.permutation(len(cand))]
    if len(cand) == 0:
        return np.zeros((0, 2))
    # greedy minimum-spacing filter (a random-order Poisson-disc thinning)
    neighbours = cKDTree(cand).query_ball_point(cand, r=spacing)
    removed = np.zeros(len(cand), bool)
    kept: list[int] = []
    for i in range(len(cand)):
        if removed[i]:
            continue
        kept.append(i)
        if len(kept) >= n_target:
            break
        removed[neighbours[i]] = True
    return cand[np.array(kept, int)]

