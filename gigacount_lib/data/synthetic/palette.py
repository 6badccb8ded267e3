"""Colours of the synthetic scenes: skin, hair, clothing and ground palettes and random variations."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["SKIN", "HAIR", "CLOTH_BASE", "GROUND_COLOURS", "rgb", "jitter", "clothing_colour"]

# Colour palettes (RGB 0-255).
SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [170, 110, 75],
                 [141, 85, 54], [110, 66, 42], [80, 50, 35], [232, 190, 172], [210, 160, 120]], float)
HAIR = np.array([[20, 17, 15], [35, 28, 24], [60, 40, 28], [90, 60, 40], [120, 85, 55], [170, 130, 80],
                 [210, 180, 120], [150, 150, 150], [200, 200, 200], [140, 70, 40], [25, 25, 30]], float)
CLOTH_BASE = np.array([[25, 25, 30], [235, 235, 235], [40, 60, 110], [70, 90, 140], [120, 120, 125],
                       [150, 30, 35], [30, 90, 50], [200, 170, 120], [90, 60, 45], [230, 200, 40]], float)
GROUND_COLOURS = {"asphalt": (92, 92, 96), "pavement": (168, 158, 140), "plaza": (186, 176, 160),
                  "grass": (88, 128, 60), "sand": (196, 176, 136), "dirt": (132, 108, 80)}


def rgb(color: Sequence[float]) -> tuple[int, int, int]:
    """A PIL fill colour: the first three values clipped to [0, 255] and truncated to ints."""
    r, g, b = color[0], color[1], color[2]
    return (int(min(max(r, 0.0), 255.0)), int(min(max(g, 0.0), 255.0)), int(min(max(b, 0.0), 255.0)))


def jitter(rng: np.random.Generator, color: Sequence[float], amount: float) -> np.ndarray:
    """``color`` with a random gain of +-``amount`` and a little per-channel noise."""
    return np.clip(np.asarray(color, float) * rng.uniform(1 - amount, 1 + amount) +
                   rng.normal(0, 255 * amount * 0.3, 3), 0, 255)


def clothing_colour(rng: np.random.Generator) -> np.ndarray:
    """A common clothing colour (55 %) or any hue of moderate saturation."""
    if rng.random() < 0.55:
        return jitter(rng, CLOTH_BASE[rng.integers(len(CLOTH_BASE))], 0.18)
    import colorsys

    hue, sat, val = rng.random(), rng.uniform(0.15, 0.75), rng.uniform(0.25, 0.9)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255

