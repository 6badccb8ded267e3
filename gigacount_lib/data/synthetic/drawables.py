"""What stands on the ground of a synthetic scene: people and distractor objects.

People are head-and-shoulders/torso figures (legs, shaded torso, arms, neck, head, hair or hat) with
varied skin, hair and clothing. Distractors are poles with round lamps, signs, trees, cars, bollards
and balloons (round, head-like negatives). Each drawing also paints a label map, so that nearer
figures occlude farther ones in it: head pixels carry their person's id, all else ``BODY_LABEL``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import ImageDraw

from .palette import HAIR, SKIN, clothing_colour, jitter, rgb

__all__ = ["HEAD_FRACTION", "BODY_LABEL", "person_spec", "draw_person", "draw_head", "object_spec", "draw_object"]

HEAD_FRACTION = 0.13      # head height / body height (about 1 / 7.5 heads)
BODY_LABEL = 2**30        # label-map value for any non-head pixel that occludes (bodies, objects)


def person_spec(rng: np.random.Generator) -> dict[str, Any]:
    hair_style = rng.choice(["short", "long", "bald", "back", "hat", "cap"], p=[0.34, 0.18, 0.05, 0.25, 0.08, 0.10])
    return {
        "skin": jitter(rng, SKIN[rng.integers(len(SKIN))], 0.06),
        "hair": jitter(rng, HAIR[rng.integers(len(HAIR))], 0.08),
        "shirt": clothing_colour(rng),
        "trousers": clothing_colour(rng) * 0.75,
        "hat": clothing_colour(rng),
        "style": str(hair_style),
        "stripes": rng.random() < 0.15,
        "sleeves": rng.random() < 0.65,
        "bag": rng.random() < 0.12,
        "width": rng.uniform(0.85, 1.15),
        "height": rng.uniform(0.88, 1.1),
        "lean": rng.normal(0, 0.03),
        "arm_swing": rng.normal(0, 0.06),
    }


def draw_person(draw: ImageDraw.ImageDraw, label: ImageDraw.ImageDraw, x: float, y: float, h: float,
                 spec: dict[str, Any], head_id: int, light_shade: float) -> tuple[float, float, float, float]:
    """Draw one person with feet at ``(x, y)`` and height ``h`` (supersampled px).

    Returns the head ellipse ``(cx, cy, rx, ry)``. The label map gets ``BODY_LABEL`` for the body and
    ``head_id`` for the head (hair included), so later (nearer) drawings occlude it.
    """
    h = h * spec["height"]
    hd = h * HEAD_FRACTION                       # head height
    sw = 0.25 * h * spec["width"]                 # shoulder width
    lean = spec["lean"] * h
    cx = x + lean
    head_cy = y - h + hd / 2
    head_rx, head_ry = 0.40 * hd, 0.5 * hd
    neck_y = head_cy + head_ry * 0.9
    shoulder_y = y - h + hd * 1.18
    hip_y = y - 0.47 * h
    hip_w = 0.17 * h * spec["width"]
    shirt, trousers, skin = spec["shirt"], spec["trousers"], spec["skin"]
    tiny = h < 14

    if not tiny:
        # legs
        leg_w = hip_w * 0.42
        for side in (-1, 1):
            lx = x + side * hip_w * 0.28
            draw.polygon([(cx + side * hip_w * 0.5 - leg_w / 2, hip_y), (cx + side * hip_w * 0.5 + leg_w / 2, hip_y),
                          (lx + leg_w * 0.35, y), (lx - leg_w * 0.35, y)], fill=rgb(trousers * (0.9 if side > 0 else 1)))
    # torso (shoulders to hips), with a darker side for volume
    torso = [(cx - sw / 2, shoulder_y + hd * 0.08), (cx - sw / 2 + hd * 0.12, shoulder_y - hd * 0.05),
             (cx + sw / 2 - hd * 0.12, shoulder_y - hd * 0.05), (cx + sw / 2, shoulder_y + hd * 0.08),
             (cx + hip_w / 2 + 0.02 * h, hip_y + 0.04 * h), (cx - hip_w / 2 - 0.02 * h, hip_y + 0.04 * h)]
    draw.polygon(torso, fill=rgb(shirt))
    label.polygon(torso, fill=BODY_LABEL)
    if not tiny:
        label.rectangle((cx - hip_w / 2, hip_y, cx + hip_w / 2, y), fill=BODY_LABEL)
        side = 1 if light_shade > 0 else -1
        shade = [(cx, shoulder_y - hd * 0.05), (cx + side * (sw / 2 - hd * 0.12), shoulder_y - hd * 0.05),
                 (cx + side * sw / 2, shoulder_y + hd * 0.08), (cx + side * (hip_w / 2 + 0.02 * h), hip_y + 0.04 * h),
                 (cx, hip_y + 0.04 * h)]
        draw.polygon(shade, fill=rgb(shirt * 0.78))
        if spec["stripes"] and h > 60:
            for t in np.linspace(0.15, 0.85, 4):
                sy = shoulder_y + t * (hip_y - shoulder_y)
                draw.line((cx - sw * 0.45, sy, cx + sw * 0.45, sy), fill=rgb(shirt * 0.55 + 90), width=max(1, int(h / 60)))
        # arms
        arm_w = sw * 0.2
        sleeve = shirt if spec["sleeves"] else skin
        for s in (-1, 1):
            top_x = cx + s * (sw / 2 - arm_w * 0.4)
            hand_x = top_x + s * arm_w * 0.3 + spec["arm_swing"] * h * s
            hand_y = y - 0.5 * h
            arm = [(top_x - arm_w / 2, shoulder_y), (top_x + arm_w / 2, shoulder_y),
                   (hand_x + arm_w * 0.4, hand_y), (hand_x - arm_w * 0.4, hand_y)]
            draw.polygon(arm, fill=rgb(sleeve * (0.85 if s == side else 1.0)))
            label.polygon(arm, fill=BODY_LABEL)
            draw.ellipse((hand_x - arm_w * 0.45, hand_y - arm_w * 0.3, hand_x + arm_w * 0.45, hand_y + arm_w * 0.6),
                         fill=rgb(skin))
        if spec["bag"]:
            bx = cx - sw * 0.55
            draw.rectangle((bx - sw * 0.12, hip_y - 0.08 * h, bx + sw * 0.14, hip_y + 0.05 * h), fill=rgb(spec["hat"] * 0.6))
        # neck
        draw.rectangle((cx - head_rx * 0.45, neck_y - head_ry * 0.3, cx + head_rx * 0.45, shoulder_y), fill=rgb(skin * 0.9))
    draw_head(draw, label, cx, head_cy, head_rx, head_ry, hd, spec, head_id)
    return cx, head_cy, head_rx, head_ry


def draw_head(draw: ImageDraw.ImageDraw, label: ImageDraw.ImageDraw, cx: float, head_cy: float, head_rx: float,
              head_ry: float, hd: float, spec: dict[str, Any], head_id: int) -> None:
    """Draw the head ellipse centred at ``(cx, head_cy)`` with its hair style (short, long, bald, seen
    from the back, hat, cap) and, on near people (``hd`` > 18 px tall), eyes and a jaw line; the label
    map gets ``head_id`` over the ellipse."""
    skin, hair = spec["skin"], spec["hair"]
    box = (cx - head_rx, head_cy - head_ry, cx + head_rx, head_cy + head_ry)
    style = spec["style"]
    if style == "back":
        draw.ellipse(box, fill=rgb(hair))
    else:
        draw.ellipse(box, fill=rgb(skin))
        if style == "short":
            draw.chord(box, 180, 360, fill=rgb(hair))
        elif style == "long":
            draw.chord(box, 160, 380, fill=rgb(hair))
            draw.rectangle((cx - head_rx, head_cy, cx - head_rx * 0.6, head_cy + head_ry * 1.2), fill=rgb(hair))
            draw.rectangle((cx + head_rx * 0.6, head_cy, cx + head_rx, head_cy + head_ry * 1.2), fill=rgb(hair))
        elif style in ("hat", "cap"):
            draw.chord((box[0] - 0.05 * hd, box[1] - 0.05 * hd, box[2] + 0.05 * hd, box[3]), 180, 360, fill=rgb(spec["hat"]))
            brim = 0.35 * hd if style == "hat" else 0.15 * hd
            by = head_cy - 0.05 * hd
            x0 = cx - head_rx - (brim if style == "hat" else 0)
            draw.rectangle((x0, by - 0.04 * hd, cx + head_rx + brim, by + 0.04 * hd), fill=rgb(spec["hat"] * 0.8))
        if hd > 18:  # faces of near people: eyes and a darker jaw line
            er = max(1.0, hd * 0.045)
            for s in (-1, 1):
                ex, ey = cx + s * head_rx * 0.38, head_cy + head_ry * 0.05
                draw.ellipse((ex - er, ey - er, ex + er, ey + er), fill=(35, 25, 20))
            draw.chord((box[0], head_cy, box[2], box[3]), 20, 160, fill=rgb(skin * 0.88))
    label.ellipse(box, fill=head_id)


def draw_object(draw: ImageDraw.ImageDraw, label: ImageDraw.ImageDraw, kind: str, x: float, y: float,
                 ppm: float, spec: dict[str, Any], night: bool) -> list[tuple[float, float, float]]:
    """Draw a distractor with its base at ``(x, y)``, ``ppm`` pixels per metre.

    Returns light sources ``(x, y, radius)`` (lamps) for the night illumination.
    """
    lights: list[tuple[float, float, float]] = []
    col = spec["colour"]
    if kind == "pole":
        hgt, w = spec["height"] * ppm, max(1.0, 0.14 * ppm)
        shape = (x - w / 2, y - hgt, x + w / 2, y)
        draw.rectangle(shape, fill=rgb(col))
        label.rectangle(shape, fill=BODY_LABEL)
        r = 0.28 * ppm
        lamp = (x - r, y - hgt - r, x + r, y - hgt + r)  # a round, head-like lamp globe
        draw.ellipse(lamp, fill=(255, 240, 190) if night else rgb(spec["lamp"]))
        label.ellipse(lamp, fill=BODY_LABEL)
        lights.append((x, y - hgt, r))
    elif kind == "sign":
        hgt, w = spec["height"] * ppm, max(1.0, 0.08 * ppm)
        draw.rectangle((x - w / 2, y - hgt, x + w / 2, y), fill=(110, 110, 115))
        bw, bh = spec["board"][0] * ppm, spec["board"][1] * ppm
        board = (x - bw / 2, y - hgt - bh, x + bw / 2, y - hgt + bh * 0.2)
        draw.rectangle(board, fill=rgb(col), outline=(240, 240, 240), width=max(1, int(ppm * 0.05)))
        if bw > 12:
            for t in (0.35, 0.65):
                ty = board[1] + t * (board[3] - board[1])
                draw.line((board[0] + bw * 0.15, ty, board[2] - bw * 0.15, ty), fill=(245, 245, 245), width=max(1, int(bh / 10)))
        label.rectangle(board, fill=BODY_LABEL)
    elif kind == "tree":
        th, tw = spec["height"] * ppm, max(1.0, 0.3 * ppm)
        draw.rectangle((x - tw / 2, y - th, x + tw / 2, y), fill=(85, 60, 40))
        label.rectangle((x - tw / 2, y - th, x + tw / 2, y), fill=BODY_LABEL)
        cr = spec["crown"] * ppm
        for (dx, dy, f), shade in zip(spec["blobs"], spec["shades"]):
            bx, by, br = x + dx * cr, y - th - cr * 0.6 + dy * cr, cr * f
            blob = (bx - br, by - br, bx + br, by + br)
            draw.ellipse(blob, fill=rgb(col * shade))
            label.ellipse(blob, fill=BODY_LABEL)
    elif kind == "car":
        L, Hc = spec["length"] * ppm, 1.45 * ppm
        body = (x - L / 2, y - Hc * 0.62, x + L / 2, y - Hc * 0.12)
        cabin = [(x - L * 0.3, y - Hc * 0.6), (x - L * 0.18, y - Hc), (x + L * 0.2, y - Hc), (x + L * 0.33, y - Hc * 0.6)]
        draw.polygon(cabin, fill=rgb(col * 0.9))
        win = [(x - L * 0.26, y - Hc * 0.63), (x - L * 0.16, y - Hc * 0.93), (x + L * 0.18, y - Hc * 0.93), (x + L * 0.28, y - Hc * 0.63)]
        draw.polygon(win, fill=(60, 75, 90) if not night else (20, 25, 30))
        draw.rounded_rectangle(body, radius=max(1.0, Hc * 0.12), fill=rgb(col))
        label.polygon(cabin, fill=BODY_LABEL)
        label.rectangle(body, fill=BODY_LABEL)
        wr = Hc * 0.2
        for wx in (x - L * 0.3, x + L * 0.3):
            wheel = (wx - wr, y - 2 * wr, wx + wr, y)
            draw.ellipse(wheel, fill=(25, 25, 25))
            label.ellipse(wheel, fill=BODY_LABEL)
        if night:
            lights.append((x + L / 2, y - Hc * 0.4, Hc * 0.12))
    elif kind == "balloons":  # round, head-sized colourful objects on strings: hard negatives
        hgt = spec["height"] * ppm
        for (dx, dy), c in zip(spec["offsets"], spec["colours"]):
            bx, by, br = x + dx * ppm, y - hgt + dy * ppm, 0.14 * ppm
            draw.line((x, y - 0.9 * ppm, bx, by + br), fill=(220, 220, 220), width=1)
            draw.ellipse((bx - br, by - br * 1.15, bx + br, by + br * 1.15), fill=rgb(c))
            label.ellipse((bx - br, by - br * 1.15, bx + br, by + br * 1.15), fill=BODY_LABEL)
    elif kind == "bollard":
        hgt, w = 0.9 * ppm, max(1.0, 0.2 * ppm)
        draw.rectangle((x - w / 2, y - hgt, x + w / 2, y), fill=rgb(col))
        draw.rectangle((x - w / 2, y - hgt * 0.8, x + w / 2, y - hgt * 0.7), fill=(230, 230, 230))
        label.rectangle((x - w / 2, y - hgt, x + w / 2, y), fill=BODY_LABEL)
    return lights


def object_spec(rng: np.random.Generator, kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"colour": clothing_colour(rng)}
    if kind == "pole":
        spec.update(height=rng.uniform(3.5, 7.0), colour=jitter(rng, (70, 72, 75), 0.2),
                    lamp=jitter(rng, (210, 210, 200), 0.1))
    elif kind == "sign":
        spec.update(height=rng.uniform(1.8, 2.8), board=(rng.uniform(0.5, 1.4), rng.uniform(0.4, 0.9)),
                    colour=[(30, 90, 170), (20, 120, 60), (200, 40, 40), (230, 190, 40)][rng.integers(4)])
        spec["colour"] = np.array(spec["colour"], float)
    elif kind == "tree":
        n = int(rng.integers(3, 7))
        spec.update(height=rng.uniform(1.5, 3.0), crown=rng.uniform(1.2, 2.6),
                    colour=jitter(rng, (60, 110, 50), 0.2),
                    blobs=[(rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.4), rng.uniform(0.45, 0.8)) for _ in range(n)],
                    shades=list(rng.uniform(0.7, 1.15, n)))
    elif kind == "car":
        spec.update(length=rng.uniform(3.8, 4.8))
    elif kind == "balloons":
        n = int(rng.integers(2, 6))
        spec.update(height=rng.uniform(2.0, 2.8), offsets=[(rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.3)) for _ in range(n)],
                    colours=[clothing_colour(rng) for _ in range(n)])
    elif kind == "bollard":
        spec.update(colour=jitter(rng, (60, 60, 60), 0.3))
    return spec

