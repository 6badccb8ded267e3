"""CLIP-EBC's multi-entry ``reduction_<B>.json`` files, and where its published reference data lies.

CLIP-EBC (Ma, Sanchez & Guha, arXiv:2403.09281; repository Yiming-M/CLIP-EBC) publishes its bins
and anchors as ``configs/reduction_<B>.json`` (one entry per truncation and dataset) and its
block-count histograms as ``notebooks/counts/<dataset>/counts_<B>.json``. This module reads and
writes the former as :class:`BinConfig` objects, reads the latter, and records which histogram
reproduces which entry.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from ..utils import atomic_write_json, read_json
from .anchors import ANCHOR_KINDS
from .config import BinConfig, _bound_from_json, _bound_to_json, _number_to_json
from .histogram import CountHistogram

__all__ = ["ClipEbcKey", "CLIP_EBC_ANCHOR_HISTOGRAMS", "load_clip_ebc_configs", "clip_ebc_configs_to_dict",
           "save_clip_ebc_configs", "find_shared_reference", "load_clip_ebc_histograms",
           "reproduce_published_anchors"]

ClipEbcKey = tuple[int, str, str]  # (truncation, dataset, granularity)


# Which published histogram reproduces which entry of CLIP-EBC's ``configs/reduction_8.json``
# (Ma, Sanchez & Guha, arXiv:2403.09281): (truncation, dataset) -> folder of the ``counts_8.json``
# (under ``clip_ebc_block_counts/`` in the reference folder) whose ``average`` anchors match the
# published ones to 1e-4. The README of the reference folder names two of these; the others were
# found by computing every (entry, histogram) pair (``tests/test_binning_reference.py`` checks it).
# The nwpu and jhu entries have no published histogram.
CLIP_EBC_ANCHOR_HISTOGRAMS: dict[tuple[int, str], str] = {
    (2, "qnrf"): "qnrf_4096", (4, "qnrf"): "qnrf_4096", (11, "qnrf"): "qnrf_2048",
    (2, "sha"): "sha", (4, "sha"): "sha",
    (2, "shb"): "shb", (4, "shb"): "shb",
}


def _is_clip_ebc_multi(data) -> bool:
    """CLIP-EBC's ``reduction_<B>.json``: ``{"<T>": {"<dataset>": {"bins": {...}, "anchor_points": {...}}}}``."""
    return (isinstance(data, dict) and bool(data) and all(str(k).strip().isdigit() for k in data)
            and all(isinstance(v, dict) for v in data.values()))


def load_clip_ebc_configs(source: "str | os.PathLike | Mapping", reduction: int | None = None,
                          anchor_kind: str = "average") -> dict[ClipEbcKey, BinConfig]:
    """Read CLIP-EBC's published ``reduction_<B>.json`` into ``{(T, dataset, granularity): BinConfig}``.

    Layout: ``{"<T>": {"<dataset>": {"bins": {"<granularity>": [[lo, hi], …]},
    "anchor_points": {"<granularity>": {"middle": […], "average": […]}}}}``. ``reduction`` defaults
    to the ``<B>`` in the file name (``clip_ebc_reduction_8.json`` -> 8), else 8 for a dict.
    Each config's metadata records ``truncation`` and ``dataset``. Malformed entries raise
    ``ValueError`` naming the file and the entry.
    """
    where = "CLIP-EBC config"
    if isinstance(source, Mapping):
        data = source
    else:
        path = Path(source)
        where = str(path)
        data = read_json(path, "CLIP-EBC bin configuration")
        if reduction is None:
            match = re.search(r"reduction_(\d+)", path.name)
            reduction = int(match.group(1)) if match else None
    if reduction is None:
        reduction = 8
    if anchor_kind not in ANCHOR_KINDS:
        raise ValueError(f"anchor_kind must be one of {ANCHOR_KINDS}, got {anchor_kind!r}")
    if not _is_clip_ebc_multi(data):
        raise ValueError(f"{where}: expected {{\"<truncation>\": {{\"<dataset>\": {{\"bins\": …, \"anchor_points\": …}}}}}}")
    out: dict[ClipEbcKey, BinConfig] = {}
    for t_key, datasets in data.items():
        for dataset, entry in datasets.items():
            name = f"{where}: entry T={t_key} / {dataset}"
            if not isinstance(entry, dict) or "bins" not in entry or "anchor_points" not in entry:
                raise ValueError(f"{name}: expected keys 'bins' and 'anchor_points'")
            for gran, raw_bins in entry["bins"].items():
                try:
                    anchors = entry["anchor_points"][gran][anchor_kind]
                except (KeyError, TypeError):
                    raise ValueError(f"{name}: no '{anchor_kind}' anchors for the {gran} bins") from None
                try:
                    bins = tuple((_bound_from_json(lo), _bound_from_json(hi)) for lo, hi in raw_bins)
                    cfg = BinConfig(bins=bins, anchor_points=tuple(anchors), reduction=reduction,
                                    granularity=gran, anchor_kind=anchor_kind,
                                    metadata={"truncation": int(t_key), "dataset": dataset})
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{name} ({gran}): {exc}") from exc
                out[(int(t_key), dataset, gran)] = cfg
    return out


