"""Training configuration as dataclasses, with named presets (notebook 05).

A run is described by one :class:`TrainConfig`; :func:`get_preset` returns a fresh copy of a preset
and :meth:`TrainConfig.override` changes fields by dotted name (``"optim.lr=1e-3"``). The resolved
config is saved beside every run (``config.json``) together with library versions, the git commit,
the seed and the weights policy, so a run can be repeated from its folder alone.

Presets:

* ``cpu-quick``: a few minutes on 2 CPU cores; tests and CI.
* ``cpu``: about 30 minutes on 2 CPU cores on the synthetic data (a documented CPU compromise).
* ``colab-t4``: the official recipe at a batch that fits a 16 GB T4.
* ``paper``: the official recipe exactly (see CONTRIBUTING.md, "The official training recipe").
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["parse_assignment", "DataConfig", "ModelConfig", "OptimConfig", "ScheduleConfig", "LossConfig", "TrainConfig",
           "PRESETS", "get_preset", "list_presets"]


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", value)`` with the value parsed as JSON, else kept as a string."""
    if "=" not in item:
        raise ValueError(f"override {item!r}: expected FIELD=VALUE, e.g. optim.lr=1e-3")
    key, raw = item.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


@dataclass
class DataConfig:
    """What to train on and how batches are made.

    ``batch_size`` counts *images*; each gives ``num_crops`` crops, so a step sees
    ``batch_size * num_crops`` crops (the official 24 x 2 = 48).
    """

    dataset: str = "synthetic"  # qnrf | sha | shb | nwpu | jhu | synthetic
    root: str | None = None  # dataset root; None = the embedded synthetic dataset
    synthetic_quick: bool = False  # the small synthetic set (48 + 16 images) instead of 300 + 100
    crop_size: int = 224
    num_crops: int = 2
    augmentation: str = "official"  # a name of data.transforms.AUGMENTATION_PRESETS
    batch_size: int = 24
    num_workers: int = 0
    min_size: int | None = None  # CLIP-EBC's QNRF preprocessing: shorter side >= 448
    max_size: int | None = None  # ... and longer side <= 2048
    val_fraction: float = 0.1  # held-out share of the training images (protocol "heldout")
    max_eval_images: int | None = None  # evaluate on the first N images only (quick runs)
    max_train_images: int | None = None  # train on the first N training images only (tests, overfitting checks)


