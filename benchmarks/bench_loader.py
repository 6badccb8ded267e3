"""Data-loading throughput of the training loader against the training throughput of the ``cpu`` preset's step.

Usage::

    .venv/bin/python benchmarks/bench_loader.py                  # writes benchmarks/results/loader.json
    .venv/bin/python benchmarks/bench_loader.py --workers 0 2 4 --batches 20
    .venv/bin/python benchmarks/bench_loader.py --quick --no-write  # smoke run, writes nothing

Is the loader the bottleneck of a CPU run? Everything follows the preset
(``gigacount_lib.config.get_preset("cpu")`` by default, ``--preset`` to choose): the embedded synthetic
dataset (training split, generated once and cached), the official augmentation
(``train_transforms(crop_size, preset="official", num_crops=...)``), its batch size, and
``gigacount_lib.data.loaders.training_loader`` with ``num_workers`` 0 and 2. Before timing, every
training image is read once (the preprocessing and the OS file cache are warm, as after the first epoch).

Variants, timed in round-robin (a repetition of each in turn, ``--batches`` batches per repetition):

* ``loader_wN``: a fresh iterator of the loader with N workers; the first batch (worker start-up) is
  left out, then the images per second of the next batches, nothing else running;
* ``train``: the preset's training step (its model from random init, loss, AdamW, autocast and
  gradient clipping, ``train.train_step``) on one fixed batch from the loader, images per second.

``loader_over_train`` above 1 means the loader alone makes images faster than the step consumes
them. With ``num_workers=0`` loading and training take turns, so ``serial_images_per_s`` (one over the
sum of the two times per image) is what a run gets and ``loading_share`` the part of its time spent
loading; with workers the loading overlaps the step, but on a 2-core machine the workers compete with
the step's threads for the cores, so the standalone numbers are upper bounds there.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, finish, header, markdown_table, ratio, resolve_device, set_threads, time_round_robin, write  # noqa: E402

from gigacount_lib.binning import BinConfig  # noqa: E402
from gigacount_lib.config import get_preset  # noqa: E402
from gigacount_lib.data.datasets import build_dataset  # noqa: E402
from gigacount_lib.data.loaders import EpochSampler, training_loader  # noqa: E402
from gigacount_lib.data.transforms import train_transforms  # noqa: E402
from gigacount_lib.losses import build_loss  # noqa: E402
from gigacount_lib.models import build_model  # noqa: E402
from gigacount_lib.steps import configure_optimizer, make_grad_scaler, train_step  # noqa: E402


class LoaderCase:
    """``training_loader`` with ``num_workers`` workers; each call times ``batches`` batches of a fresh iterator."""

    def __init__(self, dataset, transform, batch_size: int, num_workers: int, batches: int, seed: int) -> None:
        self.sampler = EpochSampler(range(len(dataset)), batch_size, seed=seed)
        self.loader = training_loader(dataset, transform, self.sampler, num_workers=num_workers, seed=seed)
        self.batch_size, self.epoch = batch_size, 0
        # one batch is left out of each repetition (start-up), so an epoch must hold batches + 1
        self.batches = max(1, min(batches, self.sampler.batches_per_epoch() - 1))

    def __call__(self) -> float:
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        iterator = iter(self.loader)
        next(iterator)
        t0 = time.perf_counter()
        for _ in range(self.batches):
            next(iterator)
        elapsed = time.perf_counter() - t0
        del iterator  # stops the workers
        return elapsed / self.batches  # seconds per batch


class TrainCase:
    """The preset's training step on one fixed batch; each call runs ``steps`` steps."""

    def __init__(self, config, batch, device: torch.device, steps: int) -> None:
        m, o = config.model, config.optim
        bins = getattr(BinConfig, m.bins)() if hasattr(BinConfig, m.bins) else BinConfig.load(m.bins)
        torch.manual_seed(config.seed)
        self.model = build_model(m.name, bins, pretrained=m.pretrained, **m.options).to(device)
        self.loss_fn = build_loss(config.loss.name, bins, **config.loss.options)
        self.optimizer = configure_optimizer(self.model, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas),
                                             decay_all=o.decay_all)
        self.scaler = make_grad_scaler(device, o.amp)
        self.batch, self.device, self.amp, self.clip, self.steps = batch.to(device), device, o.amp, o.grad_clip, steps

    def __call__(self) -> float:
        t0 = time.perf_counter()
        for _ in range(self.steps):
            train_step(self.model, self.batch, self.loss_fn, self.optimizer, device=self.device,
                       use_autocast=self.amp, grad_clip=self.clip, scaler=self.scaler)
        return (time.perf_counter() - t0) / self.steps  # seconds per batch


