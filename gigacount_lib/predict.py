"""Count the people in your own images with a trained checkpoint (``gigacount predict``).

For each image: the predicted count, a row in ``counts.csv``, and a PNG with the density map
overlaid on the photo. Inference is full-image when the image fits the memory budget and sliding
windows otherwise (:func:`gigacount_lib.evaluate.predict_density`). It runs under bfloat16 autocast
where the device has native bfloat16 kernels (about 2x faster on a 2-core AVX-512 CPU,
``benchmarks/README.md``; ``bench_inference.py`` records each precision's count beside its time) and in
float32 elsewhere or with
``bf16=False`` (``gigacount predict --fp32``). ``compile=True`` (``--compile``) runs the model through
``torch.compile``: the first image of each size pays the compilation (about 1.5 min for 2048x1536 on 2
CPU cores), each later one is faster (``benchmarks/README.md``), so it pays off on many images of one
size. An unreadable image is skipped with a warning; the others go on.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .utils import atomic_write_bytes, get_logger, native_bf16

__all__ = ["collect_images", "predict_images", "plot_density_overlay"]

log = get_logger("predict")


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``inputs`` (files, or folders searched one level deep), sorted, unique."""
    from .data.base import IMAGE_EXTENSIONS

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            log.warning("%s: no such file or folder, skipped", path)
    seen, unique = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def plot_density_overlay(image, density, title: str = "", fig=None):
    """The photo with the block density upsampled over it (alpha by density); returns the figure."""
    import torch.nn.functional as F

    from .viz import panel_grid, show_image

    fig, axes = panel_grid(fig, 1, 1, (8, 6))
    ax = axes[0, 0]
    show_image(ax, image, title)
    dens = F.interpolate(density.detach().float().cpu().reshape(1, 1, *density.shape[-2:]),
                         size=tuple(image.shape[-2:]), mode="nearest")[0, 0]
    peak = float(dens.max()) or 1.0
    ax.imshow(dens.numpy(), cmap="jet", alpha=(dens / peak).clamp(0, 1).numpy() * 0.6)
    return fig


def predict_images(model, images: Iterable[Path], out_dir: str | os.PathLike | None, *, device="cpu",
                   window: int | None = None, stride: int | None = None, bf16: bool | None = None,
                   compile: bool = False) -> list[dict]:
    """Predict every readable image; write ``counts.csv`` and ``<name>_density.png`` under ``out_dir``.

    ``bf16``: bfloat16 autocast; ``None`` (default) where the device runs it natively, else float32.
    ``compile``: run the model through ``torch.compile`` (see the module docstring).

    Returns one row per image ``{"image", "count", "height", "width", "mode"}``; unreadable files
    are logged and left out.
    """
    import matplotlib.pyplot as plt

    from .data.files import load_rgb_image
    from .data.transforms import to_image_tensor
    from .evaluate import predict_density
    from .viz import save_figure

    rows = []
    out = Path(out_dir) if out_dir is not None else None
    model = model.to(device).eval()
    device = next(model.parameters()).device
    use_bf16 = native_bf16(device) if bf16 is None else bool(bf16)
    log.info("predicting in %s on %s%s", "bfloat16 autocast" if use_bf16 else "float32", device,
             " (torch.compile)" if compile else "")
    runner = torch.compile(model) if compile else model
    for path in images:
        try:
            image = to_image_tensor(load_rgb_image(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, the rest go on
            log.warning("%s: cannot be read as an image (%s); skipped", path, exc)
            continue
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            output = predict_density(runner, image.to(device), window=window, stride=stride)
        count = float(output.density.float().sum())
        rows.append({"image": str(path), "count": round(count, 2), "height": int(image.shape[-2]),
                     "width": int(image.shape[-1])})
        if out is not None:
            fig = plot_density_overlay(image, output.density[0, 0], f"{path.name}: {count:.1f} people")
            save_figure(fig, out, f"{path.stem}_density")
            plt.close(fig)
    if out is not None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["image", "count", "height", "width"])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(out / "counts.csv", text.getvalue().encode())
    return rows
