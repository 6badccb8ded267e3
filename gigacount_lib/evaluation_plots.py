"""Figures of notebook 06: error analysis, density maps of the best and worst images, calibration, ablation.

The inputs are what :func:`gigacount_lib.evaluate.evaluate_model` and :mod:`gigacount_lib.ablation`
return: ``EvalResult.per_image`` tables (one per model, keyed by a label), ``ReliabilityStats`` and
the ablation table. A single-panel function takes an ``ax`` and returns it; a multi-panel one takes
an optional ``fig`` and returns it; nothing is saved here (use :func:`gigacount_lib.viz.save_figure`).
Besides the figures, the few helpers that prepare their inputs: :func:`evaluate_checkpoint` (a
checkpoint on the test split of the data it was trained on, as ``gigacount eval`` does),
:func:`brightness_bins`, :func:`error_by_group`, :func:`best_and_worst` and :func:`collect_examples`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .evaluate import DENSITY_LEVELS, REDUCTION
from .viz import panel_grid, show_image, show_map, show_points

__all__ = ["evaluate_checkpoint", "brightness_bins", "error_by_group", "plot_error_by_density",
           "plot_error_by_brightness",
           "plot_error_analysis", "best_and_worst", "collect_examples", "plot_density_examples",
           "plot_reliability_comparison", "plot_ablation"]


# ------------------------------------------------------------------------------- inputs
def evaluate_checkpoint(path, *, device="cpu", split: str = "test", data_root=None, trained_only: bool = False,
                        max_images: int | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a split of the data it was trained on, with its own evaluation windows.

    The dataset, its preprocessing and the windows come from the checkpoint's config (as in
    ``gigacount eval``); ``data_root`` replaces the config's root. The mean-count predictor's MAE uses
    ``train_mean_count`` from the run's ``summary.json`` when it is beside the checkpoint.
    ``trained_only`` (``split="train"``): only the images the run trained on, i.e. without its held-out
    validation images and within its ``max_train_images``. ``max_images``: the first ones only.

    Returns:
        ``{"result": EvalResult, "model", "dataset", "config" (dict), "window", "stride",
        "trivial_mae", "ratio"}`` (the last two NaN without a training mean).
    """
    import json
    import math
    from pathlib import Path

    from .checkpoint import build_model_from_checkpoint, load_checkpoint
    from .data.datasets import build_dataset
    from .evaluate import evaluate_model

    blob = load_checkpoint(path)
    config = blob["config"]
    data = config["data"]
    kwargs = {k: data[k] for k in ("min_size", "max_size") if data.get(k) is not None}
    if data["dataset"] == "synthetic":
        kwargs.update(quick=data.get("synthetic_quick", False), seed=0)
    dataset = build_dataset(data["dataset"], data_root if data_root is not None else data["root"], split, **kwargs)
    indices = list(range(len(dataset)))
    if trained_only:
        if split != "train":
            raise ValueError(f"evaluate_checkpoint: trained_only needs split='train', got {split!r}")
        if config.get("protocol", "heldout") == "heldout":
            from .evaluate import heldout_split

            indices, _ = heldout_split(len(dataset), data.get("val_fraction", 0.1), config.get("seed", 0))
        if data.get("max_train_images"):
            indices = indices[:data["max_train_images"]]
    if max_images is not None:
        indices = indices[:max_images]
    if len(indices) < len(dataset):
        from torch.utils.data import Subset

        dataset = Subset(dataset, indices)
    model = build_model_from_checkpoint(blob, device=device)
    window = config.get("eval_window")
    stride = (config.get("eval_stride") or window) if window else None
    result = evaluate_model(model, dataset, device=device, window=window, stride=stride,
                            protocol=config.get("protocol"))
    trivial = math.nan
    summary = Path(path).parent / "summary.json"
    if summary.is_file():
        mean = json.loads(summary.read_text()).get("train_mean_count")
        if mean is not None:
            true = result.per_image.loc[result.per_image["labelled"], "true_count"].to_numpy(dtype=float)
            trivial = float(np.abs(true - float(mean)).mean()) if true.size else math.nan
    ratio = result.metrics["mae"] / trivial if trivial and math.isfinite(trivial) else math.nan
    return {"result": result, "model": model, "dataset": dataset, "config": config, "window": window,
            "stride": stride, "trivial_mae": trivial, "ratio": ratio}


