"""The synthetic dataset on disk: rendering a whole dataset, its manifest and its cache.

Image ``i`` of a split draws from ``numpy.random.SeedSequence([seed, split, i])``, so it does not
depend on how many images are written or on ``workers``; the files are byte-identical across runs
for the same numpy/Pillow/libjpeg versions (the MAT-file header's creation date is replaced by a
fixed text). A dataset is complete once its ``.complete`` marker exists.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...utils import atomic_write_json, cache_dir, get_logger, read_json
from .config import GENERATOR_VERSION, QUICK_CONFIG, SPLITS, SyntheticConfig, scene_count_quantiles, target_count
from .render import render_scene

__all__ = ["MANIFEST_NAME", "COMPLETE_MARKER", "generate_synthetic_dataset", "read_manifest",
           "is_synthetic_root", "cached_synthetic_root"]

log = get_logger("data.synthetic")

MANIFEST_NAME = "synthetic.json"
COMPLETE_MARKER = ".complete"


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




def cached_synthetic_root(quick: bool = False, seed: int = 0) -> Path:
    """The embedded synthetic dataset, generated once and cached; returns its root.

    ``quick=True``: 48 train / 16 test images; else 300 / 100. The folder is
    ``cache_dir() / "synthetic" / <key>``, the key hashing the config and :data:`GENERATOR_VERSION`;
    a cached copy is used only if its completion marker exists.
    """
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