def run(args: argparse.Namespace, argv) -> dict[str, Any]:
    set_threads(args.threads)
    device = resolve_device(args.device)
    config = get_preset(args.preset)
    c = config.data
    if c.dataset != "synthetic":
        raise SystemExit(f"bench_loader: preset {args.preset!r} trains on {c.dataset!r}; this benchmark uses the "
                         "embedded synthetic dataset, choose a preset that does (cpu, cpu-quick)")
    batch_size = args.batch_size or c.batch_size
    result = header("bench_loader.py", argv, (
        f"images per second of training_loader (synthetic train split, augmentation {c.augmentation!r}, crop "
        f"{c.crop_size}, {c.num_crops} crops per image, batch {batch_size} images) with num_workers {args.workers}, "
        f"against the {args.preset!r} preset's training step ({config.model.name}, {config.loss.name} loss, "
        f"amp={config.optim.amp}) on {device}; medians over round-robin repetitions"))
    synthetic_quick = args.quick or c.synthetic_quick
    dataset = build_dataset("synthetic", c.root, "train", quick=synthetic_quick, seed=0)
    transform = train_transforms(c.crop_size, preset=c.augmentation, num_crops=c.num_crops)
    for i in range(len(dataset)):  # warm the preprocessing and file caches, as after one epoch
        dataset[i]
    loaders = {f"loader_w{w}": LoaderCase(dataset, transform, batch_size, w, args.batches, config.seed)
               for w in args.workers}
    first = next(iter(training_loader(dataset, transform, EpochSampler(range(len(dataset)), batch_size,
                                                                      seed=config.seed), seed=config.seed)))
    fns = {**loaders, "train": TrainCase(config, first, device, args.train_steps)}
    result.update(device=str(device), preset=args.preset, dataset={"name": "synthetic", "quick": synthetic_quick,
                                                                   "images": len(dataset)},
                  batch_images=batch_size, batch_crops=int(first.images.shape[0]),
                  settings={k: getattr(args, k) for k in ("workers", "batches", "train_steps", "warmup", "min_reps",
                                                          "max_reps", "budget")})
    timed = time_round_robin(fns, warmup=args.warmup, min_reps=args.min_reps, max_reps=args.max_reps,
                             budget_s=args.budget, device=device, self_timed=True)
    rows = []
    for name, t in timed.items():
        per_batch = t["median_s"]
        rows.append({"variant": name, "num_workers": loaders[name].loader.num_workers if name in loaders else None,
                     "status": t["status"], "batch_s": per_batch, "batch_times_s": t["times_s"],
                     "images_per_s": ratio(batch_size, per_batch),
                     "crops_per_s": ratio(int(first.images.shape[0]), per_batch)})
    train = next(r for r in rows if r["variant"] == "train")
    for row in rows:
        if row["variant"] != "train":
            row["loader_over_train"] = ratio(row["images_per_s"], train["images_per_s"])
            row["bottleneck"] = None if row["loader_over_train"] is None else row["loader_over_train"] < 1
            if row["num_workers"] == 0 and row["batch_s"] and train["batch_s"]:
                row["serial_images_per_s"] = batch_size / (row["batch_s"] + train["batch_s"])
                row["loading_share"] = row["batch_s"] / (row["batch_s"] + train["batch_s"])
    result["rows"] = rows
    result["markdown"] = markdown_table(rows, [
        ("variant", "variant", "s"), ("s / batch", "batch_s", ".3f"), ("images/s", "images_per_s", ".1f"),
        ("crops/s", "crops_per_s", ".1f"), ("loader/train", "loader_over_train", ".2f"),
        ("loader is the bottleneck", "bottleneck", "s"), ("serial images/s", "serial_images_per_s", ".1f"),
        ("loading share", "loading_share", ".0%"), ("status", "status", "s")])
    return finish(result)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", help="training preset (default: %(default)s)")
    p.add_argument("--workers", nargs="+", type=int, default=[0, 2], help="num_workers values (default: 0 2)")
    p.add_argument("--batch-size", type=int, default=0, help="images per batch (0: the preset's)")
    p.add_argument("--batches", type=int, default=10, help="loader batches per repetition")
    p.add_argument("--train-steps", type=int, default=3, help="training steps per repetition")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument("--max-reps", type=int, default=7)
    p.add_argument("--budget", type=float, default=60.0, help="seconds after which no new round starts")
    p.add_argument("--device", default="cpu", help="device of the training step: cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the small synthetic set, batch 2, 2 batches and 1 step per repetition, 1 repetition")
    p.add_argument("--out", default=str(RESULTS / "loader.json"))
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv=None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick:
        args.batch_size = args.batch_size or 2
        args.batches, args.train_steps, args.warmup, args.min_reps, args.max_reps = 2, 1, 0, 1, 1
    result = run(args, argv)
    print(result["markdown"])
    write(result, args.out, args.no_write, "bench_loader")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
