"""Figures for notebook 03: feature maps per scale, attention maps, text-prototype similarity, predictions.

Each function takes tensors for *one* image (batch index 0 is used when a batch is passed). The
multi-panel figures take an optional ``fig`` and return it, the similarity matrix takes an optional
``ax`` and returns it (the convention of :mod:`gigacount_lib.viz`); nothing is saved here (use
:func:`gigacount_lib.viz.save_figure`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..binning import BinConfig
from ..viz import panel_grid, show_image, show_map

__all__ = ["architecture_rows", "plot_feature_scales", "plot_attention_maps", "plot_fused_map",
           "plot_prototype_similarity", "plot_prediction"]


def _first(x: Tensor) -> Tensor:
    x = x.detach().float().cpu()
    return x[0] if x.ndim == 4 else x


def architecture_rows(model, images: Tensor) -> list[dict]:
    """Stage-by-stage shapes of a :class:`~gigacount_lib.models.gigacount.GigaCount` forward pass.

    Returns rows ``{"stage", "shape", "stride"}`` (shape without the batch dimension).
    """
    from .gigacount import GigaCount

    if not isinstance(model, GigaCount):
        raise ValueError(f"architecture_rows: expects a GigaCount model, got {type(model).__name__}")
    h_in, w_in = images.shape[-2:]
    x = model.prepare(images)
    with torch.no_grad():
        inter = model.forward_intermediates(x)
        out = model(images)
    hp = x.shape[-2]
    rows = [{"stage": "input image", "shape": tuple(images.shape[1:]), "stride": 1},
            {"stage": f"normalised + padded to a multiple of {model.pad_multiple}", "shape": tuple(x.shape[1:]),
             "stride": 1}]
    for i, f in enumerate(inter["encoder"]):
        name = "ConvNeXt stem + stage 1" if i == 0 else f"ConvNeXt stage {i + 1}"
        rows.append({"stage": name, "shape": tuple(f.shape[1:]), "stride": hp // f.shape[-2]})
    for s, f in zip(model.scales, inter["attended"]):
        rows.append({"stage": f"attention block on map {s + 1} (ODConv)", "shape": tuple(f.shape[1:]),
                     "stride": hp // f.shape[-2]})
    rows.append({"stage": "upsampled to stride 4 + concatenated", "shape": tuple(inter["fused_stride4"].shape[1:]),
                 "stride": hp // inter["fused_stride4"].shape[-2]})
    rows.append({"stage": "2x2 average pool (fused map)", "shape": tuple(inter["fused"].shape[1:]),
                 "stride": hp // inter["fused"].shape[-2]})
    rows.append({"stage": "BasicBlock decoder", "shape": tuple(inter["decoded"].shape[1:]),
                 "stride": hp // inter["decoded"].shape[-2]})
    rows.append({"stage": "1x1 projection to the CLIP width", "shape": tuple(inter["features"].shape[1:]),
                 "stride": hp // inter["features"].shape[-2]})
    rows.append({"stage": f"logits, cropped to ceil({h_in}/8) x ceil({w_in}/8)", "shape": tuple(out.logits.shape[1:]),
                 "stride": 8})
    rows.append({"stage": "density = softmax(logits) · anchors", "shape": tuple(out.density.shape[1:]), "stride": 8})
    return rows


def plot_feature_scales(image: Tensor, maps: Sequence[Tensor], titles: Sequence[str] | None = None,
                        n_channels: int = 3, fig=None):
    """Row 1: the image and the mean |activation| of each map; rows 2..: a few single channels per map.

    The channels shown are those with the largest spatial variance (the most structured ones).
    """
    maps = [_first(m) for m in maps]
    titles = list(titles) if titles else [f"map {i}" for i in range(len(maps))]
    cols = len(maps) + 1
    fig, axes = panel_grid(fig, 1 + n_channels, cols, (3.2 * cols, 2.6 * (1 + n_channels)))
    show_image(axes[0, 0], image[0] if image.ndim == 4 else image, "input")
    for r in range(1, 1 + n_channels):
        axes[r, 0].set_axis_off()
    for j, (m, title) in enumerate(zip(maps, titles), start=1):
        show_map(axes[0, j], m.abs().mean(0), f"{title}\nmean |activation|", cmap="magma")
        order = m.flatten(1).var(dim=1).argsort(descending=True)[:n_channels]
        for r, c in enumerate(order.tolist(), start=1):
            show_map(axes[r, j], m[c], f"channel {c}", cmap="viridis", colorbar=False)
    fig.tight_layout()
    return fig


def plot_attention_maps(image: Tensor, channel_atts: Sequence[Tensor], spatial_atts: Sequence[Tensor],
                        titles: Sequence[str], fig=None):
    """Top: spatial attention ``σ(conv7x7(mean_c x))`` per scale; bottom: sorted channel weights per scale."""
    n = len(spatial_atts)
    fig, axes = panel_grid(fig, 2, n + 1, (3.4 * (n + 1), 6.0))
    show_image(axes[0, 0], image[0] if image.ndim == 4 else image, "input")
    axes[1, 0].set_axis_off()
    for j, (ca, sa, title) in enumerate(zip(channel_atts, spatial_atts, titles), start=1):
        show_map(axes[0, j], _first(sa)[0], f"{title}\nspatial attention", cmap="inferno")
        weights = _first(ca).flatten().sort(descending=True).values.numpy()
        axes[1, j].plot(np.arange(len(weights)), weights)
        axes[1, j].set_ylim(0, 1)
        axes[1, j].set_xlabel("channel (sorted)")
        axes[1, j].set_ylabel("σ(ReLU(W · avgpool(x)))")
        axes[1, j].set_title(f"{title}: channel attention ({len(weights)} ch)")
    fig.tight_layout()
    return fig


def plot_fused_map(fused: Tensor, groups: Sequence[int], names: Sequence[str], fig=None):
    """The fused map: mean |activation| of each scale's channel group and of all channels."""
    f = _first(fused)
    bounds = np.cumsum([0, *groups])
    fig, axes = panel_grid(fig, 1, len(groups) + 1, (3.4 * (len(groups) + 1), 3.0))
    axes = axes[0]
    for j, name in enumerate(names):
        part = f[bounds[j]:bounds[j + 1]]
        show_map(axes[j], part.abs().mean(0), f"{name}\nchannels {bounds[j]}-{bounds[j + 1] - 1}", cmap="magma")
    show_map(axes[-1], f.abs().mean(0), f"all {f.shape[0]} channels", cmap="magma")
    fig.tight_layout()
    return fig


