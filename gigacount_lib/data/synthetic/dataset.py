"""The synthetic dataset on disk: rendering a whole dataset, its manifest and its cache.

Image ``i`` of a split draws from ``numpy.random.SeedSequence([seed, split, i])``, so it does not
depend on how many images are written or on ``workers``; the files are byte-identical across runs
for the same numpy/Pillow/libjpeg versions (the MAT-file header's creation date is replaced by a
fixed text). A dataset is complete once its ``.complete`` marker exists.

Only files this module wrote are ever deleted: ``overwrite=True`` replaces exactly the files the old
manifest lists (a folder holding anything else is refused), and the temporary folders of a killed run
(``.<out>.tmp-<host>-<pid>-*``) are removed by the next run, file by file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...utils import (atomic_write_json, cache_dir, clean_stale_temp_dirs, ensure_dir, get_logger, make_temp_dir,
                      read_json, remove_owned, replace_dir)
from .config import GENERATOR_VERSION, QUICK_CONFIG, SPLITS, SyntheticConfig, scene_count_quantiles, target_count
from .render import render_scene

__all__ = ["MANIFEST_NAME", "COMPLETE_MARKER", "generate_synthetic_dataset", "render_item", "read_manifest",
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


def render_item(config: SyntheticConfig, split: str, index: int, u: float | None = None
                ) -> tuple[Image.Image, np.ndarray, dict[str, Any]]:
    """Render image ``index`` of ``split`` ("Train" or "Test") exactly as the dataset holds it (before JPEG).

    ``u`` is the image's count quantile; by default the one :func:`generate_synthetic_dataset` uses.
    Returns :func:`~.render.render_scene`'s ``(image, points, info)``.
    """
    if split not in SPLITS:
        raise ValueError(f"render_item: split must be one of {sorted(SPLITS)}, got {split!r}")
    if u is None:
        u = float(scene_count_quantiles(index + 1, config.seed, SPLITS[split])[index])
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, SPLITS[split], index]))
    return render_scene(rng, config, n_people=target_count(u, config))


def _render_item(args: tuple[SyntheticConfig, str, int, float]) -> tuple[bytes, bytes, int, dict[str, Any]]:
    config, split, index, u = args
    image, points, info = render_item(config, split, index, u)
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


_OWN_FILE = re.compile(r"^(?:synthetic\.json|\.complete|Train|Test|(?:Train|Test)/img_\d{4,}(?:\.jpg|_ann\.mat)"
                       r"|\.synthetic\.json\.[0-9a-f]{12}\.tmp)$")
_LEGACY_TEMP = re.compile(r"^\.(?P<out>.+)\.(?:tmp-[a-z0-9_]{8}|old-\d+-\d+)$")


def _written_by_us(rel: str) -> bool:
    """A path (relative to a dataset folder) of the kind this module writes."""
    return _OWN_FILE.match(rel) is not None


def _listed_files(root: Path) -> set[str] | None:
    """The relative paths the manifest in ``root`` lists (with the folders), or None when ``root`` has
    no manifest written by this module."""
    try:
        manifest = read_json(root / MANIFEST_NAME, "synthetic-dataset manifest")
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("name") != "gigacount synthetic crowds" \
            or not isinstance(manifest.get("splits"), dict):
        return None
    listed = {MANIFEST_NAME, COMPLETE_MARKER}
    for split, info in manifest["splits"].items():
        images = info.get("images") if isinstance(info, dict) else None
        if split not in SPLITS or not isinstance(images, list):
            return None
        listed.add(split)
        for image in images:
            name = image.get("name") if isinstance(image, dict) else None
            if not isinstance(name, str) or not re.fullmatch(r"img_\d{4,}", name):
                return None
            listed.update({f"{split}/{name}.jpg", f"{split}/{name}_ann.mat"})
    return listed


def _first_foreign(root: Path, listed: set[str]) -> Path | None:
    """The first entry under ``root`` (sorted, depth first) that is not in ``listed``; links count as foreign."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames + dirnames):
            path = here / name
            if path.is_symlink() or path.relative_to(root).as_posix() not in listed:
                return path
    return None


