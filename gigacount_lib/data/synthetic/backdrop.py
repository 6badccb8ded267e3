"""The background of a synthetic scene: sky with clouds (or stars), textured ground, a skyline of
buildings with windows and perspective paving lines."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .camera import Camera
from .palette import GROUND_COLOURS, jitter, rgb

__all__ = ["smooth_noise", "sky_and_ground", "draw_buildings", "draw_paving"]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scales: Sequence[int],
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



def sky_and_ground(rng: np.random.Generator, cam: Camera, light: dict[str, Any], night: bool, scale: int = 1
                ) -> tuple[Image.Image, str]:
    """Sky (gradient + clouds) above the horizon and textured ground below, as an RGB image of the
    camera's size; computed at ``1 / scale`` of it (the textures are smooth) and upsampled."""
    H, W = int(cam.height) // scale, int(cam.width) // scale
    horizon = cam.horizon / scale
    ys = np.arange(H, dtype=np.float32)[:, None]
    ground_name = list(GROUND_COLOURS)[rng.integers(len(GROUND_COLOURS))]
    base = jitter(rng, GROUND_COLOURS[ground_name], 0.12).astype(np.float32)
    noise = smooth_noise(rng, (H, W), scales=(32, 8, 2), weights=(1.0, 0.6, 0.4))
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
            clouds = np.clip(smooth_noise(rng, (max(rows, 2), W), scales=(48, 16, 4)) * 1.6 + rng.uniform(-0.3, 0.3), 0, 1)
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


def draw_buildings(rng: np.random.Generator, draw: ImageDraw.ImageDraw, cam: Camera, night: bool) -> None:
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
        colour = jitter(rng, [(150, 140, 130), (120, 125, 135), (190, 180, 165), (95, 90, 90),
                               (170, 160, 150)][rng.integers(5)], 0.15)
        if night:
            colour = colour * 0.5
        top = base_y - bh
        draw.rectangle((x, top, x + bw, base_y), fill=rgb(colour))
        draw.rectangle((x + bw * 0.85, top, x + bw, base_y), fill=rgb(colour * 0.8))  # shaded side
        win = max(2.0, 1.4 * scale)
        if win * 3 < bw and win * 3 < bh:
            gap = win * rng.uniform(1.6, 2.4)
            lit_p = 0.45 if night else 0.0
            wcol = colour * 0.55 if not night else np.array([30, 30, 40])
            for wy in np.arange(top + gap * 0.6, base_y - win * 1.5, gap):
                for wx in np.arange(x + gap * 0.5, x + bw * 0.82 - win, gap):
                    fill = (255, 215, 130) if rng.random() < lit_p else rgb(wcol)
                    draw.rectangle((wx, wy, wx + win, wy + win * 1.3), fill=fill)
        x += bw + rng.uniform(-0.1, 0.4) * bw


def draw_paving(rng: np.random.Generator, draw: ImageDraw.ImageDraw, cam: Camera, ground: str) -> None:
    """Perspective grid lines (paving joints, road markings) converging on the vanishing point."""
    if ground in ("grass", "sand", "dirt") or rng.random() < 0.3:
        return
    H, W = cam.height, cam.width
    y_top = max(cam.horizon + 2, 0)
    z_far = cam.depth_of_row(y_top + 1)
    z_near = cam.depth_of_row(H)
    step = rng.uniform(1.5, 4.0)
    shade = rng.uniform(0.7, 0.85)
    colour = rgb(np.array(GROUND_COLOURS[ground]) * shade)
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

