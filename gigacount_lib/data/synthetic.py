"""The embedded synthetic crowd dataset: procedurally rendered crowd photographs with head annotations.

Why a synthetic dataset? The real benchmarks (UCF-QNRF, ShanghaiTech, NWPU-Crowd, JHU-Crowd++) cannot be
shipped or downloaded here, yet every notebook and test needs images that *behave* like crowd photographs:
heads that shrink toward the horizon, dense clusters next to empty ground, occlusion, clutter that is not a
person, night scenes, blur and JPEG artefacts. This module renders such scenes with numpy + PIL in a few
milliseconds each and writes them in the **UCF-QNRF layout** (Idrees et al., ECCV 2018), so the very same
reader serves real and synthetic data::

    <root>/Train/img_0001.jpg  <root>/Train/img_0001_ann.mat   (annPoints: float64 (N, 2) of (x, y))
    <root>/Test/img_0001.jpg   <root>/Test/img_0001_ann.mat
    <root>/synthetic.json      (config, generator version, per-image counts)

Scene model (all sizes in pixels of the rendered image):

* **Perspective ground plane.** A pinhole camera over flat ground with the horizon at row ``y_h`` (possibly
  above the image: a downward-looking camera). A person whose feet touch row ``y`` is
  ``h(y) = k (y - y_h)`` pixels tall, so people grow linearly toward the bottom. Positions are sampled on the
  ground in metres: depth ``Z = 1.7 F / h(y)`` and lateral ``X = (x - c_x) Z / F`` for a focal length ``F``.
  ``k = 1.7 / camera height`` is kept below 0.7 (camera above 2.4 m), so farther heads appear higher in
  the image than nearer ones, and the farthest people drawn have heads of ``min_head_px`` pixels.
* **People** are head-and-shoulders/torso figures (legs, torso with shading, arms, neck, head, hair or hat)
  with skin, hair and clothing colours drawn from varied palettes, placed as Gaussian clusters in ground
  coordinates plus a sparse uniform part, with a minimum spacing of ``min_spacing_m`` metres.
* **Occlusion.** Everything is drawn far to near (painter's algorithm). A label map records which person
  owns each pixel; a head is annotated iff its centre lies inside the image and at least
  ``min_visible_fraction`` of its area is still visible at the end, so annotations are the heads a human
  annotator would see.
* **Counts** follow a long-tailed law: a fraction ``zero_fraction`` of empty scenes, the rest log-normal
  with median ``count_median`` and log-std ``count_sigma`` (capped at ``max_people``). Per-image quantiles come
  from a golden-ratio (low-discrepancy) sequence, so even a small set spans empty to dense scenes.
* **Backgrounds and distractors:** sky with clouds, buildings with windows, textured ground with perspective
  paving lines, poles with lamps, signs, trees, cars and balloons (round, head-like negatives).
* **Photometry:** day, overcast, dusk and night (global gain, colour tint, street-light pools, lit windows),
  haze that grows toward the horizon, vignetting, Gaussian or motion blur, signal-dependent sensor noise and
  JPEG compression at a random quality.

Everything is deterministic for a seed: image ``i`` of a split draws from
``numpy.random.SeedSequence([seed, split, i])`` (so it does not depend on how many images are written or
on ``workers``), and the written files are byte-identical across runs (the MAT-file header's creation date
is replaced by a fixed text) for the same numpy/Pillow/libjpeg versions.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from ..utils import atomic_write_json, cache_dir, get_logger, read_json

log = get_logger("data.synthetic")

__all__ = [
    "GENERATOR_VERSION", "LIGHTING", "SyntheticConfig", "QUICK_CONFIG", "render_scene",
    "scene_count_quantiles", "target_count", "generate_synthetic_dataset", "resolve_data_root",
    "read_manifest", "is_synthetic_root",
]

#: Bump whenever the rendered output changes: it is part of the cache key of :func:`resolve_data_root`.
GENERATOR_VERSION = "1.0"
MANIFEST_NAME = "synthetic.json"
COMPLETE_MARKER = ".complete"
LIGHTING = ("day", "overcast", "dusk", "night")
SPLITS = {"Train": 0, "Test": 1}

_GOLDEN = 0.6180339887498949
_PERSON_HEIGHT_M = 1.7
_HEAD_FRACTION = 0.13      # head height / body height (about 1 / 7.5 heads)
_BODY_LABEL = 2**30        # label-map value for any non-head pixel that occludes (bodies, objects)

# Colour palettes (RGB 0-255).
_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [170, 110, 75],
                  [141, 85, 54], [110, 66, 42], [80, 50, 35], [232, 190, 172], [210, 160, 120]], float)
_HAIR = np.array([[20, 17, 15], [35, 28, 24], [60, 40, 28], [90, 60, 40], [120, 85, 55], [170, 130, 80],
                  [210, 180, 120], [150, 150, 150], [200, 200, 200], [140, 70, 40], [25, 25, 30]], float)
_CLOTH_BASE = np.array([[25, 25, 30], [235, 235, 235], [40, 60, 110], [70, 90, 140], [120, 120, 125],
                        [150, 30, 35], [30, 90, 50], [200, 170, 120], [90, 60, 45], [230, 200, 40]], float)
_GROUND = {"asphalt": (92, 92, 96), "pavement": (168, 158, 140), "plaza": (186, 176, 160),
           "grass": (88, 128, 60), "sand": (196, 176, 136), "dirt": (132, 108, 80)}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the synthetic dataset (it is the cache key and goes in the manifest).

    ``n_train``/``n_test`` images of ``width`` x ``height`` pixels, generated from ``seed``. The other fields
    are the knobs of the scene model described in the module docstring.
    """

    n_train: int = 300
    n_test: int = 100
    seed: int = 0
    width: int = 512
    height: int = 384
    # counts: P(empty) and the log-normal law of the others
    zero_fraction: float = 0.06
    count_median: float = 45.0
    count_sigma: float = 1.15
    max_people: int = 700
    # geometry
    horizon_range: tuple[float, float] = (-0.8, 0.42)   # horizon row as a fraction of the height
    person_height_range: tuple[float, float] = (34.0, 230.0)  # height (px) of a person at the bottom row
    min_head_px: float = 1.5          # the farthest heads are at least this wide (pixels)
    min_spacing_m: float = 0.42       # minimum distance between two people on the ground (metres)
    min_visible_fraction: float = 0.35  # a head is annotated iff this fraction of it is visible
    # appearance
    lighting_weights: tuple[float, float, float, float] = (0.45, 0.2, 0.15, 0.2)  # day, overcast, dusk, night
    distractor_rate: float = 1.0      # multiplies the expected number of distractor objects
    blur_max: float = 1.3             # Gaussian blur radius ~ U(0.3, blur_max) pixels (>= 0.3)
    noise_max: float = 0.035          # max sensor noise std at full signal (fraction of 255)
    jpeg_quality: tuple[int, int] = (55, 95)
    supersample: int = 2              # render at this factor, then downsample (anti-aliasing)

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "max_people"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"SyntheticConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"SyntheticConfig: image size must be at least 32x32, got {self.width}x{self.height}")
        if not 0.0 <= self.zero_fraction < 1.0:
            raise ValueError(f"SyntheticConfig.zero_fraction must be in [0, 1), got {self.zero_fraction}")
        if self.count_median <= 0 or self.count_sigma < 0:
            raise ValueError("SyntheticConfig: count_median must be > 0 and count_sigma >= 0")
        if self.supersample not in (1, 2, 3, 4):
            raise ValueError(f"SyntheticConfig.supersample must be 1..4, got {self.supersample}")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"SyntheticConfig.jpeg_quality must satisfy 1 <= lo <= hi <= 100, got {self.jpeg_quality}")
        if len(self.lighting_weights) != len(LIGHTING) or min(self.lighting_weights) < 0 \
                or sum(self.lighting_weights) <= 0:
            raise ValueError(f"SyntheticConfig.lighting_weights: {len(LIGHTING)} non-negative weights for "
                             f"{LIGHTING}, got {self.lighting_weights}")
        h_lo, h_hi = self.horizon_range
        if not h_lo <= h_hi < 1.0:
            raise ValueError("SyntheticConfig.horizon_range: (low, high) fractions of the height with "
                             f"low <= high < 1 (the horizon must lie above the bottom row), got {self.horizon_range}")
        p_lo, p_hi = self.person_height_range
        if not 0 < p_lo <= p_hi:
            raise ValueError(f"SyntheticConfig.person_height_range must satisfy 0 < low <= high, got "
                             f"{self.person_height_range}")
        if self.min_head_px <= 0:
            raise ValueError(f"SyntheticConfig.min_head_px must be > 0, got {self.min_head_px}")
        if not 0.0 <= self.min_visible_fraction <= 1.0:
            raise ValueError(f"SyntheticConfig.min_visible_fraction must be in [0, 1], got {self.min_visible_fraction}")
        for name in ("min_spacing_m", "distractor_rate", "noise_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"SyntheticConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.blur_max < 0.3:
            raise ValueError("SyntheticConfig.blur_max must be >= 0.3: a blurred image gets a radius drawn "
                             f"from U(0.3, blur_max), got {self.blur_max}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SyntheticConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"SyntheticConfig: unknown fields {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


#: The small set used by ``quick=True`` notebooks and tests.
QUICK_CONFIG = SyntheticConfig(n_train=48, n_test=16)


# ----------------------------------------------------------------------------------------------- counts
def scene_count_quantiles(n: int, seed: int, split: int) -> np.ndarray:
    """Per-image quantiles ``u_i = frac(u_0 + i * 0.618...)`` (golden-ratio sequence), shape ``(n,)``.

    Any prefix of this sequence covers [0, 1) almost evenly, so small datasets still contain both empty
    and very dense scenes; ``u_0`` depends on the seed and the split.
    """
    offset = np.random.default_rng(np.random.SeedSequence([seed, split, 2**31 - 1])).random()
    return np.mod(offset + _GOLDEN * np.arange(n), 1.0)


def target_count(u: float, config: SyntheticConfig) -> int:
    """The number of people to place for quantile ``u`` of the long-tailed count law.

    ``0`` for ``u < zero_fraction``; otherwise ``round(median * exp(sigma * Phi^{-1}(v)))`` with
    ``v = (u - zero_fraction) / (1 - zero_fraction)``, clipped to ``[1, max_people]``.
    """
    from scipy.special import ndtri

    if u < config.zero_fraction or config.max_people == 0:
        return 0
    v = (u - config.zero_fraction) / (1.0 - config.zero_fraction)
    v = float(np.clip(v, 1e-6, 1 - 1e-6))
    count = config.count_median * math.exp(config.count_sigma * float(ndtri(v)))
    return int(np.clip(round(count), 1, config.max_people))


# ------------------------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scales: Sequence[int],
                  weights: Sequence[float] | None = None) -> np.ndarray:
    """Multi-octave value noise of ``shape`` (H, W) in about [-1, 1], from upsampled random grids."""
    h, w = shape
    out = np.zeros((h, w), np.float32)
    weights = weights or [1.0 / (i + 1) for i in range(len(scales))]
    for scale, weight in zip(scales, weights):
        gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
        grid = rng.random((gh, gw), dtype=np.float32) * 2 - 1
        img = Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)
        out += weight * np.asarray(img, np.float32)
    return out / max(sum(weights), 1e-6)


def _rgb(color: Sequence[float]) -> tuple[int, int, int]:
    r, g, b = color[0], color[1], color[2]
    return (int(min(max(r, 0.0), 255.0)), int(min(max(g, 0.0), 255.0)), int(min(max(b, 0.0), 255.0)))


def _jitter(rng: np.random.Generator, color: Sequence[float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(color, float) * rng.uniform(1 - amount, 1 + amount) +
                   rng.normal(0, 255 * amount * 0.3, 3), 0, 255)


def _clothing_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.55:
        return _jitter(rng, _CLOTH_BASE[rng.integers(len(_CLOTH_BASE))], 0.18)
    import colorsys

    hue, sat, val = rng.random(), rng.uniform(0.15, 0.75), rng.uniform(0.25, 0.9)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255


@dataclass
class _Camera:
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
        y = self.horizon + _PERSON_HEIGHT_M * self.focal / (self.k * Z)
        x = self.width / 2 + X * self.focal / Z
        return x, y

    def depth_of_row(self, y: float) -> float:
        return _PERSON_HEIGHT_M * self.focal / (self.k * (y - self.horizon))

    def px_per_metre(self, y_foot: float) -> float:
        return float(self.person_height(y_foot)) / _PERSON_HEIGHT_M


# ------------------------------------------------------------------------------------- scene layout
def _sample_ground(rng: np.random.Generator, n: int, z_min: float, z_max: float,
                   half_width_per_z: float) -> np.ndarray:
    """``n`` points uniform on the visible ground trapezoid: density of Z is proportional to Z."""
    u = rng.random(n)
    Z = np.sqrt(u * (z_max**2 - z_min**2) + z_min**2)
    X = (rng.random(n) * 2 - 1) * half_width_per_z * Z
    return np.stack([X, Z], axis=1)


def _place_people(rng: np.random.Generator, n_target: int, z_min: float, z_max: float,
                  half_width_per_z: float, spacing: float, blocked: list[tuple[float, float, float, float]]
                  ) -> np.ndarray:
    """Ground positions (M, 2) of up to ``n_target`` people: Gaussian clusters + a sparse uniform part."""
    from scipy.spatial import cKDTree

    if n_target == 0:
        return np.zeros((0, 2))
    cluster_share = rng.uniform(0.35, 0.95) if n_target > 8 else rng.uniform(0.0, 0.6)
    n_cluster = int(round(n_target * cluster_share))
    n_clusters = int(rng.integers(1, 5))
    candidates = [_sample_ground(rng, int(1.6 * (n_target - n_cluster)) + 4, z_min, z_max, half_width_per_z)]
    if n_cluster:
        centres = _sample_ground(rng, n_clusters, z_min, z_max, half_width_per_z * 0.8)
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


# ---------------------------------------------------------------------------------------- backgrounds
def _lighting_params(rng: np.random.Generator, lighting: str) -> dict[str, Any]:
    if lighting == "day":
        return {"gain": rng.uniform(0.92, 1.12), "tint": np.array([1.0, 1.0, rng.uniform(0.95, 1.05)]),
                "sky_top": (70, 130, 215), "sky_bottom": (175, 205, 235), "haze": rng.uniform(0.0, 0.25),
                "haze_colour": (215, 225, 235), "ambient": 1.0, "contrast": rng.uniform(0.95, 1.1)}
    if lighting == "overcast":
        return {"gain": rng.uniform(0.75, 0.95), "tint": np.array([1.0, 1.0, 1.03]),
                "sky_top": (160, 165, 172), "sky_bottom": (200, 202, 206), "haze": rng.uniform(0.15, 0.45),
                "haze_colour": (190, 192, 196), "ambient": 1.0, "contrast": rng.uniform(0.6, 0.85)}
    if lighting == "dusk":
        return {"gain": rng.uniform(0.45, 0.7), "tint": np.array([1.12, 0.93, 0.8]),
                "sky_top": (60, 60, 120), "sky_bottom": (235, 140, 80), "haze": rng.uniform(0.05, 0.3),
                "haze_colour": (200, 140, 110), "ambient": 1.0, "contrast": rng.uniform(0.8, 1.0)}
    if lighting == "night":
        return {"gain": rng.uniform(0.2, 0.4), "tint": np.array([0.85, 0.9, 1.15]),
                "sky_top": (5, 8, 22), "sky_bottom": (25, 30, 55), "haze": rng.uniform(0.0, 0.15),
                "haze_colour": (40, 40, 60), "ambient": 1.0, "contrast": rng.uniform(0.7, 1.0)}
    raise ValueError(f"lighting must be one of {LIGHTING}, got {lighting!r}")


def _background(rng: np.random.Generator, cam: _Camera, light: dict[str, Any], night: bool, scale: int = 1
                ) -> tuple[Image.Image, str]:
    """Sky (gradient + clouds) above the horizon and textured ground below, as an RGB image of the
    camera's size; computed at ``1 / scale`` of it (the textures are smooth) and upsampled."""
    H, W = int(cam.height) // scale, int(cam.width) // scale
    horizon = cam.horizon / scale
    ys = np.arange(H, dtype=np.float32)[:, None]
    ground_name = list(_GROUND)[rng.integers(len(_GROUND))]
    base = _jitter(rng, _GROUND[ground_name], 0.12).astype(np.float32)
    noise = _smooth_noise(rng, (H, W), scales=(32, 8, 2), weights=(1.0, 0.6, 0.4))
    # ground: texture amplitude falls with distance; colour lightens a little toward the horizon
    depth_t = np.clip((ys - horizon) / max(H - horizon, 1.0), 0.0, 1.0)
    amp = 0.10 + 0.14 * depth_t
    ground = base[None, None, :] * (1.0 + amp[..., None] * noise[..., None] * rng.uniform(0.6, 1.4))
    ground = ground * (0.92 + 0.08 * depth_t[..., None])
    img = np.broadcast_to(ground, (H, W, 3)).astype(np.float32).copy()
    if horizon > 0:
        rows = int(min(H, math.ceil(horizon)))
        t = (ys[:rows] / max(horizon, 1.0))[..., None]
        sky = (1 - t) * np.array(light["sky_top"], np.float32) + t * np.array(light["sky_bottom"], np.float32)
        sky = np.broadcast_to(sky, (rows, W, 3)).copy()
        if not night and rng.random() < 0.7:
            clouds = np.clip(_smooth_noise(rng, (max(rows, 2), W), scales=(48, 16, 4)) * 1.6 + rng.uniform(-0.3, 0.3), 0, 1)
            sky += clouds[:rows, :, None] * (np.array([245, 245, 250], np.float32) - sky) * 0.85
        elif night:
            stars = rng.random((rows, W)) < 0.0004
            sky[stars] = 200
        img[:rows] = sky
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    if scale > 1:
        # nearest is exact here: the canvas is box-downsampled by the same factor at the end
        out = out.resize((int(cam.width), int(cam.height)), Image.NEAREST)
    return out, ground_name


def _draw_buildings(rng: np.random.Generator, draw: ImageDraw.ImageDraw, cam: _Camera, night: bool) -> None:
    """A skyline of buildings with window grids standing on the horizon."""
    H, W = cam.height, cam.width
    if cam.horizon < 0.04 * H or rng.random() < 0.12:
        return
    scale = cam.px_per_metre(min(cam.horizon + 0.08 * H, H))  # px per metre at a row a bit below the horizon
    x = -rng.uniform(0, 60) * (W / 512)
    base_y = cam.horizon + rng.uniform(0.0, 0.05) * H
    while x < W:
        bw = rng.uniform(8, 30) * scale
        bh = rng.uniform(0.25, 1.2) * cam.horizon + rng.uniform(5, 40) * scale * 0.15
        colour = _jitter(rng, [(150, 140, 130), (120, 125, 135), (190, 180, 165), (95, 90, 90),
                               (170, 160, 150)][rng.integers(5)], 0.15)
        if night:
            colour = colour * 0.5
        top = base_y - bh
        draw.rectangle((x, top, x + bw, base_y), fill=_rgb(colour))
        draw.rectangle((x + bw * 0.85, top, x + bw, base_y), fill=_rgb(colour * 0.8))  # shaded side
        win = max(2.0, 1.4 * scale)
        if win * 3 < bw and win * 3 < bh:
            gap = win * rng.uniform(1.6, 2.4)
            lit_p = 0.45 if night else 0.0
            wcol = colour * 0.55 if not night else np.array([30, 30, 40])
            for wy in np.arange(top + gap * 0.6, base_y - win * 1.5, gap):
                for wx in np.arange(x + gap * 0.5, x + bw * 0.82 - win, gap):
                    fill = (255, 215, 130) if rng.random() < lit_p else _rgb(wcol)
                    draw.rectangle((wx, wy, wx + win, wy + win * 1.3), fill=fill)
        x += bw + rng.uniform(-0.1, 0.4) * bw


def _draw_paving(rng: np.random.Generator, draw: ImageDraw.ImageDraw, cam: _Camera, ground: str) -> None:
    """Perspective grid lines (paving joints, road markings) converging on the vanishing point."""
    if ground in ("grass", "sand", "dirt") or rng.random() < 0.3:
        return
    H, W = cam.height, cam.width
    y_top = max(cam.horizon + 2, 0)
    z_far = cam.depth_of_row(y_top + 1)
    z_near = cam.depth_of_row(H)
    step = rng.uniform(1.5, 4.0)
    shade = rng.uniform(0.7, 0.85)
    colour = _rgb(np.array(_GROUND[ground]) * shade)
    width = max(1, int(round(W / 512)))
    z = z_near
    while z < z_far:
        _, y = cam.to_image(np.array([0.0]), np.array([z]))
        draw.line((0, float(y[0]), W, float(y[0])), fill=colour, width=width)
        z += step
    vx, vy = W / 2, cam.horizon
    for X in np.arange(-60, 60, step):
        x, y = cam.to_image(np.array([X]), np.array([z_near * 0.5]))
        draw.line((vx, vy, float(x[0]), float(y[0])), fill=colour, width=width)


# ----------------------------------------------------------------------------------------- drawables
def _person_spec(rng: np.random.Generator) -> dict[str, Any]:
    hair_style = rng.choice(["short", "long", "bald", "back", "hat", "cap"], p=[0.34, 0.18, 0.05, 0.25, 0.08, 0.10])
    return {
        "skin": _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.06),
        "hair": _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.08),
        "shirt": _clothing_colour(rng),
        "trousers": _clothing_colour(rng) * 0.75,
        "hat": _clothing_colour(rng),
        "style": str(hair_style),
        "stripes": rng.random() < 0.15,
        "sleeves": rng.random() < 0.65,
        "bag": rng.random() < 0.12,
        "width": rng.uniform(0.85, 1.15),
        "height": rng.uniform(0.88, 1.1),
        "lean": rng.normal(0, 0.03),
        "arm_swing": rng.normal(0, 0.06),
    }