def _select_entry(configs: Mapping[ClipEbcKey, BinConfig], truncation, dataset, granularity) -> BinConfig:
    hits = [k for k in configs
            if (truncation is None or k[0] == int(truncation)) and (dataset is None or k[1] == dataset)
            and (granularity is None or k[2] == granularity)]
    if len(hits) == 1:
        return configs[hits[0]]
    available = ", ".join(f"T={t}/{d}/{g}" for t, d, g in sorted(configs))
    if not hits:
        raise ValueError(f"no entry with truncation={truncation}, dataset={dataset}, granularity={granularity}; "
                         f"available: {available}")
    raise ValueError(f"{len(hits)} entries match truncation={truncation}, dataset={dataset}, "
                     f"granularity={granularity}; say which (available: {available})")


def clip_ebc_configs_to_dict(configs: Mapping[tuple, "BinConfig | Sequence[BinConfig]"]) -> dict:
    """Inverse of :func:`load_clip_ebc_configs`: ``{(T, dataset): config(s)}`` -> CLIP-EBC's layout.

    Keys may be ``(T, dataset)`` or ``(T, dataset, granularity)``; ``T=None`` uses the config's
    ``metadata["truncation"]`` or the lower bound of its open bin. Each granularity is written with
    its ``middle`` anchors and, when the config holds them, its ``average`` anchors; two configs of
    one granularity in the same entry must share their bins.
    """
    out: dict[str, dict] = {}
    for key, value in configs.items():
        t, dataset = key[0], key[1]
        items = [value] if isinstance(value, BinConfig) else list(value)
        for cfg in items:
            trunc = t if t is not None else cfg.metadata.get("truncation", int(cfg.truncation))
            entry = out.setdefault(str(int(trunc)), {}).setdefault(str(dataset), {"bins": {}, "anchor_points": {}})
            bins_json = [[_bound_to_json(lo), _bound_to_json(hi)] for lo, hi in cfg.bins]
            gran = cfg.granularity
            if gran in entry["bins"] and entry["bins"][gran] != bins_json:
                raise ValueError(f"T={trunc} / {dataset}: two different {gran} bin sets")
            entry["bins"][gran] = bins_json
            anchors = entry["anchor_points"].setdefault(gran, {})
            anchors["middle"] = [_number_to_json(a) for a in cfg.middle_anchor_points]
            if cfg.anchor_kind != "middle":
                anchors[cfg.anchor_kind] = [_number_to_json(a) for a in cfg.anchor_points]
    return out


