"""Photometry of a synthetic scene: the lighting of the day and what the camera does to the light.

Day, overcast, dusk and night set a global gain, a colour tint, the sky colours, the haze and the
contrast; at night street lamps light pools on the ground and glow. Then come haze that grows toward
the horizon, vignetting, Gaussian or motion blur and signal-dependent sensor noise. Each step takes
and returns a float ``(H, W, 3)`` image in about ``[0, 1]`` at the output resolution, and draws from
``rng`` in a fixed order (the rendering is deterministic for a generator state).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from .config import LIGHTING, SyntheticConfig

__all__ = ["lighting_params", "apply_illumination", "apply_haze", "apply_contrast_and_vignetting",
           "add_lamp_glow", "apply_blur", "add_sensor_noise"]


def lighting_params(rng: np.random.Generator, lighting: str) -> dict[str, Any]:
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



def _grid(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates ``(H, 1)`` and ``(1, W)`` (float32) of an ``(H, W, 3)`` image."""
    height, width = img.shape[:2]
    return np.arange(height, dtype=np.float32)[:, None], np.arange(width, dtype=np.float32)[None, :]


def apply_illumination(img: np.ndarray, light: dict[str, Any], lights: list[tuple[float, float, float]],
                       night: bool, ss: int) -> np.ndarray:
    """Global gain and tint; at night also a pool of light on the ground under each lamp.

    ``lights`` are the lamps ``(x, y, radius)`` in supersampled pixels (factor ``ss``); each pool is a
    separable Gaussian a few radii below its lamp.
    """
    yy, xx = _grid(img)
    gain = (light["gain"] * light["tint"]).astype(np.float32)
    if night:
        illum = np.ones(img.shape[:2], np.float32)
        for lx, ly, lr in lights:
            sigma = max(20.0, 8 * lr / ss)
            pool_y = ly / ss + 3 * sigma
            gx = np.exp(-(xx - lx / ss) ** 2 / (2 * (1.5 * sigma) ** 2))
            gy = np.exp(-(yy - pool_y) ** 2 / (2 * sigma ** 2))
            illum += (0.6 / light["gain"]) * gy * gx
        return img * illum[..., None] * gain
    return img * gain


def apply_haze(img: np.ndarray, light: dict[str, Any], horizon: float, ss: int) -> np.ndarray:
    """Atmospheric haze, strongest at the horizon (row ``horizon / ss``), one factor per row."""
    yy, _ = _grid(img)
    hz = (light["haze"] * np.exp(-np.clip(yy - horizon / ss, 0, None) / (0.35 * img.shape[0])))[..., None]
    return img * (1 - hz) + hz * (np.array(light["haze_colour"], np.float32) / 255.0) * light["gain"]


def apply_contrast_and_vignetting(rng: np.random.Generator, img: np.ndarray, light: dict[str, Any]) -> np.ndarray:
    """Contrast around the mean, then a radial darkening of random strength toward the corners."""
    yy, xx = _grid(img)
    height, width = img.shape[:2]
    mean = float(img.mean())
    img = (img - mean) * light["contrast"] + mean
    r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
    img *= (1 - rng.uniform(0.05, 0.3) * r2 / 2)[..., None]
    return img


def add_lamp_glow(img: np.ndarray, lights: list[tuple[float, float, float]], ss: int) -> np.ndarray:
    """Glowing lamp heads on top of the darkness (night scenes); modifies ``img`` in place."""
    yy, xx = _grid(img)
    for lx, ly, lr in lights:
        s2 = 2 * max(1.5, 2.5 * lr / ss) ** 2
        g = np.exp(-(yy - ly / ss) ** 2 / s2) * np.exp(-(xx - lx / ss) ** 2 / s2)
        img += 0.8 * g[..., None] * np.array([1.0, 0.9, 0.65], np.float32)
    return img


def apply_blur(rng: np.random.Generator, img: np.ndarray, config: SyntheticConfig) -> tuple[Image.Image, str]:
    """Quantise to 8 bits, then blur like optics (Gaussian, 55 %) or motion (10 %) or not at all.

    Returns the 8-bit image and the kind of blur (``"none"``, ``"gaussian:<radius>"``, ``"motion"``).
    """
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
    return img8, blur_kind


def add_sensor_noise(rng: np.random.Generator, img8: Image.Image, light: dict[str, Any],
                     config: SyntheticConfig) -> tuple[Image.Image, float]:
    """Sensor noise whose std grows with the signal and in low light; returns the image and the std."""
    img = np.asarray(img8, np.float32) / 255.0
    gain_boost = 1.0 / max(light["gain"], 0.25) ** 0.5
    noise_std = rng.uniform(0.2, 1.0) * config.noise_max * gain_boost
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = img + noise * noise_std * np.sqrt(np.clip(img, 0.02, 1.0))
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB"), float(noise_std)
