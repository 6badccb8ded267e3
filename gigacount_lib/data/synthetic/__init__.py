"""The embedded synthetic crowd dataset: procedurally rendered crowd photographs with head annotations.

The real benchmarks (UCF-QNRF, ShanghaiTech, NWPU-Crowd, JHU-Crowd++) cannot be shipped here, yet
every notebook and test needs images that *behave* like crowd photographs: heads that shrink toward
the horizon, dense clusters next to empty ground, occlusion, clutter that is not a person, night
scenes, blur and JPEG artefacts. This package renders such scenes with numpy + PIL in a few
milliseconds each and writes them in the **UCF-QNRF layout** (Idrees et al., ECCV 2018), so the very
same reader serves real and synthetic data::

    <root>/Train/img_0001.jpg  <root>/Train/img_0001_ann.mat   (annPoints: float64 (N, 2) of (x, y))
    <root>/Test/img_0001.jpg   <root>/Test/img_0001_ann.mat
    <root>/synthetic.json      (config, generator version, per-image counts)

All sizes are pixels of the rendered image. One module per part of the scene model:

* :mod:`.config`      :class:`SyntheticConfig` and the long-tailed count law
* :mod:`.camera`      perspective ground plane, where people stand
* :mod:`.backdrop`    sky, ground texture, buildings, paving
* :mod:`.drawables`   people and distractors (poles, signs, trees, cars, bollards, balloons)
* :mod:`.photometry`  lighting (day, overcast, dusk, night), haze, vignetting, blur, sensor noise
* :mod:`.render`      :func:`render_scene`, one image, as named steps (painter's algorithm, visibility)
* :mod:`.dataset`     :func:`generate_synthetic_dataset`, the manifest and the cached embedded dataset

A head is annotated iff its centre lies inside the image and at least ``min_visible_fraction`` of it
is still visible once everything is drawn, so annotations are the heads a human annotator would see.
Everything is deterministic for a seed (see :mod:`.dataset`). :func:`resolve_data_root` is re-exported
from :mod:`gigacount_lib.data.datasets` (imported on first use: this package does not need torch).
"""
from __future__ import annotations

from .config import GENERATOR_VERSION, LIGHTING, QUICK_CONFIG, SyntheticConfig, scene_count_quantiles, target_count
from .dataset import generate_synthetic_dataset, is_synthetic_root, read_manifest
from .render import render_scene

__all__ = [
    "GENERATOR_VERSION", "LIGHTING", "SyntheticConfig", "QUICK_CONFIG", "render_scene",
    "scene_count_quantiles", "target_count", "generate_synthetic_dataset", "resolve_data_root",
    "read_manifest", "is_synthetic_root",
]


def __getattr__(name: str):
    if name == "resolve_data_root":  # lives with the dataset readers, which import torch
        from ..datasets import resolve_data_root

        return resolve_data_root
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