def _draw_person(draw: ImageDraw.ImageDraw, label: ImageDraw.ImageDraw, x: float, y: float, h: float,
                 spec: dict[str, Any], head_id: int, light_shade: float) -> tuple[float, float, float, float]:
    """Draw one person with feet at ``(x, y)`` and height ``h`` (supersampled px).

    Returns the head ellipse ``(cx, cy, rx, ry)``. The label map gets ``_BODY_LABEL`` for the body and
    ``head_id`` for the head (hair included), so later (nearer) drawings occlude it.
    """
    h = h * spec["height"]
    hd = h * _HEAD_FRACTION                       # head height
    sw = 0.25 * h * spec["width"]                 # shoulder width
    lean = spec["lean"] * h
    cx = x + lean
    head_cy = y - h + hd / 2
    head_rx, head_ry = 0.40 * hd, 0.5 * hd
    neck_y = head_cy + head_ry * 0.9
    shoulder_y = y - h + hd * 1.18
    hip_y = y - 0.47 * h
    hip_w = 0.17 * h * spec["width"]
    shirt, trousers, skin, hair = spec["shirt"], spec["trousers"], spec["skin"], spec["hair"]
    tiny = h < 14

    if not tiny:
        # legs
        leg_w = hip_w * 0.42
        for side in (-1, 1):
            lx = x + side * hip_w * 0.28
            draw.polygon([(cx + side * hip_w * 0.5 - leg_w / 2, hip_y), (cx + side * hip_w * 0.5 + leg_w / 2, hip_y),
                          (lx + leg_w * 0.35, y), (lx - leg_w * 0.35, y)], fill=_rgb(trousers * (0.9 if side > 0 else 1)))
    # torso (shoulders to hips), with a darker side for volume
    torso = [(cx - sw / 2, shoulder_y + hd * 0.08), (cx - sw / 2 + hd * 0.12, shoulder_y - hd * 0.05),
             (cx + sw / 2 - hd * 0.12, shoulder_y - hd * 0.05), (cx + sw / 2, shoulder_y + hd * 0.08),
             (cx + hip_w / 2 + 0.02 * h, hip_y + 0.04 * h), (cx - hip_w / 2 - 0.02 * h, hip_y + 0.04 * h)]
    draw.polygon(torso, fill=_rgb(shirt))
    label.polygon(torso, fill=_BODY_LABEL)
    if not tiny:
        label.rectangle((cx - hip_w / 2, hip_y, cx + hip_w / 2, y), fill=_BODY_LABEL)
        side = 1 if light_shade > 0 else -1
        shade = [(cx, shoulder_y - hd * 0.05), (cx + side * (sw / 2 - hd * 0.12), shoulder_y - hd * 0.05),
                 (cx + side * sw / 2, shoulder_y + hd * 0.08), (cx + side * (hip_w / 2 + 0.02 * h), hip_y + 0.04 * h),
                 (cx, hip_y + 0.04 * h)]
        draw.polygon(shade, fill=_rgb(shirt * 0.78))
        if spec["stripes"] and h > 60:
            for t in np.linspace(0.15, 0.85, 4):
                sy = shoulder_y + t * (hip_y - shoulder_y)
                draw.line((cx - sw * 0.45, sy, cx + sw * 0.45, sy), fill=_rgb(shirt * 0.55 + 90), width=max(1, int(h / 60)))
        # arms
        arm_w = sw * 0.2
        sleeve = shirt if spec["sleeves"] else skin
        for s in (-1, 1):
            top_x = cx + s * (sw / 2 - arm_w * 0.4)
            hand_x = top_x + s * arm_w * 0.3 + spec["arm_swing"] * h * s
            hand_y = y - 0.5 * h
            arm = [(top_x - arm_w / 2, shoulder_y), (top_x + arm_w / 2, shoulder_y),
                   (hand_x + arm_w * 0.4, hand_y), (hand_x - arm_w * 0.4, hand_y)]
            draw.polygon(arm, fill=_rgb(sleeve * (0.85 if s == side else 1.0)))
            label.polygon(arm, fill=_BODY_LABEL)
            draw.ellipse((hand_x - arm_w * 0.45, hand_y - arm_w * 0.3, hand_x + arm_w * 0.45, hand_y + arm_w * 0.6),
                         fill=_rgb(skin))
        if spec["bag"]:
            bx = cx - sw * 0.55
            draw.rectangle((bx - sw * 0.12, hip_y - 0.08 * h, bx + sw * 0.14, hip_y + 0.05 * h), fill=_rgb(spec["hat"] * 0.6))
        # neck
        draw.rectangle((cx - head_rx * 0.45, neck_y - head_ry * 0.3, cx + head_rx * 0.45, shoulder_y), fill=_rgb(skin * 0.9))
    # head
    box = (cx - head_rx, head_cy - head_ry, cx + head_rx, head_cy + head_ry)
    style = spec["style"]
    if style == "back":
        draw.ellipse(box, fill=_rgb(hair))
    else:
        draw.ellipse(box, fill=_rgb(skin))
        if style == "short":
            draw.chord(box, 180, 360, fill=_rgb(hair))
        elif style == "long":
            draw.chord(box, 160, 380, fill=_rgb(hair))
            draw.rectangle((cx - head_rx, head_cy, cx - head_rx * 0.6, head_cy + head_ry * 1.2), fill=_rgb(hair))
            draw.rectangle((cx + head_rx * 0.6, head_cy, cx + head_rx, head_cy + head_ry * 1.2), fill=_rgb(hair))
        elif style in ("hat", "cap"):
            draw.chord((box[0] - 0.05 * hd, box[1] - 0.05 * hd, box[2] + 0.05 * hd, box[3]), 180, 360, fill=_rgb(spec["hat"]))
            brim = 0.35 * hd if style == "hat" else 0.15 * hd
            by = head_cy - 0.05 * hd
            x0 = cx - head_rx - (brim if style == "hat" else 0)
            draw.rectangle((x0, by - 0.04 * hd, cx + head_rx + brim, by + 0.04 * hd), fill=_rgb(spec["hat"] * 0.8))
        if hd > 18:  # faces of near people: eyes and a darker jaw line
            er = max(1.0, hd * 0.045)
            for s in (-1, 1):
                ex, ey = cx + s * head_rx * 0.38, head_cy + head_ry * 0.05
                draw.ellipse((ex - er, ey - er, ex + er, ey + er), fill=(35, 25, 20))
            draw.chord((box[0], head_cy, box[2], box[3]), 20, 160, fill=_rgb(skin * 0.88))
    label.ellipse(box, fill=head_id)
    return cx, head_cy, head_rx, head_ry


