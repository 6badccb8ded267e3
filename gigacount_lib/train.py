"""A minimal training step: forward, loss, backward, gradient clipping and an AdamW step (nanoGPT style).

Each stage is a small named function so that the full Trainer (exact resume, DDP, schedules) can reuse
them::

    optimizer = configure_optimizer(model, lr=1e-4, weight_decay=1e-4)
    scaler = make_grad_scaler(device, use_autocast=True)  # active only for float16 autocast
    for batch in loader:                                  # CrowdBatch from collate_crowd
        stats = train_step(model, batch, loss_fn, optimizer, device=device,
                           use_autocast=True, grad_clip=1.0, scaler=scaler)

``loss_fn`` is one of :mod:`gigacount_lib.losses` (``AdaptiveHybridLoss``, ``DACELoss`` take the logits
and the density; ``DMCountLoss`` only the density). Under ``use_autocast`` the forward pass runs in
:func:`gigacount_lib.utils.autocast_dtype` (bfloat16 on CPU and recent GPUs, float16 on older GPUs) and
the loss in float32. float16 gradients underflow without loss scaling, so float16 autocast needs a
``torch.amp.GradScaler`` that lives across steps: :func:`make_grad_scaler` gives one that is active
only then (a pass-through otherwise), and :func:`train_steps` / :func:`short_training` make it.

:func:`short_training` and :func:`evaluate` are the small experiment used by notebook 04 (calibration with
and without L_Prob, DACE against the Adaptive Hybrid loss on the same budget).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from typing import Any, Iterable

import torch
from torch import nn

from .utils import autocast_dtype, get_logger

__all__ = ["configure_optimizer", "autocast_context", "make_grad_scaler", "compute_loss", "forward_and_loss",
           "check_finite", "backward", "gradient_norm", "clip_gradients", "optimizer_step", "train_step", "train_steps",
           "evaluate", "short_training", "crowd_loaders", "compare_losses"]

log = get_logger("train")


def configure_optimizer(model: nn.Module, lr: float = 1e-4, weight_decay: float = 1e-4,
                        betas: tuple[float, float] = (0.9, 0.999), *, decay_all: bool = False) -> torch.optim.AdamW:
    """AdamW over the trainable parameters.

    Args:
        lr, weight_decay, betas: AdamW's.
        decay_all: decay every parameter, biases and norms included, as the official GigaCount code
            does (``AdamW(model.parameters(), weight_decay=1e-4)``). ``False`` (the common
            convention, nanoGPT and timm) decays only matrices and kernels (``ndim >= 2``).

    Frozen parameters (``requires_grad=False``, e.g. the CLIP ViT tower of ``clip_ebc_vit_b16``) are left
    out; the text prototypes are a buffer, not a parameter, so they never reach the optimizer.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all:
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def autocast_context(device: torch.device, enabled: bool):
    """``torch.autocast`` in the device's mixed-precision dtype, or a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=autocast_dtype(device))


def make_grad_scaler(device: torch.device | str, use_autocast: bool) -> torch.amp.GradScaler:
    """A ``GradScaler`` enabled only for float16 autocast; disabled, its methods pass through."""
    device = torch.device(device)
    enabled = use_autocast and autocast_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=enabled)


def compute_loss(loss_fn: nn.Module, output, batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Call ``loss_fn`` with what it needs from a ``CountingOutput`` and a ``CrowdBatch``."""
    from .losses import DMCountLoss

    if isinstance(loss_fn, DMCountLoss):
        return loss_fn(output.density, batch.points, batch.image_size)
    return loss_fn(output.logits, output.density, batch.points, batch.image_size)


def forward_and_loss(model: nn.Module, batch, loss_fn: nn.Module, *, use_autocast: bool = False):
    """Forward pass and loss (the loss itself is float32 even under autocast). Returns ``(loss, terms)``."""
    device = batch.images.device
    with autocast_context(device, use_autocast):
        output = model(batch.images)
    return compute_loss(loss_fn, output, batch)


