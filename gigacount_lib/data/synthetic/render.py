"""Rendering one synthetic crowd photograph, as a sequence of named steps.

:func:`render_scene` chooses the lighting and the camera, places distractors and people on the
ground, paints the background and the shadows, draws everything far to near (painter's algorithm)
while a label map records who owns each pixel, keeps the heads that are still visible, and finally
applies the photometry of :mod:`.photometry`. Every step draws from the one generator ``rng`` in a
fixed order, so the same generator state gives the same image, bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .backdrop import draw_buildings, draw_paving, sky_and_ground
from .camera import Camera, place_people, sample_ground
from .config import LIGHTING, SyntheticConfig, target_count
from .drawables import HEAD_FRACTION, draw_object, draw_person, object_spec, person_spec
from .photometry import (add_lamp_glow, add_sensor_noise, apply_blur, apply_contrast_and_vignetting, apply_haze,
                         apply_illumination, lighting_params)

__all__ = ["View", "choose_lighting", "set_up_camera", "place_distractors", "render_background",
           "render_shadows", "render_people", "visible_heads", "render_scene"]

#: A distractor: ground position ``(X, Z)`` in metres, kind (``"pole"``, ``"car"``, ...) and its spec.
Distractor = tuple[float, float, str, dict]


@dataclass
class View:
    """The camera and the part of the ground it sees (sizes in supersampled pixels, ground in metres).

    ``h_bottom`` is the height of a person standing on the bottom row; people are placed at depths
    ``z_min <= Z <= z_max`` and ``|X| <= half_width_per_z * Z``.
    """

    cam: Camera
    h_bottom: float
    z_min: float
    z_max: float
    half_width_per_z: float


def choose_lighting(rng: np.random.Generator, config: SyntheticConfig,
                    lighting: str | None = None) -> tuple[str, dict[str, Any]]:
    """The lighting (drawn with ``config.lighting_weights`` unless given) and its parameters."""
    if lighting is None:
        w = np.asarray(config.lighting_weights, float)
        lighting = LIGHTING[int(rng.choice(len(LIGHTING), p=w / w.sum()))]
    return lighting, lighting_params(rng, lighting)


def set_up_camera(rng: np.random.Generator, config: SyntheticConfig, n_people: int) -> View:
    """Horizon row and the height of a person on the bottom row, then the visible depth range.

    Denser scenes get smaller people (a camera farther away). The farthest row is where a head is
    still ``min_head_px`` wide; the nearest one has its feet below the frame.
    """
    ss = int(config.supersample)
    W, H = config.width * ss, config.height * ss
    horizon = rng.uniform(*config.horizon_range) * H
    lo, hi = config.person_height_range
    hi_n = float(np.clip(hi * 1.15 / math.sqrt(1.0 + n_people / 60.0), lo * 1.3, hi))
    h_bottom = math.exp(rng.uniform(math.log(lo), math.log(hi_n))) * ss
    # keep the camera well above head height (k <= 0.7, i.e. camera >= 2.4 m): farther heads then appear
    # higher in the image than nearer ones, as in real crowd photographs
    h_bottom = min(h_bottom, 0.7 * (H - horizon))
    cam = Camera(width=W, height=H, horizon=horizon, k=h_bottom / (H - horizon), focal=float(W))
    h_min = config.min_head_px * ss / (HEAD_FRACTION * 0.8)
    y_far = max(horizon + h_min / cam.k, 0.0)
    y_near = H + 0.55 * h_bottom
    z_min, z_max = cam.depth_of_row(y_near), cam.depth_of_row(y_far)
    half_width_per_z = (W / 2 + 0.05 * W) / cam.focal
    return View(cam, h_bottom, z_min, z_max, half_width_per_z)


def place_distractors(rng: np.random.Generator, config: SyntheticConfig, view: View
                      ) -> tuple[list[Distractor], list[tuple[float, float, float, float]]]:
    """Poles, signs, trees, cars, balloons and bollards on the nearer part of the ground.

    Returns the distractors and the ground rectangles ``(X0, Z0, X1, Z1)`` that cars occupy (they are
    placed before the people, who then avoid those rectangles).
    """
    rate = config.distractor_rate
    kinds = (["pole"] * rng.poisson(1.2 * rate) + ["sign"] * rng.poisson(0.6 * rate) + ["tree"] * rng.poisson(0.9 * rate)
             + ["car"] * rng.poisson(0.6 * rate) + ["balloons"] * rng.poisson(0.25 * rate)
             + ["bollard"] * rng.poisson(1.0 * rate))
    objects: list[Distractor] = []
    blocked: list[tuple[float, float, float, float]] = []
    if kinds:
        z_min, z_max = view.z_min, view.z_max
        ground_pts = sample_ground(rng, len(kinds), z_min, min(z_max, z_min + 0.6 * (z_max - z_min)),
                                   view.half_width_per_z)
        for kind, (X, Z) in zip(kinds, ground_pts):
            spec = object_spec(rng, kind)
            objects.append((X, Z, kind, spec))
            if kind == "car":
                blocked.append((X - spec["length"] / 2 - 0.2, Z - 1.2, X + spec["length"] / 2 + 0.2, Z + 1.2))
    return objects, blocked


def render_background(rng: np.random.Generator, cam: Camera, light: dict[str, Any], night: bool,
                      ss: int) -> tuple[Image.Image, str]:
    """Sky and textured ground, a skyline of buildings and perspective paving lines.

    Returns the canvas (RGB, supersampled) and the name of the ground material.
    """
    canvas, ground_name = sky_and_ground(rng, cam, light, night, scale=ss)
    draw = ImageDraw.Draw(canvas)
    draw_buildings(rng, draw, cam, night)
    draw_paving(rng, draw, cam, ground_name)
    return canvas, ground_name


def render_shadows(rng: np.random.Generator, canvas: Image.Image, cam: Camera, ground_xy: np.ndarray,
                   lighting: str, ss: int) -> tuple[Image.Image, float]:
    """Soft shadows on the ground under each person (day and dusk), before anyone is drawn.

    Returns the canvas and ``sun_dx``, the sideways direction of the sun (it also shades the people).
    """
    sun_dx = rng.uniform(-0.6, 0.6)
    if len(ground_xy) and lighting in ("day", "dusk"):
        shadow = Image.new("L", canvas.size, 255)  # multiplicative: 255 = no shadow
        sdraw = ImageDraw.Draw(shadow)
        fx, fy = cam.to_image(ground_xy[:, 0], ground_xy[:, 1])
        hs = cam.person_height(fy)
        for x, y, h in zip(fx, fy, hs):
            sdraw.ellipse((x - 0.12 * h + sun_dx * 0.3 * h, y - 0.035 * h, x + 0.12 * h + sun_dx * 0.5 * h, y + 0.035 * h), fill=167)
        shadow = shadow.filter(ImageFilter.BoxBlur(max(1, int(ss))))
        canvas = ImageChops.multiply(canvas, Image.merge("RGB", (shadow, shadow, shadow)))
    return canvas, sun_dx


def render_people(canvas: Image.Image, cam: Camera, ground_xy: np.ndarray, specs: list[dict[str, Any]],
                  objects: list[Distractor], sun_dx: float, night: bool
                  ) -> tuple[Image.Image, np.ndarray, list[tuple[float, float, float]]]:
    """Draw people and distractors sorted by foot row, far (small y) to near: the painter's algorithm.

    A label map (``"I"`` image of the canvas size) records who owns each pixel: ``i + 1`` for the
    head of person ``i``, :data:`~.drawables.BODY_LABEL` for bodies and objects, 0 for background;
    a nearer drawing overwrites (occludes) a farther one. Returns the label map, the head ellipses
    ``(N, 4)`` as ``(cx, cy, rx, ry)`` and the lamps ``(x, y, radius)`` for the night lighting.
    """
    draw = ImageDraw.Draw(canvas)
    label_img = Image.new("I", canvas.size, 0)
    label = ImageDraw.Draw(label_img)
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

    heads = np.zeros((len(ground_xy), 4))
    lights: list[tuple[float, float, float]] = []
    for y_foot, is_object, idx in items:
        if is_object:
            x, y = obj_xy[idx]
            lights += draw_object(draw, label, objects[idx][2], x, y, cam.px_per_metre(y), objects[idx][3], night)
        else:
            h = float(cam.person_height(y_foot))
            heads[idx] = draw_person(draw, label, float(px[idx]), y_foot, h, specs[idx], idx + 1, sun_dx)
    return label_img, heads, lights


def visible_heads(label_img: Image.Image, heads: np.ndarray, config: SyntheticConfig, ss: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The heads an annotator would click: centre inside the image and enough of the head visible.

    A head is kept iff its centre lies in ``[0, W) x [0, H)`` and at least ``min_visible_fraction``
    of its ellipse still carries its label in the final label map. Returns ``(points (M, 2) of
    (x, y) at the output resolution, ids (M,) of the kept people, inside (N,), visible (N,))``.
    """
    n = len(heads)
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
    return points, ids, inside, visible


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
    lighting, light = choose_lighting(rng, config, lighting)
    night = lighting == "night"
    if n_people is None:
        n_people = target_count(float(rng.random()), config)
    if n_people < 0:
        raise ValueError(f"render_scene: n_people must be >= 0, got {n_people}")

    view = set_up_camera(rng, config, n_people)
    objects, blocked = place_distractors(rng, config, view)
    ground_xy = place_people(rng, n_people, view.z_min, view.z_max, view.half_width_per_z,
                             config.min_spacing_m, blocked)
    specs = [person_spec(rng) for _ in range(len(ground_xy))]
    canvas, ground_name = render_background(rng, view.cam, light, night, ss)
    canvas, sun_dx = render_shadows(rng, canvas, view.cam, ground_xy, lighting, ss)
    label_img, heads, lights = render_people(canvas, view.cam, ground_xy, specs, objects, sun_dx, night)
    points, ids, inside, visible = visible_heads(label_img, heads, config, ss)

    # photometry at the output resolution
    image = canvas.reduce(ss) if ss > 1 else canvas
    img = apply_illumination(np.asarray(image, np.float32) / 255.0, light, lights, night, ss)
    img = apply_haze(img, light, view.cam.horizon, ss)
    img = apply_contrast_and_vignetting(rng, img, light)
    if night:
        img = add_lamp_glow(img, lights, ss)
    img8, blur_kind = apply_blur(rng, img, config)
    image, noise_std = add_sensor_noise(rng, img8, light, config)

    n = len(ground_xy)
    jpeg_quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    info: dict[str, Any] = {
        "lighting": lighting, "ground": ground_name, "n_target": int(n_people), "n_drawn": int(n),
        "n_outside": int((~inside).sum()), "n_occluded": int((inside & ~visible).sum()),
        "count": int(len(points)), "horizon": float(view.cam.horizon / ss),
        "person_height_bottom": float(view.h_bottom / ss), "head_sizes": (2 * heads[ids, 3] / ss),
        "visible_ids": ids, "objects": [o[2] for o in objects], "blur": blur_kind,
        "noise_std": float(noise_std), "jpeg_quality": jpeg_quality,
    }
    if return_label_map:
        info["label_map"] = np.asarray(label_img).copy()
        info["supersample"] = ss
    return image, points, info