@dataclass
class ModelConfig:
    """Which registered model to build (:func:`gigacount_lib.models.build_model`)."""

    name: str = "gigacount"
    pretrained: bool | None = True  # None = random init (explicit, recorded)
    bins: str = "gigacount_qnrf"  # a BinConfig classmethod name, or a path to a bin JSON file
    options: dict[str, Any] = field(default_factory=dict)  # builder keyword arguments


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 1e-4
    decay_all: bool = True  # the official code decays every parameter
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    amp: bool = True  # float16 + GradScaler on older GPUs, bfloat16 elsewhere (utils.autocast_dtype)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule; ``unit`` says whether its lengths count epochs or optimiser steps.

    ``name``: ``none``, ``step`` (multiply by ``gamma`` every ``step_size``), ``cosine`` (to
    ``eta_min`` over the run), ``linear`` (to ``eta_min`` over the run), ``official`` (linear
    warm-up from ``warmup_start_lr`` for ``warmup`` units, then cosine with warm restarts of period
    ``t0`` and multiplier ``t_mult`` down to ``eta_min``). ``warmup`` applies to all but ``none``.
    """

    name: str = "official"
    unit: str = "epoch"  # epoch | step
    warmup: int = 20
    warmup_start_lr: float = 1e-5
    t0: int = 80
    t_mult: int = 1
    eta_min: float = 5e-6
    step_size: int = 100
    gamma: float = 0.5


@dataclass
class LossConfig:
    name: str = "hybrid"  # losses.build_loss names: hybrid | dace | dmcount
    options: dict[str, Any] = field(default_factory=lambda: {"mode": "reference"})  # DM-Count OT mode


@dataclass
class TrainConfig:
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    epochs: int = 600
    max_minutes: float | None = None  # stop (with a checkpoint) after this much training time
    eval_every: int = 5  # epochs
    protocol: str = "heldout"  # heldout | official (see gigacount_lib.evaluate)
    patience: int | None = 20  # evaluations without improvement before stopping; None = never
    eval_window: int | None = 224  # sliding-window evaluation (official 224/224); None = full image
    eval_stride: int | None = 224
    max_bad_batches: int = 5  # consecutive non-finite batches before the run stops
    log_every: int = 10  # steps between progress-bar refreshes of the loss terms
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error naming them."""
        parts = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
                 "loss": LossConfig}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}")
        for key, value in data.items():
            if key in parts:
                sub_known = {f.name for f in dataclasses.fields(parts[key])}
                bad = sorted(set(value) - sub_known)
                if bad:
                    raise ValueError(f"TrainConfig.{key}: unknown field(s) {bad}")
                if "betas" in value:
                    value = {**value, "betas": tuple(value["betas"])}
                kwargs[key] = parts[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def override(self, *assignments: str) -> "TrainConfig":
        """A copy with ``"section.field=value"`` assignments applied (values parsed as JSON, else strings)."""
        data = self.to_dict()
        for item in assignments:
            key, value = parse_assignment(item)
            target = data
            *path, last = key.strip().split(".")
            for name in path:
                if not isinstance(target.get(name), dict):
                    raise ValueError(f"override {item!r}: {name!r} is not a config section")
                target = target[name]
            if last not in target:
                raise ValueError(f"override {item!r}: no field {key!r}")
            target[last] = value
        return TrainConfig.from_dict(data)


def _paper() -> TrainConfig:
    return TrainConfig(preset="paper", data=DataConfig(dataset="qnrf", min_size=448, max_size=2048),
                       protocol="official")


def _colab_t4() -> TrainConfig:
    config = _paper()
    config.preset = "colab-t4"
    config.data.batch_size = 8  # 16 crops of 224² per step fit a 16 GB T4 with fp16 AMP
    config.data.num_workers = 2
    return config


def _cpu() -> TrainConfig:
    """About 30 minutes on 2 CPU cores, on the synthetic data. CPU compromises, each measured by
    ``benchmarks/cpu_recipes.py`` (notebook 05 shows the table): the narrow ``gigacount_atto``
    variant from random init; ConvNeXt layer scales initialised to 1 instead of timm's 1e-6 and no
    stochastic depth (from scratch, the residual branches must act from the first step); the head's
    temperature starting at 100 instead of 1/0.07 (random-init text prototypes are close to each
    other); no gradient clipping (the summed block losses give gradient norms of 1e3-1e4, so clipping
    at 1 would rescale every step to unit norm and give batches of dense crops no more weight than
    sparse ones); 128² crops; lr 2e-3 with a per-step warm-up + cosine schedule; bfloat16 autocast;
    sliding-window evaluation with the crop size; the held-out protocol."""
    return TrainConfig(
        preset="cpu", epochs=110, max_minutes=30.0, eval_every=10, patience=None, eval_window=128,
        eval_stride=128, device="cpu",
        data=DataConfig(dataset="synthetic", crop_size=128, num_crops=2, batch_size=8, augmentation="official"),
        model=ModelConfig(name="gigacount_atto", pretrained=None,
                          options={"ls_init_value": 1.0, "drop_path_rate": 0.0, "logit_scale_init": 4.60517}),
        optim=OptimConfig(lr=2e-3, weight_decay=1e-4, decay_all=False, grad_clip=None, amp=True),
        schedule=ScheduleConfig(name="cosine", unit="step", warmup=100, warmup_start_lr=1e-5, eta_min=1e-5),
    )


def _cpu_quick() -> TrainConfig:
    config = _cpu()
    config.preset = "cpu-quick"
    config.epochs, config.max_minutes, config.eval_every = 2, 5.0, 1
    config.data.synthetic_quick = True
    config.data.crop_size, config.data.batch_size = 96, 4
    config.eval_window = config.eval_stride = 96
    config.data.max_eval_images = 8
    config.schedule.warmup = 5
    config.optim.amp = False
    return config


PRESETS = {"cpu-quick": _cpu_quick, "cpu": _cpu, "colab-t4": _colab_t4, "paper": _paper}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> TrainConfig:
    """A fresh copy of the preset ``name``; an unknown name is an error that lists the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name]())
