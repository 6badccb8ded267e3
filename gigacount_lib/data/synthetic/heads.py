"""How small the synthetic heads are, and what that alone costs a counter that cannot see the smallest.

The renderer knows every head's size, which the annotations (points only) do not keep. Re-rendering a
split (deterministic, see :mod:`.dataset`) recovers them. :func:`size_floor` then scores the
predictor that finds every head at least ``s`` pixels tall and none smaller, against the mean-count
predictor: a lower bound on the error of any model that cannot resolve heads below ``s`` pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import SPLITS, SyntheticConfig, scene_count_quantiles

__all__ = ["split_head_sizes", "size_floor"]


def split_head_sizes(config: SyntheticConfig | None = None, split: str = "Test") -> list[np.ndarray]:
    """Per image of ``split``, the heights in pixels of its annotated heads (one array per image, in
    annotation order). Renders the split again: about 0.2 s per 512x384 image."""
    from .dataset import render_item

    config = config or SyntheticConfig()
    if split not in SPLITS:
        raise ValueError(f"split_head_sizes: split must be one of {sorted(SPLITS)}, got {split!r}")
    n = config.n_train if split == "Train" else config.n_test
    quantiles = scene_count_quantiles(n, config.seed, SPLITS[split])
    return [np.asarray(render_item(config, split, i, float(quantiles[i]))[2]["head_sizes"], dtype=np.float64)
            for i in range(n)]


def size_floor(sizes: Sequence[np.ndarray], train_mean: float,
               thresholds: Sequence[float] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)):
    """The error of counting exactly the heads at least ``s`` px tall, for each ``s`` in ``thresholds``.

    Args:
        sizes: per image, its head heights in pixels (:func:`split_head_sizes`).
        train_mean: the mean count of the training images: the mean-count predictor always answers it.
        thresholds: head heights ``s`` in pixels.

    Returns a pandas DataFrame, one row per ``s``: ``min_head_px``, ``share_of_heads_below`` (of all
    heads in ``sizes``), ``mae`` of the predictor ``#{heads >= s}``, and ``mae_ratio_to_trivial``, that
    MAE over the mean-count predictor's.
    """
    import pandas as pd

    if not len(sizes):
        raise ValueError("size_floor: no images")
    true = np.array([len(s) for s in sizes], dtype=np.float64)
    trivial = float(np.abs(true - train_mean).mean())
    every = np.concatenate([np.asarray(s, dtype=np.float64) for s in sizes])
    rows = []
    for s in thresholds:
        pred = np.array([(np.asarray(h) >= s).sum() for h in sizes], dtype=np.float64)
        mae = float(np.abs(true - pred).mean())
        rows.append({"min_head_px": float(s),
                     "share_of_heads_below": float((every < s).mean()) if every.size else 0.0,
                     "mae": mae, "mae_ratio_to_trivial": mae / trivial if trivial > 0 else float("nan")})
    return pd.DataFrame(rows)