def _draw_object(draw: ImageDraw.ImageDraw, label: ImageDraw.ImageDraw, kind: str, x: float, y: float,
                 ppm: float, spec: dict[str, Any], night: bool) -> list[tuple[float, float, float]]:
    """Draw a distractor with its base at ``(x, y)``, ``ppm`` pixels per metre.

    Returns light sources ``(x, y, radius)`` (lamps) for the night illumination.
    """
    lights: list[tuple[float, float, float]] = []
    col = spec["colour"]
    if kind == "pole":
        hgt, w = spec["height"] * ppm, max(1.0, 0.14 * ppm)
        shape = (x - w / 2, y - hgt, x + w / 2, y)
        draw.rectangle(shape, fill=_rgb(col))
        label.rectangle(shape, fill=_BODY_LABEL)
        r = 0.28 * ppm
        lamp = (x - r, y - hgt - r, x + r, y - hgt + r)  # a round, head-like lamp globe
        draw.ellipse(lamp, fill=(255, 240, 190) if night else _rgb(spec["lamp"]))
        label.ellipse(lamp, fill=_BODY_LABEL)
        lights.append((x, y - hgt, r))
    elif kind == "sign":
        hgt, w = spec["height"] * ppm, max(1.0, 0.08 * ppm)
        draw.rectangle((x - w / 2, y - hgt, x + w / 2, y), fill=(110, 110, 115))
        bw, bh = spec["board"][0] * ppm, spec["board"][1] * ppm
        board = (x - bw / 2, y - hgt - bh, x + bw / 2, y - hgt + bh * 0.2)
        draw.rectangle(board, fill=_rgb(col), outline=(240, 240, 240), width=max(1, int(ppm * 0.05)))
        if bw > 12:
            for t in (0.35, 0.65):
                ty = board[1] + t * (board[3] - board[1])
                draw.line((board[0] + bw * 0.15, ty, board[2] - bw * 0.15, ty), fill=(245, 245, 245), width=max(1, int(bh / 10)))
        label.rectangle(board, fill=_BODY_LABEL)
    elif kind == "tree":
        th, tw = spec["height"] * ppm, max(1.0, 0.3 * ppm)
        draw.rectangle((x - tw / 2, y - th, x + tw / 2, y), fill=(85, 60, 40))
        label.rectangle((x - tw / 2, y - th, x + tw / 2, y), fill=_BODY_LABEL)
        cr = spec["crown"] * ppm
        for (dx, dy, f), shade in zip(spec["blobs"], spec["shades"]):
            bx, by, br = x + dx * cr, y - th - cr * 0.6 + dy * cr, cr * f
            blob = (bx - br, by - br, bx + br, by + br)
            draw.ellipse(blob, fill=_rgb(col * shade))
            label.ellipse(blob, fill=_BODY_LABEL)
    elif kind == "car":
        L, Hc = spec["length"] * ppm, 1.45 * ppm
        body = (x - L / 2, y - Hc * 0.62, x + L / 2, y - Hc * 0.12)
        cabin = [(x - L * 0.3, y - Hc * 0.6), (x - L * 0.18, y - Hc), (x + L * 0.2, y - Hc), (x + L * 0.33, y - Hc * 0.6)]
        draw.polygon(cabin, fill=_rgb(col * 0.9))
        win = [(x - L * 0.26, y - Hc * 0.63), (x - L * 0.16, y - Hc * 0.93), (x + L * 0.18, y - Hc * 0.93), (x + L * 0.28, y - Hc * 0.63)]
        draw.polygon(win, fill=(60, 75, 90) if not night else (20, 25, 30))
        draw.rounded_rectangle(body, radius=max(1.0, Hc * 0.12), fill=_rgb(col))
        label.polygon(cabin, fill=_BODY_LABEL)
        label.rectangle(body, fill=_BODY_LABEL)
        wr = Hc * 0.2
        for wx in (x - L * 0.3, x + L * 0.3):
            wheel = (wx - wr, y - 2 * wr, wx + wr, y)
            draw.ellipse(wheel, fill=(25, 25, 25))
            label.ellipse(wheel, fill=_BODY_LABEL)
        if night:
            lights.append((x + L / 2, y - Hc * 0.4, Hc * 0.12))
    elif kind == "balloons":  # round, head-sized colourful objects on strings: hard negatives
        hgt = spec["height"] * ppm
        for (dx, dy), c in zip(spec["offsets"], spec["colours"]):
            bx, by, br = x + dx * ppm, y - hgt + dy * ppm, 0.14 * ppm
            draw.line((x, y - 0.9 * ppm, bx, by + br), fill=(220, 220, 220), width=1)
            draw.ellipse((bx - br, by - br * 1.15, bx + br, by + br * 1.15), fill=_rgb(c))
            label.ellipse((bx - br, by - br * 1.15, bx + br, by + br * 1.15), fill=_BODY_LABEL)
    elif kind == "bollard":
        hgt, w = 0.9 * ppm, max(1.0, 0.2 * ppm)
        draw.rectangle((x - w / 2, y - hgt, x + w / 2, y), fill=_rgb(col))
        draw.rectangle((x - w / 2, y - hgt * 0.8, x + w / 2, y - hgt * 0.7), fill=(230, 230, 230))
        label.rectangle((x - w / 2, y - hgt, x + w / 2, y), fill=_BODY_LABEL)
    return lights