def check_finite(terms: dict[str, float]) -> None:
    """Refuse a non-finite loss (uses the already-synced logged value: no extra host sync)."""
    if not math.isfinite(terms["loss"]):
        raise FloatingPointError(f"non-finite loss {terms['loss']} (terms {terms}); refusing to back-propagate")


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler | None = None) -> None:
    """``loss.backward()``, through ``scaler`` (loss scaling) when one is given."""
    (scaler.scale(loss) if scaler is not None else loss).backward()


def gradient_norm(model: nn.Module, max_norm: float | None) -> torch.Tensor:
    """Global gradient norm before clipping, as a tensor (no host sync); clips to ``max_norm`` unless None."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm is None:  # measuring only: no pass over the gradients to multiply them by 1
        total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
        grads = [p.grad for p in params]
        if total_norm is not None:
            return total_norm(grads)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm to ``max_norm`` (``None``: only measure it); returns the norm before clipping."""
    return float(gradient_norm(model, max_norm))


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> None:
    """``optimizer.step()`` (via ``scaler``, which skips steps with inf/NaN gradients) and ``zero_grad``."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(model: nn.Module, batch, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, *,
               device: torch.device | str = "cpu", use_autocast: bool = False,
               grad_clip: float | None = None, scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One optimisation step on one ``CrowdBatch``: returns the loss terms, ``grad_norm`` and ``time_s``.

    ``scaler``: required for float16 autocast (see :func:`make_grad_scaler`); gradients are unscaled
    before clipping, so ``grad_norm`` is the true norm. The norm is read back after the optimizer
    step has been queued (the loss terms were already read once, for :func:`check_finite`).
    """
    start = time.perf_counter()
    device = torch.device(device)
    if scaler is None and use_autocast and autocast_dtype(device) == torch.float16:
        raise ValueError(f"train_step: float16 autocast on {device} needs loss scaling; pass "
                         f"scaler=make_grad_scaler(device, use_autocast=True), created once for all steps")
    model.train()
    batch = batch.to(device)
    loss, terms = forward_and_loss(model, batch, loss_fn, use_autocast=use_autocast)
    check_finite(terms)
    backward(loss, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = gradient_norm(model, grad_clip)
    optimizer_step(optimizer, scaler)
    return {**terms, "grad_norm": float(grad_norm), "time_s": time.perf_counter() - start}


def train_steps(model: nn.Module, loader: Iterable, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, *,
                steps: int | None = None, device: torch.device | str = "cpu", use_autocast: bool = False,
                grad_clip: float | None = None, log_every: int = 0) -> list[dict[str, float]]:
    """Run :func:`train_step` over ``loader`` (cycled when ``steps`` exceeds one pass); returns the history.

    One :func:`make_grad_scaler` serves all the steps.
    """
    scaler = make_grad_scaler(device, use_autocast)
    if steps is None:
        batches: Iterable = loader
    else:
        batches = itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), steps)
    history = []
    for i, batch in enumerate(batches):
        stats = train_step(model, batch, loss_fn, optimizer, device=device, use_autocast=use_autocast,
                           grad_clip=grad_clip, scaler=scaler)
        history.append(stats)
        if log_every and (i + 1) % log_every == 0:
            log.info("step %d: loss %.4f (%.2fs)", i + 1, stats["loss"], stats["time_s"])
    return history


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, bin_config, device: torch.device | str = "cpu",
             n_bins: int = 10) -> dict[str, Any]:
    """Image-count MAE/RMSE and block-level calibration over a loader of ``CrowdBatch``.

    Returns ``mae, rmse``, top-label ``ece`` and ``classwise_ece`` of the bin probabilities, the block
    accuracy (all blocks, and blocks with at least one head), and the reliability statistics.
    """
    from .losses.calibration import block_probabilities, reliability_stats

    model.eval()
    errors, probs, classes = [], [], []
    for batch in loader:
        batch = batch.to(device)
        out = model(batch.images)
        pred = out.density.float().flatten(1).sum(-1).cpu()
        errors.append(pred - torch.tensor([float(p.shape[0]) for p in batch.points]))
        p, cls = block_probabilities(out.logits, batch.points, bin_config)
        probs.append(p.cpu())
        classes.append(cls.cpu())
    err = torch.cat(errors)
    probs_all, classes_all = torch.cat(probs), torch.cat(classes)
    stats = reliability_stats(probs_all, classes_all, n_bins=n_bins)
    classwise = reliability_stats(probs_all, classes_all, n_bins=n_bins, kind="classwise")
    nonempty = classes_all > 0
    return {"mae": float(err.abs().mean()), "rmse": math.sqrt(float(err.pow(2).mean())), "ece": stats.ece,
            "classwise_ece": classwise.ece,
            "block_accuracy": float((probs_all.argmax(1) == classes_all).double().mean()),
            "nonempty_block_accuracy": float((probs_all.argmax(1) == classes_all)[nonempty].double().mean())
            if bool(nonempty.any()) else float("nan"),
            "reliability": stats, "reliability_classwise": classwise, "images": int(err.numel())}


