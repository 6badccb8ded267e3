"""Evaluation of counting models: count metrics, full-image and sliding-window inference, per-image
results with block-level calibration, and the two model-selection protocols.

Every model maps an image to one density value per 8x8 block; the image count is the density's sum.
:func:`predict_density` runs the whole image when it fits the memory budget and otherwise tiles it
with :func:`predict_sliding`; :func:`evaluate_model` does this over a dataset and returns an
:class:`EvalResult` (metrics + a per-image table) that :meth:`EvalResult.save` writes to disk.
The calibration metrics (reliability statistics, top-label and classwise ECE) live in
:mod:`gigacount_lib.calibration` and are re-exported here.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .calibration import (ReliabilityAccumulator, ReliabilityStats, block_probabilities, expected_calibration_error,
                          reliability_stats)
from .models.head import CountingOutput
from .utils import atomic_write_bytes, atomic_write_json, get_logger, module_device

__all__ = [
    "REDUCTION", "DEFAULT_WINDOW", "DEFAULT_STRIDE", "CPU_MAX_PIXELS", "BYTES_PER_PIXEL", "CUDA_MEMORY_FRACTION",
    "DENSITY_LEVELS", "OFFICIAL", "HELDOUT", "DEFAULT_PROTOCOL", "PROTOCOLS", "OFFICIAL_WINDOW",
    "OFFICIAL_STRIDE", "OFFICIAL_EVAL_EVERY",
    "count_metrics", "predict_full", "sliding_windows", "predict_sliding", "default_max_pixels",
    "plan_inference", "predict_density", "density_levels", "EvalResult", "evaluate_model",
    "heldout_split", "protocol_label", "is_eval_epoch",
    # calibration (defined in gigacount_lib.calibration)
    "ReliabilityStats", "reliability_stats", "expected_calibration_error", "block_probabilities",
    "ReliabilityAccumulator",
]

log = get_logger("evaluate")

REDUCTION = 8
"""Pixels per output block side (every model in the library outputs stride-8 blocks)."""

DEFAULT_WINDOW = 512
"""Window side of the automatic sliding-window fallback: large against the model's 224-pixel
training crops, so that most blocks lie far from a window border (where zero padding inside the
window changes the features), yet about 100 MB of activations per window at ``BYTES_PER_PIXEL``."""

DEFAULT_STRIDE = 448
"""Stride of the automatic fallback: 64 pixels (8 blocks) of overlap, averaged, soften the seams."""

BYTES_PER_PIXEL = 1024
"""Planning figure for the peak memory of a float32 forward pass per input pixel. GigaCount
(random init, CPU, batch 1, ``torch.inference_mode``) raised the peak resident memory by 135 MiB on
512x512 and 359 MiB on 1024x1024 (about 540 and 360 bytes per pixel); the figure doubles that for
cuDNN workspaces and allocator fragmentation."""

CUDA_MEMORY_FRACTION = 0.5
"""Share of the free GPU memory (``torch.cuda.mem_get_info``) a full-image forward pass may plan on."""

CPU_MAX_PIXELS = 2048 * 2048
"""Fixed full-image budget off CUDA (about 4.2 MP, 2 GB at ``BYTES_PER_PIXEL / 2``): it holds every
UCF-QNRF image once resized to a longer side of at most 2048 pixels, the usual preprocessing. A fixed
number, not the free memory, so that a CPU evaluation makes the same full/sliding choices everywhere."""

DENSITY_LEVELS = ("sparse", "medium", "dense")
"""Names of the true-count buckets of :func:`density_levels`."""

# ------------------------------------------------------------------------------------- protocols
OFFICIAL = "official"
HELDOUT = "heldout"
DEFAULT_PROTOCOL = HELDOUT
OFFICIAL_WINDOW = 224
"""Sliding window side of the official GigaCount evaluation (pixels)."""
OFFICIAL_STRIDE = 224
"""Stride of the official evaluation: windows do not overlap."""
OFFICIAL_EVAL_EVERY = 5
"""The official code evaluates on the test split every 5 epochs."""

PROTOCOLS: dict[str, str] = {
    OFFICIAL: (
        "Official GigaCount protocol: the test split is evaluated every "
        f"{OFFICIAL_EVAL_EVERY} epochs ({OFFICIAL_WINDOW}x{OFFICIAL_WINDOW} sliding windows, stride "
        f"{OFFICIAL_STRIDE}) and the checkpoint with the best test MAE is kept, so the reported test "
        "numbers are selected on test (optimistic)."),
    HELDOUT: (
        "Held-out validation: a seeded fraction of the training images (heldout_split) is set aside; "
        "their MAE selects the checkpoint, and the test split is evaluated once, at the end, with the "
        "selected checkpoint."),
}
_PROTOCOL_LABELS = {OFFICIAL: "selected on test", HELDOUT: "held-out validation, test evaluated once"}


def protocol_label(protocol: str) -> str:
    """Short label of a protocol for reports and figure captions.

    Args:
        protocol: ``"official"`` or ``"heldout"``.

    Returns:
        ``"selected on test"`` or ``"held-out validation, test evaluated once"``.
    """
    if protocol not in _PROTOCOL_LABELS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    return _PROTOCOL_LABELS[protocol]


def is_eval_epoch(epoch: int, every: int = OFFICIAL_EVAL_EVERY) -> bool:
    """Whether the official protocol evaluates after ``epoch`` (counted from 1): every ``every``-th."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return epoch >= 1 and epoch % every == 0