# ------------------------------------------------------------------------------- error analysis
def brightness_bins(brightness: Sequence[float], n_bins: int = 3, edges: Sequence[float] | None = None):
    """Bucket images by mean brightness, darkest first.

    Args:
        brightness: mean pixel value in ``[0, 1]`` per image (``per_image["brightness"]``).
        n_bins: number of buckets when ``edges`` is None: quantiles of ``brightness``, so about equal sizes.
        edges: ``n_bins + 1`` increasing edges (pass the edges of one model to the others, so that the
            same images land in the same bucket).

    Returns:
        ``(labels, edges)``: a label per image (``"0.12-0.25"``, the bucket's range) and the edges.
    """
    b = np.asarray(brightness, dtype=np.float64).reshape(-1)
    if edges is None:
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        edges = np.quantile(b, np.linspace(0, 1, n_bins + 1)) if b.size else np.linspace(0, 1, n_bins + 1)
    edges = np.asarray(edges, dtype=np.float64).reshape(-1)
    if edges.size < 2 or np.any(np.diff(edges) < 0):
        raise ValueError(f"edges must be at least 2 increasing values, got {edges.tolist()}")
    names = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]
    index = np.clip(np.searchsorted(edges, b, side="right") - 1, 0, len(names) - 1)
    return [names[i] for i in index], edges


def _tidy(results: Mapping[str, Any], n_bins: int = 3):
    """The labelled rows of every per-image table, with ``model`` and a shared ``brightness_bin``."""
    import pandas as pd

    if not results:
        raise ValueError("results is empty: pass {label: EvalResult.per_image, ...}")
    frames = []
    for label, table in results.items():
        table = getattr(table, "per_image", table)
        missing = {"abs_error", "error", "density_level", "brightness"} - set(table.columns)
        if missing:
            raise ValueError(f"results[{label!r}] lacks the per-image columns {sorted(missing)}")
        labelled = table[table["labelled"]] if "labelled" in table else table
        frames.append(labelled.assign(model=label))
    tidy = pd.concat(frames, ignore_index=True)
    first = frames[0]["brightness"].to_numpy(dtype=float)  # the same images: one set of edges for all
    _, edges = brightness_bins(first, n_bins)
    tidy["brightness_bin"], _ = brightness_bins(tidy["brightness"].to_numpy(dtype=float), edges=edges)
    return tidy, [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]


def error_by_group(results: Mapping[str, Any], by: str = "density_level", n_bins: int = 3):
    """MAE, mean signed error (pred - true) and image count per model and group, as a table.

    ``by`` is ``"density_level"`` (the tertiles of :func:`gigacount_lib.evaluate.density_levels`) or
    ``"brightness_bin"`` (:func:`brightness_bins` of the first model's images).
    """
    if by not in ("density_level", "brightness_bin"):
        raise ValueError(f"by must be 'density_level' or 'brightness_bin', got {by!r}")
    tidy, order = _tidy(results, n_bins)
    import pandas as pd

    groups = [g for g in DENSITY_LEVELS if g in set(tidy[by])] if by == "density_level" else order
    tidy[by] = pd.Categorical(tidy[by], categories=groups, ordered=True)
    tidy["model"] = pd.Categorical(tidy["model"], categories=list(results), ordered=True)
    grouped = tidy.groupby(["model", by], sort=True, observed=True)
    table = grouped.agg(images=("abs_error", "size"), mae=("abs_error", "mean"), mean_error=("error", "mean"),
                        true_mean=("true_count", "mean")).reset_index()
    table["model"], table[by] = table["model"].astype(str), table[by].astype(str)
    return table


def plot_error_by_density(ax, results: Mapping[str, Any], order: Sequence[str] = DENSITY_LEVELS):
    """Absolute count error per density level (bars: mean, whiskers: standard error), one colour per model."""
    import seaborn as sns

    tidy, _ = _tidy(results)
    order = [o for o in order if o in set(tidy["density_level"])]
    sns.barplot(data=tidy, x="density_level", y="abs_error", hue="model", order=order, errorbar="se", ax=ax)
    ax.set_xlabel("density level (tertiles of the true count)")
    ax.set_ylabel("|predicted - true| count")
    ax.set_title("error against density")
    return ax