def _object_spec(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"colour": _clothing_colour(rng)}
    if kind == "pole":
        spec.update(height=rng.uniform(3.5, 7.0), colour=_jitter(rng, (70, 72, 75), 0.2),
                    lamp=_jitter(rng, (210, 210, 200), 0.1))
    elif kind == "sign":
        spec.update(height=rng.uniform(1.8, 2.8), board=(rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.9)),
                    colour=[(30, 90, 170), (20, 120, 60), (200, 40, 40), (230, 190, 40)][rng.integers(4)])
        spec["colour"] = np.array(spec["colour"], float)
    elif kind == "tree":
        n = int(rng.integers(3, 7))
        spec.update(height=rng.uniform(1.5, 3.0), crown=rng.uniform(1.2, 2.6),
                    colour=_jitter(rng, (60, 110, 50), 0.2),
                    blobs=[(rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.4), rng.uniform(0.45, 0.8)) for _ in range(n)],
                    shades=list(rng.uniform(0.7, 1.15, n)))
    elif kind == "car":
        spec.update(length=rng.uniform(3.8, 4.8))
    elif kind == "balloons":
        n = int(rng.integers(2, 6))
        spec.update(height=rng.uniform(2.0, 2.8), offsets=[(rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.3)) for _ in range(n)],
                    colours=[_clothing_colour(rng) for _ in range(n)])
    elif kind == "bollard":
        spec.update(colour=_jitter(rng, (60, 60, 60), 0.3))
    return spec