def short_training(model: nn.Module, loss_fn: nn.Module, train_loader: Iterable, *, steps: int, lr: float = 1e-4,
                   weight_decay: float = 1e-4, device: torch.device | str = "cpu", use_autocast: bool = False,
                   grad_clip: float | None = 1.0, seed: int = 0) -> list[dict[str, float]]:
    """Train ``model`` for ``steps`` AdamW steps with ``loss_fn`` (seeded); returns the per-step history."""
    torch.manual_seed(seed)
    model.to(device)
    optimizer = configure_optimizer(model, lr=lr, weight_decay=weight_decay)
    return train_steps(model, train_loader, loss_fn, optimizer, steps=steps, device=device,
                       use_autocast=use_autocast, grad_clip=grad_clip)


def crowd_loaders(data_root, *, crop_size: int, batch_size: int, seed: int = 0, max_test_size: int | None = None):
    """Train loader (random crops, shuffled with a seeded generator) and test loader (batch 1, full images)."""
    from torch.utils.data import DataLoader

    from .data.datasets import QNRFDataset
    from .data.transforms import collate_crowd, eval_transforms, train_transforms

    train = QNRFDataset(data_root, "train", transform=train_transforms(crop_size))
    test = QNRFDataset(data_root, "test", transform=eval_transforms(), max_size=max_test_size)
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate_crowd,
                              generator=gen, drop_last=True)
    test_loader = DataLoader(test, batch_size=1, shuffle=False, collate_fn=collate_crowd)
    return train_loader, test_loader


def compare_losses(loss_fns: dict[str, nn.Module], train_loader, test_loader, bin_config, *, steps: int,
                   model_name: str = "gigacount", lr: float = 1e-4, device: torch.device | str = "cpu",
                   seed: int = 0, use_autocast: bool = False) -> dict[str, dict[str, Any]]:
    """Train one fresh random-init model per loss on the same budget and data order; evaluate each.

    Every run starts from the same seed (same initial weights, same crops and batches), so the
    losses are the only difference. Returns ``{name: {"history", "mae", "rmse", "ece", ...}}``.
    """
    from .models import build_model
    from .utils import seed_everything

    results = {}
    for name, loss_fn in loss_fns.items():
        seed_everything(seed)
        generator = getattr(train_loader, "generator", None)
        if generator is not None:  # same shuffling order for every loss
            generator.manual_seed(seed)
        model = build_model(model_name, bin_config, pretrained=None).to(device)
        start = time.perf_counter()
        history = short_training(model, loss_fn, train_loader, steps=steps, lr=lr, device=device, seed=seed,
                                 use_autocast=use_autocast)
        metrics = evaluate(model, test_loader, bin_config, device=device)
        metrics["train_time_s"] = time.perf_counter() - start
        results[name] = {"history": history, **metrics}
        log.info("%s: MAE %.2f, ECE %.3f after %d steps", name, metrics["mae"], metrics["ece"], steps)
    return results