def plot_error_by_brightness(ax, results: Mapping[str, Any], n_bins: int = 3):
    """Absolute count error per brightness bucket (darkest left), one line per model."""
    import seaborn as sns

    tidy, order = _tidy(results, n_bins)
    sns.pointplot(data=tidy, x="brightness_bin", y="abs_error", hue="model", order=order, errorbar="se",
                  dodge=0.2, ax=ax)
    ax.set_xlabel("mean image brightness (buckets of equal size, darkest left)")
    ax.set_ylabel("|predicted - true| count")
    ax.set_title("error against brightness")
    return ax


def plot_error_analysis(results: Mapping[str, Any], fig=None, n_bins: int = 3, title: str | None = None):
    """Two panels: :func:`plot_error_by_density` and :func:`plot_error_by_brightness`."""
    fig, axes = panel_grid(fig, 1, 2, (12, 4.2))
    plot_error_by_density(axes[0, 0], results)
    plot_error_by_brightness(axes[0, 1], results, n_bins)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- best and worst images
def best_and_worst(per_image, k: int = 2):
    """The ``k`` images with the smallest and the ``k`` with the largest absolute count error.

    The best are taken among images with at least one head (predicting ~0 on an empty image says little);
    the rows keep their index, which is the dataset index (``evaluate_model`` reads the dataset in order).
    Returns the rows with a column ``rank`` (``"best 1"``, ..., ``"worst 1"``, ...), best first.
    """
    table = getattr(per_image, "per_image", per_image)
    labelled = table[table["labelled"]] if "labelled" in table else table
    if len(labelled) == 0:
        raise ValueError("best_and_worst: no labelled image")
    crowded = labelled[labelled["true_count"] > 0]
    best = (crowded if len(crowded) else labelled).nsmallest(k, "abs_error")
    worst = labelled.drop(index=best.index, errors="ignore").nlargest(k, "abs_error")
    import pandas as pd

    return pd.concat([best.assign(rank=[f"best {i + 1}" for i in range(len(best))]),
                      worst.assign(rank=[f"worst {i + 1}" for i in range(len(worst))])])


def collect_examples(model, dataset, rows, *, window=None, stride=None, device="cpu") -> list[dict[str, Any]]:
    """Predicted and ground-truth block maps of the images in ``rows`` (e.g. :func:`best_and_worst`).

    Each example: ``name``, ``rank``, ``image`` ``(3, H, W)``, ``points``, ``true`` / ``pred`` (counts),
    ``gt_map`` (heads per 8x8 block, :func:`gigacount_lib.data.density.block_count_map`) and
    ``pred_map`` (the model's density per block, the same grid), so the two maps compare cell by cell.
    """
    from .data.density import block_count_map
    from .evaluate import predict_density

    model = model.to(device)
    examples = []
    for index, row in rows.iterrows():
        image, points, meta = dataset[int(index)]
        out = predict_density(model, image.to(device), window=window, stride=stride)
        pred_map = out.density[0, 0].float().cpu()
        gt_map = block_count_map(points, tuple(image.shape[-2:]), REDUCTION)
        examples.append({"name": str(meta.get("name", index)), "rank": str(row.get("rank", "")), "image": image,
                         "points": points, "true": float(points.shape[0]), "pred": float(pred_map.sum()),
                         "gt_map": gt_map, "pred_map": pred_map})
    return examples


def plot_density_examples(examples: Sequence[Mapping[str, Any]], fig=None):
    """One row per example: the image with its annotated heads, the ground-truth and the predicted
    density per 8x8 block, side by side on one colour scale per row."""
    if not examples:
        raise ValueError("plot_density_examples: no examples")
    fig, axes = panel_grid(fig, len(examples), 3, (12, 3.2 * len(examples)))
    for row, ex in enumerate(examples):
        gt = np.asarray(ex["gt_map"].numpy() if hasattr(ex["gt_map"], "numpy") else ex["gt_map"], dtype=float)
        pred = np.asarray(ex["pred_map"].numpy() if hasattr(ex["pred_map"], "numpy") else ex["pred_map"], dtype=float)
        vmax = max(float(gt.max(initial=0.0)), float(pred.max(initial=0.0)), 1e-6)
        show_image(axes[row, 0], ex["image"], f"{ex.get('rank', '')}: {ex.get('name', '')}".strip(": "))
        show_points(axes[row, 0], ex["points"], size=4)
        show_map(axes[row, 1], gt, f"ground truth: {ex['true']:.0f} heads", cmap="magma", vmin=0, vmax=vmax)
        show_map(axes[row, 2], pred, f"predicted: {ex['pred']:.1f} (error {ex['pred'] - ex['true']:+.1f})",
                 cmap="magma", vmin=0, vmax=vmax)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- calibration