# ------------------------------------------------------------------------------------------- render
def render_scene(rng: np.random.Generator, config: SyntheticConfig | None = None, *,
                 n_people: int | None = None, lighting: str | None = None,
                 return_label_map: bool = False) -> tuple[Image.Image, np.ndarray, dict[str, Any]]:
    """Render one synthetic crowd photograph.

    Args:
        rng: the only source of randomness (same generator state -> identical output).
        config: scene knobs and image size (default :class:`SyntheticConfig`).
        n_people: number of people to *place*; default: a draw from the long-tailed count law.
        lighting: one of :data:`LIGHTING`; default: drawn with ``config.lighting_weights``.
        return_label_map: also return ``info["label_map"]``, an ``(H*s, W*s)`` int32 array at the
            supersampled resolution ``s``: 0 = background, ``i + 1`` = head of drawn person ``i``,
            ``2**30`` = any other occluding pixel (bodies, objects).

    Returns:
        ``(image, points, info)``: an RGB ``PIL.Image`` of ``config.width`` x ``config.height`` (before
        JPEG compression, whose quality is ``info["jpeg_quality"]``); ``points`` float64 ``(N, 2)`` of
        ``(x, y)`` head centres of the visible heads, inside ``[0, W) x [0, H)``; ``info`` with the
        scene parameters (``lighting``, ``n_target``, ``n_drawn``, ``n_outside``, ``n_occluded``,
        ``horizon``, ``person_height_bottom``, ``head_sizes`` (N,) in pixels, ``visible_ids`` (N,) ...).
    """
    config = config or SyntheticConfig()
    ss = int(config.supersample)
    W, H = config.width * ss, config.height * ss
    if lighting is None:
        w = np.asarray(config.lighting_weights, float)
        lighting = LIGHTING[int(rng.choice(len(LIGHTING), p=w / w.sum()))]
    light = _lighting_params(rng, lighting)
    night = lighting == "night"
    if n_people is None:
        n_people = target_count(float(rng.random()), config)
    if n_people < 0:
        raise ValueError(f"render_scene: n_people must be >= 0, got {n_people}")

    # camera: horizon row and the height of a person standing on the bottom row
    horizon = rng.uniform(*config.horizon_range) * H
    lo, hi = config.person_height_range
    hi_n = float(np.clip(hi * 1.15 / math.sqrt(1.0 + n_people / 60.0), lo * 1.3, hi))
    h_bottom = math.exp(rng.uniform(math.log(lo), math.log(hi_n))) * ss
    # keep the camera well above head height (k <= 0.7, i.e. camera >= 2.4 m): farther heads then appear
    # higher in the image than nearer ones, as in real crowd photographs
    h_bottom = min(h_bottom, 0.7 * (H - horizon))
    cam = _Camera(width=W, height=H, horizon=horizon, k=h_bottom / (H - horizon), focal=float(W))
    # visible depth range: farthest row where a head is still min_head_px wide; nearest: feet below the frame
    h_min = config.min_head_px * ss / (_HEAD_FRACTION * 0.8)
    y_far = max(horizon + h_min / cam.k, 0.0)
    y_near = H + 0.55 * h_bottom
    z_min, z_max = cam.depth_of_row(y_near), cam.depth_of_row(y_far)
    half_width_per_z = (W / 2 + 0.05 * W) / cam.focal

    # distractors (placed first: vehicles block the ground they stand on)
    rate = config.distractor_rate
    kinds = (["pole"] * rng.poisson(1.2 * rate) + ["sign"] * rng.poisson(0.6 * rate) + ["tree"] * rng.poisson(0.9 * rate)
             + ["car"] * rng.poisson(0.6 * rate) + ["balloons"] * rng.poisson(0.25 * rate)
             + ["bollard"] * rng.poisson(1.0 * rate))
    objects: list[tuple[float, float, str, dict]] = []
    blocked: list[tuple[float, float, float, float]] = []
    if kinds:
        ground_pts = _sample_ground(rng, len(kinds), z_min, min(z_max, z_min + 0.6 * (z_max - z_min)), half_width_per_z)
        for kind, (X, Z) in zip(kinds, ground_pts):
            spec = _object_spec(rng, kind)
            objects.append((X, Z, kind, spec))
            if kind == "car":
                blocked.append((X - spec["length"] / 2 - 0.2, Z - 1.2, X + spec["length"] / 2 + 0.2, Z + 1.2))

    ground_xy = _place_people(rng, n_people, z_min, z_max, half_width_per_z, config.min_spacing_m, blocked)
    specs = [_person_spec(rng) for _ in range(len(ground_xy))]

    # background
    canvas, ground_name = _background(rng, cam, light, night, scale=ss)
    draw = ImageDraw.Draw(canvas)
    _draw_buildings(rng, draw, cam, night)
    _draw_paving(rng, draw, cam, ground_name)

    # soft shadows on the ground (applied to the background before anyone is drawn)
    sun_dx = rng.uniform(-0.6, 0.6)
    if len(ground_xy) and lighting in ("day", "dusk"):
        shadow = Image.new("L", (W, H), 255)  # multiplicative: 255 = no shadow
        sdraw = ImageDraw.Draw(shadow)
        fx, fy = cam.to_image(ground_xy[:, 0], ground_xy[:, 1])
        hs = cam.person_height(fy)
        for x, y, h in zip(fx, fy, hs):
            sdraw.ellipse((x - 0.12 * h + sun_dx * 0.3 * h, y - 0.035 * h, x + 0.12 * h + sun_dx * 0.5 * h, y + 0.035 * h), fill=167)
        shadow = shadow.filter(ImageFilter.BoxBlur(max(1, int(ss))))
        canvas = ImageChops.multiply(canvas, Image.merge("RGB", (shadow, shadow, shadow)))
        draw = ImageDraw.Draw(canvas)

    label_img = Image.new("I", (W, H), 0)
    label = ImageDraw.Draw(label_img)

    # painter's algorithm: everything sorted by foot row, far (small y) to near
    items: list[tuple[float, int, int]] = []  # (y_foot, kind 0 person / 1 object, index)
    if len(ground_xy):
        px, py = cam.to_image(ground_xy[:, 0], ground_xy[:, 1])
        for i, yv in enumerate(py):
            items.append((float(yv), 0, i))
    obj_xy = []
    for j, (X, Z, kind, spec) in enumerate(objects):
        ox, oy = cam.to_image(np.array([X]), np.array([Z]))
        obj_xy.append((float(ox[0]), float(oy[0])))
        items.append((float(oy[0]), 1, j))
    items.sort(key=lambda t: (t[0], t[1], t[2]))

    n = len(ground_xy)
    heads = np.zeros((n, 4))
    lights: list[tuple[float, float, float]] = []
    for y_foot, is_object, idx in items:
        if is_object:
            x, y = obj_xy[idx]
            lights += _draw_object(draw, label, objects[idx][2], x, y, cam.px_per_metre(y), objects[idx][3], night)
        else:
            h = float(cam.person_height(y_foot))
            heads[idx] = _draw_person(draw, label, float(px[idx]), y_foot, h, specs[idx], idx + 1, sun_dx)

    # visibility of each head from the final label map
    lab = np.asarray(label_img)
    visible_px = np.bincount(lab[(lab > 0) & (lab <= n)].ravel(), minlength=n + 1)[1:] if n else np.zeros(0)
    area = np.pi * np.maximum(heads[:, 2], 0.5) * np.maximum(heads[:, 3], 0.5) if n else np.zeros(0)
    # head centre in continuous coordinates: PIL fills pixel indices [x0, x1], i.e. the span [x0, x1 + 1)
    cx1 = (heads[:, 0] + 0.5) / ss
    cy1 = (heads[:, 1] + 0.5) / ss
    inside = (cx1 >= 0) & (cx1 < config.width) & (cy1 >= 0) & (cy1 < config.height)
    visible = inside & (visible_px >= config.min_visible_fraction * area)
    ids = np.flatnonzero(visible)
    points = np.stack([cx1[ids], cy1[ids]], axis=1).astype(np.float64) if len(ids) else np.zeros((0, 2))

    # photometry at the output resolution
    image = canvas.reduce(ss) if ss > 1 else canvas
    img = np.asarray(image, np.float32) / 255.0
    Hh, Ww = config.height, config.width
    yy = np.arange(Hh, dtype=np.float32)[:, None]   # (H, 1)
    xx = np.arange(Ww, dtype=np.float32)[None, :]   # (1, W)
    gain = (light["gain"] * light["tint"]).astype(np.float32)
    if night:  # street-light pools on the ground under each lamp: separable Gaussians
        illum = np.ones((Hh, Ww), np.float32)
        for lx, ly, lr in lights:
            sigma = max(20.0, 8 * lr / ss)
            pool_y = ly / ss + 3 * sigma
            gx = np.exp(-(xx - lx / ss) ** 2 / (2 * (1.5 * sigma) ** 2))
            gy = np.exp(-(yy - pool_y) ** 2 / (2 * sigma ** 2))
            illum += (0.6 / light["gain"]) * gy * gx
        img = img * illum[..., None] * gain
    else:
        img = img * gain
    # atmospheric haze, strongest at the horizon (one factor per row)
    hz = (light["haze"] * np.exp(-np.clip(yy - horizon / ss, 0, None) / (0.35 * Hh)))[..., None]
    img = img * (1 - hz) + hz * (np.array(light["haze_colour"], np.float32) / 255.0) * light["gain"]
    # contrast around the mean, then vignetting
    mean = float(img.mean())
    img = (img - mean) * light["contrast"] + mean
    r2 = ((xx - Ww / 2) / (Ww / 2)) ** 2 + ((yy - Hh / 2) / (Hh / 2)) ** 2
    img *= (1 - rng.uniform(0.05, 0.3) * r2 / 2)[..., None]
    if night:  # glowing lamp heads on top of the darkness
        for lx, ly, lr in lights:
            s2 = 2 * max(1.5, 2.5 * lr / ss) ** 2
            g = np.exp(-(yy - ly / ss) ** 2 / s2) * np.exp(-(xx - lx / ss) ** 2 / s2)
            img += 0.8 * g[..., None] * np.array([1.0, 0.9, 0.65], np.float32)
    # blur (optics / motion), then sensor noise (std grows with the signal and in low light)
    img8 = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")
    blur_kind = "none"
    u = rng.random()
    if u < 0.55:
        radius = rng.uniform(0.3, config.blur_max)
        img8 = img8.filter(ImageFilter.GaussianBlur(radius))
        blur_kind = f"gaussian:{radius:.2f}"
    elif u < 0.65:
        kernel = np.zeros((5, 5))
        kernel[2, :] = 1.0 / 5
        img8 = img8.filter(ImageFilter.Kernel((5, 5), kernel.ravel().tolist(), scale=1.0))
        blur_kind = "motion"
    img = np.asarray(img8, np.float32) / 255.0
    gain_boost = 1.0 / max(light["gain"], 0.25) ** 0.5
    noise_std = rng.uniform(0.2, 1.0) * config.noise_max * gain_boost
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = img + noise * noise_std * np.sqrt(np.clip(img, 0.02, 1.0))
    image = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")

    jpeg_quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    info: dict[str, Any] = {
        "lighting": lighting, "ground": ground_name, "n_target": int(n_people), "n_drawn": int(n),
        "n_outside": int((~inside).sum()), "n_occluded": int((inside & ~visible).sum()),
        "count": int(len(points)), "horizon": float(horizon / ss),
        "person_height_bottom": float(h_bottom / ss), "head_sizes": (2 * heads[ids, 3] / ss),
        "visible_ids": ids, "objects": [o[2] for o in objects], "blur": blur_kind,
        "noise_std": float(noise_std), "jpeg_quality": jpeg_quality,
    }
    if return_label_map:
        info["label_map"] = lab.copy()
        info["supersample"] = ss
    return image, points, info


