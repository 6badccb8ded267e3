"""Notebook 04's small experiment: the same short training with each loss, then count error and calibration.

Every run starts from the same seed (initial weights, crops and batch order), so the losses are the
only difference. These are minutes of CPU from random initialisation: they show the mechanics and
the protocol, not which loss is better (notebook 04 says so). Full training is
:class:`gigacount_lib.train.Trainer`; the evaluation is :func:`gigacount_lib.evaluate.evaluate_model`.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

import torch
from torch import nn

from ..steps import configure_optimizer, train_steps
from ..utils import get_logger

__all__ = ["short_training", "crowd_loaders", "compare_losses", "evaluation_summary"]

log = get_logger("losses.experiment")


def evaluation_summary(result) -> dict[str, Any]:
    """An :class:`~gigacount_lib.evaluate.EvalResult` as one flat dict: its metrics (``mae, rmse, ece,
    classwise_ece, block_accuracy, nonempty_block_accuracy, images, ...``) and the reliability
    statistics ``reliability``, ``reliability_nonempty``, ``reliability_classwise`` (objects: drop
    the ``reliability*`` keys before writing JSON)."""
    return {**result.metrics, "reliability": result.reliability, "reliability_nonempty": result.reliability_nonempty,
            "reliability_classwise": result.reliability_classwise}


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
    """Train loader (one official-augmentation crop per image, shuffled with a seeded generator) and the
    test dataset (full images, for :func:`gigacount_lib.evaluate.evaluate_model`)."""
    from torch.utils.data import DataLoader

    from ..data.datasets import QNRFDataset
    from ..data.transforms import collate_crowd, eval_transforms, train_transforms

    train = QNRFDataset(data_root, "train", transform=train_transforms(crop_size, num_crops=1))
    test = QNRFDataset(data_root, "test", transform=eval_transforms(), max_size=max_test_size)
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate_crowd,
                              generator=gen, drop_last=True)
    return train_loader, test


def compare_losses(loss_fns: dict[str, nn.Module], train_loader, test_set, bin_config, *, steps: int,
                   model_name: str = "gigacount", lr: float = 1e-4, device: torch.device | str = "cpu",
                   seed: int = 0, use_autocast: bool = False) -> dict[str, dict[str, Any]]:
    """Train one fresh random-init model per loss on the same budget and data order; evaluate each on
    ``test_set`` (a dataset of full images) with :func:`gigacount_lib.evaluate.evaluate_model`.

    Every run starts from the same seed (same initial weights, same crops and batches), so the
    losses are the only difference. Returns ``{name: {"history", "train_time_s", **evaluation_summary}}``
    (``mae``, ``rmse``, ``ece``, ``classwise_ece``, ..., see :func:`evaluation_summary`).
    """
    from ..evaluate import evaluate_model
    from ..models import build_model
    from ..utils import seed_everything

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
        metrics = evaluation_summary(evaluate_model(model, test_set, device=device, bin_config=bin_config))
        metrics["train_time_s"] = time.perf_counter() - start
        results[name] = {"history": history, **metrics}
        log.info("%s: MAE %.2f, ECE %.3f after %d steps", name, metrics["mae"], metrics["ece"], steps)
    return results