def save_clip_ebc_configs(configs: Mapping[tuple, "BinConfig | Sequence[BinConfig]"], path: str | os.PathLike) -> Path:
    """Write :func:`clip_ebc_configs_to_dict` to ``path`` (atomically)."""
    return atomic_write_json(path, clip_ebc_configs_to_dict(configs))


def find_shared_reference(start: str | os.PathLike | None = None) -> Path | None:
    """The folder of published reference figures (``shared/reference`` beside the checkout), or ``None``.

    Looks at ``$GIGACOUNT_REFERENCE`` (``none`` disables the search), then ``<checkout>/../shared/reference`` for the checkout that
    holds this package, then for ``shared/reference`` beside ``start`` (default: the working
    directory) and each of its parents. Returns ``None`` when absent (e.g. on Colab), so callers
    can say so and carry on.
    """
    env = os.environ.get("GIGACOUNT_REFERENCE")
    if env is not None and env.strip().lower() in {"none", "off"}:
        return None  # explicitly disabled (used to test the code path without reference data)
    candidates: list[Path] = [Path(env)] if env else []
    # this file is <checkout>/gigacount_lib/binning/clip_ebc_io.py, so parents[3] is the folder beside the checkout
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "reference")
    here = Path(start) if start is not None else Path.cwd()
    here = here.resolve()
    candidates += [d / "shared" / "reference" for d in (here, *here.parents)]
    for c in candidates:
        if (c / "clip_ebc_block_counts").is_dir() or (c / "clip_ebc_reduction_8.json").is_file():
            return c
    return None


def load_clip_ebc_histograms(reference: str | os.PathLike, block_size: int = 8,
                             folders: Sequence[str] = ("qnrf_4096", "qnrf_2048", "sha", "shb"),
                             ) -> dict[str, CountHistogram]:
    """CLIP-EBC's published ``clip_ebc_block_counts/<folder>/counts_<B>.json`` under ``reference``.

    Returns ``{folder: CountHistogram}`` in the order of ``folders``; a folder without the file is
    left out (the reference folder may hold only some datasets).
    """
    out: dict[str, CountHistogram] = {}
    for folder in folders:
        path = Path(reference) / "clip_ebc_block_counts" / folder / f"counts_{block_size}.json"
        if path.is_file():
            out[folder] = CountHistogram.load(path)
    return out


def reproduce_published_anchors(published: Mapping[ClipEbcKey, BinConfig], histograms: Mapping[str, CountHistogram],
                                matching: Mapping[tuple[int, str], str] = CLIP_EBC_ANCHOR_HISTOGRAMS):
    """The open bin's published ``average`` anchor beside the one computed from its histogram.

    For each entry ``(T, dataset, granularity)`` of ``published`` (:func:`load_clip_ebc_configs`),
    ``matching`` names the histogram folder, ``histograms`` holds it (:func:`load_clip_ebc_histograms`)
    and :meth:`BinConfig.from_histogram` recomputes the anchors. Returns a ``pandas.DataFrame``
    indexed by entry with columns ``histogram``, ``published``, ``computed`` and ``abs diff`` (NaN
    where no histogram is available).
    """
    import pandas as pd

    rows = []
    for (t, dataset, gran), cfg in sorted(published.items()):
        folder = matching.get((t, dataset))
        if folder is None or folder not in histograms:
            rows.append({"entry": f"{dataset} T={t}", "histogram": "(not provided)",
                         "published": cfg.anchor_points[-1], "computed": float("nan"), "abs diff": float("nan")})
            continue
        hist = histograms[folder]
        ours = BinConfig.from_histogram(hist, t, granularity=gran, anchor_kind="average")
        rows.append({"entry": f"{dataset} T={t}", "histogram": f"{folder}/counts_{hist.block_size}.json",
                     "published": cfg.anchor_points[-1], "computed": ours.anchor_points[-1],
                     "abs diff": abs(ours.anchor_points[-1] - cfg.anchor_points[-1])})
    return pd.DataFrame(rows).set_index("entry")