def plot_prototype_similarity(prototypes: Tensor, prompts: Sequence[str], title: str, ax=None):
    """Cosine-similarity matrix of L2-normalised text prototypes, annotated. Returns the ``ax``."""
    p = torch.nn.functional.normalize(prototypes.detach().float().cpu(), dim=-1)
    sim = (p @ p.T).numpy()
    k = len(prompts)
    if ax is None:
        ax = panel_grid(None, 1, 1, (1.1 * k + 3.5, 0.9 * k + 1.5))[1][0, 0]
    fig = ax.figure
    im = ax.imshow(sim, cmap="viridis", vmin=min(0.0, float(sim.min())), vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center",
                    color="white" if sim[i, j] < 0.8 else "black", fontsize=8)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels([f"bin {i}" for i in range(k)])
    ax.set_yticklabels(prompts, fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return ax


def plot_prediction(image: Tensor, logits: Tensor, density: Tensor, bin_config: BinConfig, points=None,
                    fig=None):
    """Image, most likely bin per block, its probability, and the density (expected count per block)."""
    from ..viz import show_points

    lg, dens = _first(logits), _first(density)[0]
    probs = lg.softmax(0)
    fig, axes = panel_grid(fig, 1, 4, (16, 3.6))
    axes = axes[0]
    show_image(axes[0], image[0] if image.ndim == 4 else image, "input")
    if points is not None:
        show_points(axes[0], points, size=4)
    show_map(axes[1], probs.argmax(0), "most likely bin", cmap="tab10", vmin=0, vmax=max(bin_config.num_bins - 1, 1))
    show_map(axes[2], probs.max(0).values, "its probability", cmap="viridis", vmin=0, vmax=1)
    show_map(axes[3], dens, f"density (Σ = {float(dens.sum()):.1f})", cmap="jet")
    fig.tight_layout()
    return fig
