"""The stages of one training step (nanoGPT style): forward, loss, backward, gradient clipping, an AdamW
step; and the optimiser and learning-rate schedule builders.

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
only then (a pass-through otherwise), and :func:`train_steps` makes it.

The full loop, :class:`gigacount_lib.train.Trainer` (notebook 05), is built from these stages and
re-exports them; notebook 04's short loss comparison is :mod:`gigacount_lib.losses.experiment`.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import time
from typing import Iterable

import torch
from torch import nn

from .utils import autocast_dtype, get_logger

__all__ = ["configure_optimizer", "autocast_context", "make_grad_scaler", "compute_loss", "forward_and_loss",
           "check_finite", "backward", "gradient_norm", "clip_gradients", "optimizer_step", "train_step", "train_steps",
           "build_scheduler", "norm_statistics", "restore_norm_statistics"]

log = get_logger("train")


def configure_optimizer(model: nn.Module, lr: float = 1e-4, weight_decay: float = 1e-4,
                        betas: tuple[float, float] = (0.9, 0.999), *, decay_all: bool = False,
                        fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over the trainable parameters.

    Args:
        lr, weight_decay, betas: AdamW's.
        decay_all: decay every parameter, biases and norms included, as the official GigaCount code
            does (``AdamW(model.parameters(), weight_decay=1e-4)``). ``False`` (the common
            convention, nanoGPT and timm) decays only matrices and kernels (``ndim >= 2``).
        fused: torch's fused AdamW kernel (the same update in one pass per tensor: 12 ms against 39 ms
            per step for gigacount's 21M parameters on 2 CPU cores); ``None`` uses it where every
            parameter is on the CPU or a CUDA GPU, ``False`` is the plain ``for``-loop/foreach AdamW.

    Frozen parameters (``requires_grad=False``, e.g. the CLIP ViT tower of ``clip_ebc_vit_b16``) are left
    out; the text prototypes are a buffer, not a parameter, so they never reach the optimizer.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all:
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if fused is None:
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


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
    """``loss_fn(output, batch)``: every loss takes the ``CountingOutput`` and the ``CrowdBatch``."""
    return loss_fn(output, batch)


def forward_and_loss(model: nn.Module, batch, loss_fn: nn.Module, *, use_autocast: bool = False):
    """Forward pass under autocast, then ``loss_fn(output, batch)`` (the loss itself is float32 even
    under autocast). Returns ``(loss, terms)``."""
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


def gradient_norm(model: nn.Module) -> torch.Tensor:
    """Global L2 norm of the gradients, as a tensor (no host sync); the gradients are not changed."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def clip_gradients(model: nn.Module, max_norm: float | None) -> torch.Tensor:
    """Scale the gradients so that their global norm is at most ``max_norm`` (``None``: leave them);
    returns the norm *before* clipping, as a tensor (no host sync)."""
    if max_norm is None:
        return gradient_norm(model)
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


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
    grad_norm = clip_gradients(model, grad_clip)
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


def build_scheduler(optimizer: torch.optim.Optimizer, config, total: int):
    """The learning-rate schedule of ``config`` (:class:`~gigacount_lib.config.ScheduleConfig`) over ``total`` units.

    Built from ``torch.optim.lr_scheduler``: a ``LinearLR`` warm-up from ``warmup_start_lr`` joined by
    ``SequentialLR`` to ``ConstantLR`` (none), ``StepLR`` (step), ``CosineAnnealingLR`` (cosine),
    ``LinearLR`` (linear) or ``CosineAnnealingWarmRestarts`` (official).
    """
    from torch.optim import lr_scheduler as S

    base_lr = optimizer.param_groups[0]["lr"]
    warmup = 0 if config.name == "none" else max(0, min(int(config.warmup), total - 1))
    rest = max(1, total - warmup)
    if config.name == "none":
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif config.name == "step":
        main = S.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    elif config.name == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=rest, eta_min=config.eta_min)
    elif config.name == "linear":
        main = S.LinearLR(optimizer, start_factor=1.0, end_factor=config.eta_min / base_lr, total_iters=rest)
    elif config.name == "official":
        main = S.CosineAnnealingWarmRestarts(optimizer, T_0=config.t0, T_mult=config.t_mult, eta_min=config.eta_min)
    else:
        raise ValueError(f"unknown schedule {config.name!r}; choose none, step, cosine, linear or official")
    if warmup == 0:
        return main
    start = S.LinearLR(optimizer, start_factor=config.warmup_start_lr / base_lr, end_factor=1.0, total_iters=warmup)
    return S.SequentialLR(optimizer, [start, main], milestones=[warmup])


def norm_statistics(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of every normalisation buffer (BatchNorm running mean/var/count), to undo a bad forward pass."""
    bn_types = (nn.modules.batchnorm._NormBase,)
    return [(b, b.detach().clone()) for m in model.modules() if isinstance(m, bn_types) for b in m.buffers()]


def restore_norm_statistics(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)