def plot_reliability_comparison(stats: Mapping[str, Sequence[Any]], fig=None):
    """Two reliability diagrams: all blocks (left) and the blocks with at least one head (right).

    Args:
        stats: ``{model label: (all-block stats, non-empty-block stats)}``, e.g.
            ``(result.reliability, result.reliability_nonempty)``; a None entry is skipped.
    """
    from .losses.plots import plot_reliability

    if not stats:
        raise ValueError("plot_reliability_comparison: no models")
    fig, axes = panel_grid(fig, 1, 2, (11, 4.5))
    titles = ("all blocks (mostly empty)", "blocks with at least one head")
    for col, title in enumerate(titles):
        ax = axes[0, col]
        blocks = []
        for i, (label, pair) in enumerate(stats.items()):
            s = pair[col]
            if s is None:
                continue
            plot_reliability(ax, s, label=label, color=f"C{i}")
            used = s.count.numpy() > 0  # bins with accuracy 0 draw no bar: mark (confidence, accuracy) too
            ax.plot(s.confidence.numpy()[used], s.accuracy.numpy()[used], "o", color=f"C{i}", ms=6, clip_on=False,
                    zorder=5)
            blocks.append(int(s.count.sum()))
        ax.set_title(f"{title}: {max(blocks) if blocks else 0:,} blocks")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- ablation
def plot_ablation(table, fig=None, metric: str = "test_mae", references: Mapping[str, str] | None = None,
                  title: str | None = None):
    """The Table-3 plot: one panel per axis, each seed a dot, the mean ± std over seeds a black bar.

    Args:
        table: the tidy ablation table (:func:`gigacount_lib.ablation.run_ablation` / ``read_table``);
            unfinished runs are left out.
        metric: the column to plot (``test_mae``, ``ratio``, ...).
        references: axis -> reference variant, marked ``*`` (default: :data:`gigacount_lib.ablation.AXES`).
        title: the figure's title (say what the data and the budget were).
    """
    import seaborn as sns

    from .ablation import AXES, FINISHED_STATUSES

    if references is None:
        references = {name: axis.reference for name, axis in AXES.items()}
    ok = table[table["status"].isin(FINISHED_STATUSES)]
    if len(ok) == 0:
        raise ValueError("plot_ablation: no finished run in the table")
    axes_names = list(dict.fromkeys(ok["axis"]))
    widths = [max(2, ok[ok["axis"] == a]["variant"].nunique()) for a in axes_names]
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(max(6.0, 1.6 * sum(widths)), 4.5))
    panels = fig.subplots(1, len(axes_names), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    for ax, name in zip(panels, axes_names):
        part = ok[ok["axis"] == name].copy()
        order = list(dict.fromkeys(part["variant"]))
        ref = references.get(name)
        labels = {v: (f"{v} *" if v == ref else v) for v in order}
        part["label"] = part["variant"].map(labels)
        order = [labels[v] for v in order]
        sns.stripplot(data=part, x="label", y=metric, order=order, color="C0", size=6, jitter=0.1, ax=ax)
        sns.pointplot(data=part, x="label", y=metric, order=order, errorbar="sd", color="black",
                      linestyle="none", markers="_", capsize=0.2, ax=ax)
        if metric == "test_mae" and "trivial_mae" in part and part["trivial_mae"].notna().any():
            ax.axhline(float(part["trivial_mae"].mean()), color="grey", ls="--", lw=1, label="mean-count predictor")
            if ax is panels[0]:
                ax.legend(loc="upper right", fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("")
        ax.set_ylabel(metric if ax is panels[0] else "")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title or f"ablation: {metric}, mean ± std over seeds (* = the paper's choice)")
    fig.tight_layout()
    return fig