def _check_replaceable(out: Path) -> set[str]:
    """The files of the synthetic dataset in ``out`` that ``overwrite=True`` may replace; raises
    ``FileExistsError`` when ``out`` holds anything else (nothing is changed then)."""
    listed = _listed_files(out)
    elsewhere = out.parent / f"{out.name}-synthetic"
    if listed is None:
        raise FileExistsError(f"{out}: not empty and not a synthetic dataset (no valid {MANIFEST_NAME} written by "
                              f"`gigacount synth`); refusing to replace anything in it even with --overwrite. "
                              f"Choose another --out, e.g. {elsewhere}")
    foreign = _first_foreign(out, listed)
    if foreign is not None:
        raise FileExistsError(f"{out}: holds {foreign}, which is not one of the files listed in "
                              f"{out / MANIFEST_NAME}; --overwrite replaces only those, so nothing was changed. "
                              f"Move it away, or choose another --out, e.g. {elsewhere}")
    return listed


def _clean_leftovers(out: Path) -> None:
    """Remove what a killed run left beside ``out``; name the temporary folders of older versions."""
    clean_stale_temp_dirs(out, _written_by_us)
    for entry in sorted(out.parent.iterdir()):
        match = _LEGACY_TEMP.match(entry.name)
        if match and match["out"] == out.name and entry.is_dir():
            log.warning("%s looks like a temporary folder left by an interrupted `gigacount synth` of an earlier "
                        "version; delete it if no other generation into %s is running", entry, out)


def generate_synthetic_dataset(out_dir: str | os.PathLike, config: SyntheticConfig | None = None,
                               overwrite: bool = False, *, workers: int = 1) -> Path:
    """Write the synthetic dataset to ``out_dir`` in UCF-QNRF layout and return ``out_dir``.

    The dataset is rendered into a temporary sibling folder and renamed into place only when complete,
    so ``out_dir`` never holds half a dataset. An existing non-empty ``out_dir`` is refused unless
    ``overwrite=True``; even then only a previous synthetic dataset is replaced, and only when the
    folder holds nothing but the files its ``synthetic.json`` lists (``FileExistsError`` names the
    first other file). ``workers > 1`` renders in parallel processes (same bytes).
    """
    config = config or SyntheticConfig()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: folder is not empty; pass overwrite=True (CLI: --overwrite) to "
                                  "replace a previous synthetic dataset, or choose another --out")
        _check_replaceable(out)
    ensure_dir(out.parent, "folder of --out")
    _clean_leftovers(out)
    tmp = make_temp_dir(out)
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
        if tmp.exists():
            remove_owned(tmp, _written_by_us)
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
        listed = _check_replaceable(out)  # again: files may have been added while rendering
        replace_dir(tmp, out, lambda rel: rel in listed)
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
    config = dataclasses.replace(base, seed=seed)  # validates the seed
    tag = "quick" if quick else "full"
    root = cache_dir() / "synthetic" / f"{tag}-seed{config.seed}-{_cache_key(config)}"
    if is_synthetic_root(root):
        return root
    if root.exists():  # an incomplete leftover inside our own cache: discard the files we wrote
        log.warning("discarding incomplete synthetic cache at %s", root)
        left = remove_owned(root, _written_by_us)
        if left:
            raise FileExistsError(f"{root}: incomplete synthetic cache holding files gigacount did not write "
                                  f"(first: {left[0]}); move them away and run again")
    log.info("generating the embedded synthetic dataset (%s, seed %d) into %s", tag, seed, root)
    try:
        generate_synthetic_dataset(root, config)
    except FileExistsError:
        if not is_synthetic_root(root):  # another process is writing it or left something odd
            raise
    return root
