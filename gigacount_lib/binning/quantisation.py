"""Quantisation error: what a choice of bins and anchors costs before any learning.

A perfect classifier reports, for each block, the anchor of its true class; summing those anchors
gives the best count the bins allow. Comparing it with the true count measures the error the bins
and anchors impose by themselves (notebook 02, section 4).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from .config import BinConfig
from .histogram import _iter_annotations

__all__ = ["reconstruct_counts", "quantisation_errors"]


def reconstruct_counts(block_counts: Tensor, config: BinConfig) -> Tensor:
    """Count recovered from the ground-truth class map: ``sum_blocks anchor[class(block)]``.

    ``block_counts``: ``(..., h, w)``; returns ``(...)``. This is the count a perfect classifier
    would predict: the error against ``block_counts.sum((-2, -1))`` is the quantisation error the
    bins and anchors impose before any learning.
    """
    classes = config.counts_to_classes(block_counts)
    return config.anchors_tensor(device=classes.device, dtype=torch.float64)[classes].sum(dim=(-2, -1))


def quantisation_errors(annotations, configs: Mapping[str, BinConfig], *, progress: bool = False,
                        total: int | None = None):
    """Per-configuration error of counts reconstructed from ground-truth class maps.

    For every image ``i`` and configuration, ``hat{C}_i = sum_b anchor[class(c_b)]`` and
    ``C_i = sum_b c_b`` over its ``reduction``-pixel blocks ``b``. Returns a ``pandas.DataFrame``
    indexed by configuration name with columns ``bins`` (K), ``MAE`` (``mean_i |hat C_i - C_i|``),
    ``bias`` (``mean_i (hat C_i - C_i)``), ``RMSE``, ``rel_total_error``
    (``(sum hat C - sum C) / sum C``) and ``max_abs_error``.
    """
    import pandas as pd
    from tqdm import tqdm

    from ..data.density import block_count_map

    if not configs:
        raise ValueError("quantisation_errors: no configurations given")
    iterable, inferred = _iter_annotations(annotations)
    errors: dict[str, list[float]] = {name: [] for name in configs}
    truths: list[float] = []
    for name, points, size in tqdm(iterable, total=total or inferred, disable=not progress, leave=False):
        maps = {}
        true = None
        for key, cfg in configs.items():
            if cfg.reduction not in maps:
                try:
                    maps[cfg.reduction] = block_count_map(torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2),
                                                          (int(size[0]), int(size[1])), cfg.reduction)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from exc
            counts = maps[cfg.reduction]
            true = float(counts.sum())
            errors[key].append(float(reconstruct_counts(counts, cfg)) - true)
        truths.append(true)
    if not truths:
        raise ValueError("quantisation_errors: the dataset is empty (no images/annotations)")
    total_true = float(sum(truths))
    rows = []
    for key, cfg in configs.items():
        err = np.asarray(errors[key])
        rows.append({"config": key, "bins": cfg.num_bins, "MAE": float(np.abs(err).mean()),
                     "bias": float(err.mean()), "RMSE": float(np.sqrt((err ** 2).mean())),
                     "rel_total_error": float(err.sum() / total_true) if total_true else float("nan"),
                     "max_abs_error": float(np.abs(err).max())})
    return pd.DataFrame(rows).set_index("config")
