"""The knobs of the synthetic crowd dataset and the law of its counts.

:class:`SyntheticConfig` determines a dataset completely (it is the cache key and goes in the
manifest). Counts follow a long-tailed law: a fraction ``zero_fraction`` of empty scenes, the rest
log-normal with median ``count_median`` and log-std ``count_sigma`` (capped at ``max_people``).
Per-image quantiles come from a golden-ratio (low-discrepancy) sequence, so even a small set spans
empty to dense scenes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GENERATOR_VERSION", "LIGHTING", "SPLITS", "MAX_SIDE", "SyntheticConfig", "QUICK_CONFIG",
           "scene_count_quantiles", "target_count"]

#: Bump whenever the rendered output changes: it is part of the cache key of the embedded dataset.
GENERATOR_VERSION = "1.0"
LIGHTING = ("day", "overcast", "dusk", "night")
SPLITS = {"Train": 0, "Test": 1}

_GOLDEN = 0.6180339887498949
#: Largest image side (pixels): the scene is rendered at ``supersample`` times this size in memory.
MAX_SIDE = 4096


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the synthetic dataset (it is the cache key and goes in the manifest).

    ``n_train``/``n_test`` images of ``width`` x ``height`` pixels, generated from ``seed``. The other fields
    are the knobs of the scene model described in :mod:`gigacount_lib.data.synthetic`.
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
        for name, low, high in (("n_train", 0, None), ("n_test", 0, None), ("max_people", 0, None),
                                ("seed", 0, None), ("width", 32, MAX_SIDE), ("height", 32, MAX_SIDE),
                                ("supersample", 1, 4)):
            value = getattr(self, name)
            allowed = f">= {low}" if high is None else f"between {low} and {high}"
            if name in ("width", "height"):
                allowed += " (image size in pixels)"
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SyntheticConfig.{name} must be an integer {allowed}, got {value!r}")
            if value < low or (high is not None and value > high):
                raise ValueError(f"SyntheticConfig.{name} must be {allowed}, got {value}")
            object.__setattr__(self, name, int(value))  # numpy integers -> int (JSON, cache key)
        if self.n_train + self.n_test < 1:
            raise ValueError("SyntheticConfig: n_train + n_test must be >= 1 (an empty dataset cannot be read), "
                             f"got {self.n_train} + {self.n_test}")
        if not 0.0 <= self.zero_fraction < 1.0:
            raise ValueError(f"SyntheticConfig.zero_fraction must be in [0, 1), got {self.zero_fraction}")
        if self.count_median <= 0 or self.count_sigma < 0:
            raise ValueError("SyntheticConfig: count_median must be > 0 and count_sigma >= 0")
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