def heldout_split(n_images: int, fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded, deterministic split of the training images into a training part and a validation part.

    Args:
        n_images: number of training images (at least 2).
        fraction: share of them held out, in ``(0, 1)``; the validation part has
            ``round(fraction * n_images)`` images, at least 1 and at most ``n_images - 1``.
        seed: seed of the permutation (``numpy.random.default_rng``).

    Returns:
        ``(train_indices, val_indices)``: sorted, disjoint lists of ints that together cover
        ``range(n_images)``; use them with ``torch.utils.data.Subset``.
    """
    n_images = int(n_images)
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2 to hold some out, got {n_images}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_val = min(max(int(round(fraction * n_images)), 1), n_images - 1)
    perm = np.random.default_rng(seed).permutation(n_images)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


# --------------------------------------------------------------------------------------- metrics
def count_metrics(pred: Sequence[float] | np.ndarray | Tensor,
                  true: Sequence[float] | np.ndarray | Tensor) -> dict[str, float | int]:
    """Image-count errors.

    Args:
        pred: predicted counts, one per image.
        true: true counts, same length.

    Returns:
        ``mae`` (mean ``|pred - true|``), ``rmse`` (root of the mean squared error), ``nae``
        (normalised absolute error: mean of ``|pred - true| / true`` over the images with
        ``true > 0`` only, since it is undefined for empty images; NaN when there is none) and
        ``images`` (the number of images). The errors are NaN for zero images.
    """
    p = np.asarray(pred.detach().cpu() if torch.is_tensor(pred) else pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true.detach().cpu() if torch.is_tensor(true) else true, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"count_metrics: {p.size} predictions for {t.size} true counts")
    if p.size == 0:
        return {"mae": math.nan, "rmse": math.nan, "nae": math.nan, "images": 0}
    err = p - t
    positive = t > 0
    nae = float(np.mean(np.abs(err[positive]) / t[positive])) if positive.any() else math.nan
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))), "nae": nae,
            "images": int(p.size)}


# ------------------------------------------------------------------------------------- inference
def _as_batch(images: Tensor) -> Tensor:
    if not torch.is_tensor(images) or images.ndim not in (3, 4) or images.shape[-3] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"expected an image (3, H, W) or a batch (B, 3, H, W), got {shape}")
    return images.unsqueeze(0) if images.ndim == 3 else images


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``torch.inference_mode`` for the duration; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def predict_full(model: nn.Module, images: Tensor) -> CountingOutput:
    """One forward pass on whole images, in eval mode under ``torch.inference_mode``.

    Args:
        model: a counting model (returns :class:`CountingOutput`).
        images: ``(3, H, W)`` or ``(B, 3, H, W)`` float in ``[0, 1]``, any size; moved to the model's device.

    Returns:
        The model's :class:`CountingOutput`: logits ``(B, K, ceil(H/8), ceil(W/8))`` and density
        ``(B, 1, ceil(H/8), ceil(W/8))``, as the model returns them.
    """
    batch = _as_batch(images).to(module_device(model))
    with _inference(model):
        return model(batch)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or an (height, width) pair of ints, got {value!r}")
    if any(v <= 0 or v % REDUCTION for v in pair):
        raise ValueError(f"{name} must be a positive multiple of {REDUCTION} pixels (the block size), "
                         f"got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_window(window: int | Sequence[int], stride: int | Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    win, step = _pair(window, "window"), _pair(stride, "stride")
    if step[0] > win[0] or step[1] > win[1]:
        raise ValueError(f"stride {stride!r} must not exceed window {window!r}: the pixels between two "
                         "windows would never be seen")
    return win, step


def _starts(blocks: int, window_blocks: int, stride_blocks: int) -> list[int]:
    """Window starts (in blocks) along one axis: multiples of the stride, then one ending at the border."""
    last = max(blocks - window_blocks, 0)
    starts = list(range(0, last + 1, stride_blocks))
    if starts[-1] < last:
        starts.append(last)
    return starts


def sliding_windows(height: int, width: int, window: int | Sequence[int] = OFFICIAL_WINDOW,
                    stride: int | Sequence[int] | None = None) -> list[tuple[int, int, int, int]]:
    """The windows :func:`predict_sliding` runs on an ``height x width`` image, row by row.

    Windows start at multiples of ``stride``; the last row (column) is shifted back so that it ends
    at the image border, rounded up to whole blocks: it starts at ``8 * ceil(H / 8) - window`` and is
    cut at ``H``, so every window is aligned with the 8-pixel block grid (the official code starts it
    at ``H - window``, the same place whenever ``H`` is a multiple of 8). Windows on the last row or
    column can be smaller than ``window`` when the image is; nothing is padded here, the model pads
    internally as for a full image. There are ``ceil((H - window) / stride) + 1`` rows (at least 1),
    as in the official code; with ``window = stride = 224`` an image of ``224 m x 224 n`` pixels gets
    the ``m x n`` non-overlapping tiles of the official evaluation.

    Args:
        height, width: image size in pixels.
        window: window side (or ``(h, w)``), a positive multiple of 8.
        stride: step between windows (or ``(h, w)``), a positive multiple of 8, at most ``window``;
            ``None``: equal to ``window`` (no overlap).

    Returns:
        ``(top, left, h, w)`` in pixels for every window.
    """
    win, step = _check_window(window, window if stride is None else stride)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    rows = _starts(math.ceil(height / REDUCTION), win[0] // REDUCTION, step[0] // REDUCTION)
    cols = _starts(math.ceil(width / REDUCTION), win[1] // REDUCTION, step[1] // REDUCTION)
    boxes = []
    for r in rows:
        top = r * REDUCTION
        for c in cols:
            left = c * REDUCTION
            boxes.append((top, left, min(win[0], height - top), min(win[1], width - left)))
    return boxes


def predict_sliding(model: nn.Module, image: Tensor, window: int | Sequence[int] = OFFICIAL_WINDOW,
                    stride: int | Sequence[int] | None = None, batch_size: int = 8) -> CountingOutput:
    """Sliding-window inference; a block covered by several windows gets their average.

    The windows are those of :func:`sliding_windows`; windows of one size are stacked and run
    ``batch_size`` at a time (times the number of images), and each output is added into the
    block grid at the window's place. The density is the mean of the covering windows' densities;
    the bin probabilities likewise are averaged (softmax per window, then mean), and the returned
    logits are their logarithm (clamped at the smallest float), so that ``softmax(logits)`` gives the
    averaged probabilities back. Without overlap this is the window's own ``log_softmax``.

    Args:
        model: a counting model with 8-pixel blocks.
        image: ``(3, H, W)`` or ``(B, 3, H, W)`` float in ``[0, 1]``; moved to the model's device.
        window: window side in pixels (or ``(h, w)``), a positive multiple of 8.
        stride: step in pixels (or ``(h, w)``), a positive multiple of 8, ``<= window``;
            ``None``: equal to ``window``.
        batch_size: windows per forward pass.

    Returns:
        :class:`CountingOutput` with logits ``(B, K, ceil(H/8), ceil(W/8))`` and density
        ``(B, 1, ceil(H/8), ceil(W/8))``, float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch = _as_batch(image)
    n_img, _, height, width = batch.shape
    boxes = sliding_windows(height, width, window, stride)
    device = module_device(model)
    batch = batch.to(device)
    h, w = math.ceil(height / REDUCTION), math.ceil(width / REDUCTION)
    groups: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for box in boxes:
        groups.setdefault(box[2:], []).append(box)
    density = torch.zeros((n_img, 1, h, w), dtype=torch.float32, device=device)
    cover = torch.zeros((1, 1, h, w), dtype=torch.float32, device=device)
    probs: Tensor | None = None
    with _inference(model):
        for (win_h, win_w), group in groups.items():
            hb, wb = math.ceil(win_h / REDUCTION), math.ceil(win_w / REDUCTION)
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                crops = torch.cat([batch[:, :, t:t + win_h, l:l + win_w] for t, l, _, _ in chunk])
                out = model(crops)
                if tuple(out.density.shape[-2:]) != (hb, wb):
                    raise ValueError(f"the model returned {tuple(out.density.shape[-2:])} blocks for a "
                                     f"{win_h}x{win_w} window; expected ({hb}, {wb}) blocks of {REDUCTION} pixels")
                dens = out.density.float().reshape(len(chunk), n_img, 1, hb, wb)
                prob = out.logits.float().softmax(1)
                prob = prob.reshape(len(chunk), n_img, prob.shape[1], hb, wb)
                if probs is None:
                    probs = torch.zeros((n_img, prob.shape[2], h, w), dtype=torch.float32, device=device)
                for j, (t, l, _, _) in enumerate(chunk):
                    rows = slice(t // REDUCTION, t // REDUCTION + hb)
                    cols = slice(l // REDUCTION, l // REDUCTION + wb)
                    density[..., rows, cols] += dens[j]
                    probs[..., rows, cols] += prob[j]
                    cover[..., rows, cols] += 1.0
        assert probs is not None and bool((cover > 0).all())  # the windows tile the image
        density /= cover
        logits = (probs / cover).clamp_min(torch.finfo(torch.float32).tiny).log()
    return CountingOutput(logits, density)


def default_max_pixels(device: torch.device | str) -> int:
    """The largest image (``H * W``) :func:`predict_density` runs in one pass on ``device``.

    CUDA: ``CUDA_MEMORY_FRACTION`` of the free memory reported by ``torch.cuda.mem_get_info``,
    divided by ``BYTES_PER_PIXEL`` (about 70 MP on an idle 140 GB GPU, 8 MP on a 16 GB one). Other
    devices: the fixed ``CPU_MAX_PIXELS`` (2048 x 2048).
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(int(free * CUDA_MEMORY_FRACTION / BYTES_PER_PIXEL), 1)
    return CPU_MAX_PIXELS


def plan_inference(height: int, width: int, *, window: int | Sequence[int] | None = None,
                   stride: int | Sequence[int] | None = None, max_pixels: int | None = None,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """How :func:`predict_density` runs an ``height x width`` image.

    An explicit ``window`` or ``stride`` forces sliding windows (``stride`` defaults to ``window``,
    ``window`` to ``DEFAULT_WINDOW``). Otherwise the image runs whole when ``H * W <= max_pixels``
    (``None``: :func:`default_max_pixels` of ``device``) and in ``DEFAULT_WINDOW`` windows with
    ``DEFAULT_STRIDE`` when it does not fit.

    Returns:
        ``{"mode": "full" | "sliding", "window", "stride", "max_pixels"}`` (window and stride are None
        for a full pass).
    """
    if window is not None or stride is not None:
        win = DEFAULT_WINDOW if window is None else window
        step = win if stride is None else stride
        _check_window(win, step)
        plan = {"mode": "sliding", "window": win, "stride": step, "max_pixels": max_pixels}
    else:
        budget = default_max_pixels(device) if max_pixels is None else int(max_pixels)
        if height * width <= budget:
            plan = {"mode": "full", "window": None, "stride": None, "max_pixels": budget}
        else:
            plan = {"mode": "sliding", "window": DEFAULT_WINDOW, "stride": DEFAULT_STRIDE, "max_pixels": budget}
    log.debug("%dx%d image: %s inference (window %s, stride %s, max_pixels %s)", height, width, plan["mode"],
              plan["window"], plan["stride"], plan["max_pixels"])
    return plan


def predict_density(model: nn.Module, image: Tensor, *, window: int | Sequence[int] | None = None,
                    stride: int | Sequence[int] | None = None, max_pixels: int | None = None,
                    batch_size: int = 8) -> CountingOutput:
    """Full-image inference when the image fits the memory budget, sliding windows otherwise.

    Args:
        model: a counting model.
        image: ``(3, H, W)`` or ``(B, 3, H, W)`` float in ``[0, 1]``.
        window, stride: force sliding windows of this size and step (see :func:`plan_inference`).
        max_pixels: full-image budget ``H * W``; ``None``: :func:`default_max_pixels` of the model's device.
        batch_size: windows per forward pass on the sliding path.

    Returns:
        :class:`CountingOutput` at block level, ``(B, ·, ceil(H/8), ceil(W/8))``.
    """
    height, width = _as_batch(image).shape[-2:]
    plan = plan_inference(int(height), int(width), window=window, stride=stride, max_pixels=max_pixels,
                          device=module_device(model))
    return _run_plan(model, image, plan, batch_size)


def _run_plan(model: nn.Module, image: Tensor, plan: dict[str, Any], batch_size: int) -> CountingOutput:
    if plan["mode"] == "full":
        return predict_full(model, image)
    return predict_sliding(model, image, plan["window"], plan["stride"], batch_size=batch_size)


# ------------------------------------------------------------------------------------ evaluation
def density_levels(counts: Sequence[float] | np.ndarray, edges: Sequence[float] | None = None,
                   names: Sequence[str] = DENSITY_LEVELS) -> list[str]:
    """Name a bucket of the true count of every image.

    Args:
        counts: true counts.
        edges: ``len(names) - 1`` increasing bucket edges; a count ``c`` is in bucket ``i`` when
            ``edges[i-1] <= c < edges[i]``. ``None``: the quantiles of ``counts`` at ``1/n, ..., (n-1)/n``
            (tertiles for three names), so the levels are relative to the evaluated set and have
            about equal sizes; pass fixed edges to compare sets.
        names: bucket names, sparsest first.

    Returns:
        One name per count.
    """
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if len(names) < 1:
        raise ValueError("names must not be empty")
    if edges is None:
        qs = np.arange(1, len(names)) / len(names)
        edges = np.quantile(c, qs) if c.size else np.zeros(len(names) - 1)
    edges = np.asarray(edges, dtype=np.float64).reshape(-1)
    if edges.size != len(names) - 1:
        raise ValueError(f"{len(names)} names need {len(names) - 1} edges, got {edges.size}")
    if np.any(np.diff(edges) < 0):
        raise ValueError(f"edges must be increasing, got {edges.tolist()}")
    return [names[i] for i in np.searchsorted(edges, c, side="right")]


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class EvalResult:
    """What :func:`evaluate_model` returns.

    Attributes:
        metrics: ``mae``, ``rmse``, ``nae``, ``images`` (labelled images), ``unlabelled_images``;
            top-label ``ece`` over all blocks and ``nonempty_ece`` over the blocks with at least one
            head, ``classwise_ece`` over all blocks, ``block_accuracy``, ``nonempty_block_accuracy``,
            ``blocks``, ``nonempty_blocks``.
        per_image: one row per image: ``name``, ``labelled``, ``true_count``, ``pred_count``,
            ``error`` (pred - true), ``abs_error``, ``density_level``, ``brightness`` (mean pixel
            value in ``[0, 1]``), ``height``, ``width``, ``inference`` (``"full"``/``"sliding"``).
            Unlabelled rows have NaN true counts and errors and the level ``"unlabelled"``.
        settings: how the evaluation ran (windows, budget, bins, protocol); saved with the metrics.
        reliability: pooled top-label reliability statistics of all blocks (None without blocks).
        reliability_nonempty: the same over the non-empty blocks.
        reliability_classwise: pooled classwise statistics of all blocks (its ``ece`` is
            ``metrics["classwise_ece"]``).
    """

    metrics: dict[str, float | int]
    per_image: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    reliability: ReliabilityStats | None = None
    reliability_nonempty: ReliabilityStats | None = None
    reliability_classwise: ReliabilityStats | None = None

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``per_image.csv`` and ``metrics.json`` (``{"metrics": ..., "settings": ...}``, NaN as
        null) into ``folder``, each atomically.

        Returns:
            ``{"per_image": path, "metrics": path}``.
        """
        folder = Path(folder)
        csv = atomic_write_bytes(folder / "per_image.csv", self.per_image.to_csv(index=False).encode("utf-8"))
        meta = atomic_write_json(folder / "metrics.json",
                                 _json_ready({"metrics": self.metrics, "settings": self.settings}))
        return {"per_image": csv, "metrics": meta}


def evaluate_model(model: nn.Module, dataset: Any, *, device: torch.device | str = "cpu",
                   window: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
                   max_pixels: int | None = None, bin_config: Any = None, batch_size: int = 8,
                   n_bins: int = 10, density_edges: Sequence[float] | None = None,
                   protocol: str | None = None, num_workers: int = 0, progress: bool = False) -> EvalResult:
    """Predict every image of ``dataset`` and measure counts and block calibration.

    Each image runs through :func:`predict_density` (whole, or in sliding windows when it exceeds the
    budget or ``window``/``stride`` is given). Calibration uses the block probabilities of that
    output: on the sliding path these are the window probabilities averaged over the covering
    windows. Unlabelled samples (``meta["labelled"] is False``) are predicted and listed but left
    out of every metric.

    Args:
        model: a counting model; moved to ``device``.
        dataset: a map-style dataset of ``(image (3, H, W), points (N, 2), meta)`` samples, e.g.
            ``QNRFDataset(root, "test")``; read one image at a time (sizes differ).
        device: where to run.
        window, stride, max_pixels, batch_size: see :func:`predict_density`.
        bin_config: bins for the calibration targets; ``None``: ``model.bin_config``. Without either,
            the calibration metrics are NaN.
        n_bins: confidence bins of the reliability statistics.
        density_edges: fixed edges for :func:`density_levels`; ``None``: tertiles of the labelled counts.
        protocol: ``"official"`` or ``"heldout"``, recorded in ``settings`` with its label.
        num_workers: ``DataLoader`` workers for reading images.
        progress: show a progress bar.

    Returns:
        :class:`EvalResult`.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .data.transforms import collate_crowd
    from .losses._common import as_padded_points
    from .losses.hybrid import block_targets

    if protocol is not None:
        protocol_label(protocol)  # validates
    bin_config = getattr(model, "bin_config", None) if bin_config is None else bin_config
    device = torch.device(device)
    model.to(device)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate_crowd, num_workers=num_workers)
    all_blocks, nonempty_blocks = ReliabilityAccumulator(n_bins), ReliabilityAccumulator(n_bins)
    classwise = ReliabilityAccumulator(n_bins, kind="classwise")
    rows: list[dict[str, Any]] = []
    for index, batch in enumerate(tqdm(loader, desc="evaluate", disable=not progress)):
        meta = batch.meta[0] if batch.meta else {}
        image = batch.images.to(device)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        plan = plan_inference(height, width, window=window, stride=stride, max_pixels=max_pixels, device=device)
        out = _run_plan(model, image, plan, batch_size)
        labelled = meta.get("labelled", True) is not False
        true = float(batch.points[0].shape[0]) if labelled else math.nan
        pred = float(out.density.float().sum())
        rows.append({"name": str(meta.get("name", index)), "labelled": labelled, "true_count": true,
                     "pred_count": pred, "error": pred - true, "abs_error": abs(pred - true),
                     "brightness": float(image.float().mean()), "height": height, "width": width,
                     "inference": plan["mode"]})
        if labelled and bin_config is not None:
            points = [p.to(device) for p in batch.points]
            probs, classes = block_probabilities(out.logits, points, bin_config)
            padded, mask = as_padded_points(points, 1, device)
            counts, _ = block_targets(padded, mask, tuple(out.logits.shape[-2:]), bin_config)
            nonempty = counts.reshape(-1) >= 1
            all_blocks.add(probs, classes)
            classwise.add(probs, classes)
            if bool(nonempty.any()):
                nonempty_blocks.add(probs[nonempty], classes[nonempty])
    per_image = pd.DataFrame(rows, columns=["name", "labelled", "true_count", "pred_count", "error", "abs_error",
                                            "density_level", "brightness", "height", "width", "inference"])
    labelled_rows = per_image["labelled"].to_numpy(dtype=bool)
    levels = np.full(len(per_image), "unlabelled", dtype=object)
    if labelled_rows.any():
        levels[labelled_rows] = density_levels(per_image.loc[labelled_rows, "true_count"], density_edges)
    per_image["density_level"] = levels
    metrics: dict[str, float | int] = dict(count_metrics(per_image.loc[labelled_rows, "pred_count"],
                                                         per_image.loc[labelled_rows, "true_count"]))
    reliability, reliability_ne, reliability_cw = all_blocks.result(), nonempty_blocks.result(), classwise.result()
    metrics.update(
        unlabelled_images=int((~labelled_rows).sum()),
        ece=reliability.ece if reliability is not None else math.nan,
        nonempty_ece=reliability_ne.ece if reliability_ne is not None else math.nan,
        classwise_ece=reliability_cw.ece if reliability_cw is not None else math.nan,
        block_accuracy=all_blocks.accuracy(), nonempty_block_accuracy=nonempty_blocks.accuracy(),
        blocks=all_blocks.blocks, nonempty_blocks=nonempty_blocks.blocks)
    modes = per_image["inference"].value_counts().to_dict()
    settings: dict[str, Any] = {
        "window": window, "stride": stride, "max_pixels": max_pixels, "batch_size": batch_size,
        "n_bins": n_bins, "device": str(device), "density_edges": None if density_edges is None else list(density_edges),
        "inference_modes": {str(k): int(v) for k, v in modes.items()},
        "calibration": "block probabilities of the prediction (averaged over covering windows on the sliding path)"
        if bin_config is not None else "skipped: no bin_config",
    }
    if protocol is not None:
        settings.update(protocol=protocol, protocol_label=protocol_label(protocol))
    log.debug("evaluated %d image(s): MAE %.3f, RMSE %.3f", metrics["images"], metrics["mae"], metrics["rmse"])
    return EvalResult(metrics, per_image, settings, reliability, reliability_ne, reliability_cw)
