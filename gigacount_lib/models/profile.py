"""Parameter and FLOP accounting for the counting models (used by ``benchmarks/bench_models.py`` and notebook 03).

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one image (batch 1,
``eval`` mode, no grad). It counts matmuls and convolutions (2 FLOPs per multiply-accumulate) and
ignores element-wise operations, normalisation and pooling. Papers that quote fvcore-style "GFLOPs"
count one FLOP per multiply-accumulate: halve our numbers before comparing with them. The frozen
text tower is not run in the forward pass (its prototypes are precomputed), so it contributes
parameters but no FLOPs.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn

__all__ = ["count_parameters", "count_flops", "model_row", "markdown_table"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, size: int | tuple[int, int], batch: int = 1) -> int:
    """Total FLOPs of ``model(torch.zeros(batch, 3, H, W))`` (eval, no grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (size, size) if isinstance(size, int) else size
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, 3, h, w, device=next(model.parameters()).device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def model_row(name: str, model: nn.Module, flop_sizes: Sequence[int] = (224, 512)) -> dict:
    """One table row: parameter counts (millions are derived when formatting) and GFLOPs per size."""
    summary = model.parameter_summary()
    row = {"model": name, **summary}
    for s in flop_sizes:
        row[f"gflops_{s}"] = count_flops(model, s) / 1e9
    return row


def _m(n: int | float) -> str:
    return f"{n / 1e6:.2f}"


def markdown_table(rows: Iterable[dict], flop_sizes: Sequence[int] = (224, 512)) -> str:
    """Markdown table of :func:`model_row` rows (plus ``step_s`` when present)."""
    rows = list(rows)
    has_step = any("step_s" in r for r in rows)
    head = ["model", "trainable (M)", "frozen in model (M)", "frozen text tower (M)", "total (M)"]
    head += [f"GFLOPs {s}²" for s in flop_sizes]
    if has_step:
        head.append("train step s, median (min), B=4, 224², CPU")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["model"], _m(r["trainable"]), _m(r["frozen_in_model"]), _m(r["frozen_text_tower"]), _m(r["total"])]
        cells += [f"{r[f'gflops_{s}']:.1f}" if f"gflops_{s}" in r and not math.isnan(r[f"gflops_{s}"]) else "–"
                  for s in flop_sizes]
        if has_step:
            if "step_s" not in r:
                cells.append("–")
            elif "step_min_s" in r:
                cells.append(f"{r['step_s']:.2f} (min {r['step_min_s']:.2f})")
            else:
                cells.append(f"{r['step_s']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