# ----------------------------------------------------------------------------------------- writing
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by gigacount_lib.data.synthetic (deterministic header)"


def _mat_bytes(points: np.ndarray) -> bytes:
    """A MATLAB v5 file with ``annPoints`` (float64 (N, 2)); the 116-byte text header is made constant."""
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, {"annPoints": np.asarray(points, np.float64).reshape(-1, 2)})
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False, subsampling=2)
    return buf.getvalue()


def _render_item(args: tuple[SyntheticConfig, str, int, float]) -> tuple[bytes, bytes, int, dict[str, Any]]:
    config, split, index, u = args
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, SPLITS[split], index]))
    image, points, info = render_scene(rng, config, n_people=target_count(u, config))
    summary = {k: info[k] for k in ("lighting", "n_target", "n_drawn", "n_occluded", "n_outside", "jpeg_quality")}
    return _jpeg_bytes(image, info["jpeg_quality"]), _mat_bytes(points), len(points), summary


def is_synthetic_root(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a complete dataset written by :func:`generate_synthetic_dataset`."""
    path = Path(path)
    return (path / MANIFEST_NAME).is_file() and (path / COMPLETE_MARKER).is_file()


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The ``synthetic.json`` manifest of a synthetic dataset root."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no synthetic-dataset manifest here (write one with `gigacount synth`)")
    return read_json(path, "synthetic-dataset manifest")


def generate_synthetic_dataset(out_dir: str | os.PathLike, config: SyntheticConfig | None = None,
                               overwrite: bool = False, *, workers: int = 1) -> Path:
    """Write the synthetic dataset to ``out_dir`` in UCF-QNRF layout and return ``out_dir``.

    The dataset is rendered into a temporary sibling folder and renamed into place only when complete,
    so ``out_dir`` never holds half a dataset. An existing non-empty ``out_dir`` is refused unless
    ``overwrite=True``; even then only a previous synthetic dataset (one with ``synthetic.json``) is
    replaced, never a folder of other data. ``workers > 1`` renders in parallel processes (same bytes).
    """
    config = config or SyntheticConfig()
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: folder is not empty; pass overwrite=True (CLI: --overwrite) to "
                                  "replace a previous synthetic dataset, or choose another --out")
        if not (out / MANIFEST_NAME).is_file():
            raise FileExistsError(f"{out}: not empty and not a synthetic dataset (no {MANIFEST_NAME}); refusing "
                                  "to delete it even with overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    start = time.perf_counter()
    try:
        manifest: dict[str, Any] = {"name": "gigacount synthetic crowds", "version": GENERATOR_VERSION,
                                    "layout": "UCF-QNRF", "config": config.to_dict(), "splits": {}}
        for split, n in (("Train", config.n_train), ("Test", config.n_test)):
            (tmp / split).mkdir()
            quantiles = scene_count_quantiles(n, config.seed, SPLITS[split])
            jobs = [(config, split, i, float(quantiles[i])) for i in range(n)]
            if workers > 1 and n > 1:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(max_workers=workers) as pool:
                    results = list(pool.map(_render_item, jobs, chunksize=4))
            else:
                results = map(_render_item, jobs)
            images = []
            for i, (jpg, mat, count, summary) in enumerate(results):
                name = f"img_{i + 1:04d}"
                (tmp / split / f"{name}.jpg").write_bytes(jpg)
                (tmp / split / f"{name}_ann.mat").write_bytes(mat)
                images.append({"name": name, "count": count, **summary})
            counts = [im["count"] for im in images]
            manifest["splits"][split] = {
                "n_images": n, "total_count": int(sum(counts)),
                "count_min": int(min(counts)) if counts else 0, "count_max": int(max(counts)) if counts else 0,
                "images": images,
            }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        (tmp / COMPLETE_MARKER).write_text(GENERATOR_VERSION + "\n")
        _move_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    log.info("synthetic dataset: %d train + %d test images (%dx%d) written to %s in %.1f s",
             config.n_train, config.n_test, config.width, config.height, out, seconds)
    return out


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        if not overwrite:  # someone else finished first
            raise FileExistsError(f"{out}: appeared while generating; not replacing it")
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.replace(tmp, out)
        except OSError as exc:  # another process renamed its copy into place first
            if out.exists():
                raise FileExistsError(f"{out}: appeared while generating; not replacing it") from exc
            raise


def _cache_key(config: SyntheticConfig) -> str:
    text = json.dumps({"version": GENERATOR_VERSION, "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def resolve_data_root(data_root: str | os.PathLike | None = None, quick: bool = False, seed: int = 0) -> Path:
    """The dataset root a notebook or test should use.

    ``data_root`` given: it is returned as a ``Path`` after checking that it exists. ``None``: the
    embedded synthetic dataset (``quick=True``: 48 train / 16 test images; else 300 / 100), generated
    once and cached under ``cache_dir() / "synthetic" / <key>``, the key hashing the config and
    :data:`GENERATOR_VERSION`. A cached copy is used only if its completion marker exists.
    """
    if data_root is not None:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"data_root={str(data_root)!r} does not exist or is not a folder. Download the dataset from its "
                "official page (e.g. UCF-QNRF: https://www.crcv.ucf.edu/data/ucf-qnrf/) and unpack it there, "
                "or pass data_root=None to use the embedded synthetic dataset.")
        return root
    base = QUICK_CONFIG if quick else SyntheticConfig()
    config = dataclasses.replace(base, seed=int(seed))
    tag = "quick" if quick else "full"
    root = cache_dir() / "synthetic" / f"{tag}-seed{int(seed)}-{_cache_key(config)}"
    if is_synthetic_root(root):
        return root
    if root.exists():  # an incomplete leftover inside our own cache: safe to discard
        log.warning("discarding incomplete synthetic cache at %s", root)
        shutil.rmtree(root, ignore_errors=True)
    log.info("generating the embedded synthetic dataset (%s, seed %d) into %s", tag, seed, root)
    try:
        generate_synthetic_dataset(root, config)
    except FileExistsError:
        if not is_synthetic_root(root):  # another process is writing it or left something odd
            raise
    return root
