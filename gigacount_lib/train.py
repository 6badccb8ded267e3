"""Training: :class:`Trainer`, one readable loop over the stages of :mod:`gigacount_lib.steps` (notebook 05).

Each feature (AMP, clipping, schedules, bad-batch guard, exact resume, signals, DDP, evaluation,
checkpoints) is a small named method::

    from gigacount_lib.config import get_preset
    from gigacount_lib.train import train
    summary = train(get_preset("cpu-quick"), "runs/quick")   # or Trainer(config, out_dir).fit()

The step stages (``configure_optimizer``, ``train_step``, ``build_scheduler``, ...) live in
:mod:`gigacount_lib.steps` and are re-exported here.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from .steps import (autocast_context, backward, build_scheduler, check_finite, clip_gradients, compute_loss,
                    configure_optimizer, forward_and_loss, gradient_norm, make_grad_scaler, norm_statistics,
                    optimizer_step, restore_norm_statistics, train_step, train_steps)
from .utils import autocast_dtype, get_logger, mixed_precision_available

__all__ = ["configure_optimizer", "autocast_context", "make_grad_scaler", "compute_loss", "forward_and_loss",
           "check_finite", "backward", "gradient_norm", "clip_gradients", "optimizer_step", "train_step", "train_steps",
           "build_scheduler", "norm_statistics", "restore_norm_statistics", "StopTraining", "Trainer", "train"]

log = get_logger("train")


class StopTraining(Exception):
    """Raised inside the loop to end the run with a message (too many bad batches)."""


class Trainer:
    """Train a counting model as a :class:`~gigacount_lib.config.TrainConfig` says, into ``out_dir``.

    ``out_dir`` receives ``config.json`` + ``run.json`` (versions, git commit, seed, weights policy),
    ``last.pt`` (every epoch and at any interruption), ``best_mae.pt`` / ``best_rmse.pt``,
    ``log.csv`` (one row per epoch), ``summary.json`` and, when TensorBoard is installed, its events.
    ``Trainer(config, out_dir, resume=True).fit()`` continues from ``last.pt`` bit for bit.
    """

    def __init__(self, config, out_dir, *, resume: bool = False, progress: bool = True) -> None:
        from pathlib import Path

        self.config, self.out_dir, self.progress = config, Path(out_dir), progress
        self.resume_requested = resume
        self.stop_reason: str | None = None
        self.history: list[dict[str, Any]] = []

    # -------------------------------------------------------------------- set-up steps
    def setup_distributed(self) -> None:
        """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (nccl on CUDA, gloo on CPU).

        A group that already exists (made by the caller) is used as it is and left running at the end;
        one made here is destroyed at the end of :meth:`fit`. On ranks other than 0 the library's
        log shows warnings and errors only (rank 0 logs for the run).
        """
        import logging

        from . import distributed as D

        self.world_size, self.rank, self.local_rank = D.env_world()
        self.distributed = self.world_size > 1
        device_type = "cuda" if torch.cuda.is_available() and self.config.device != "cpu" else "cpu"
        self.owns_process_group = D.init_distributed(device_type) if self.distributed else False
        if self.distributed:
            self.world_size, self.rank = D.get_world_size(), D.get_rank()
        self.is_main = self.rank == 0
        self.log_level = None
        if not self.is_main:
            root = get_logger()
            self.log_level = root.level
            root.setLevel(max(root.level, logging.WARNING))

    def teardown_distributed(self) -> None:
        """Undo :meth:`setup_distributed`: the log level, and the process group if this Trainer made it."""
        from . import distributed as D

        if getattr(self, "log_level", None) is not None:
            get_logger().setLevel(self.log_level)
            self.log_level = None
        if getattr(self, "owns_process_group", False):
            D.destroy_distributed()
            self.owns_process_group = False

    def setup_device(self) -> None:
        from .utils import select_device

        device = select_device(self.config.device)
        if device.type == "cuda" and self.distributed:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.use_amp = bool(self.config.optim.amp) and mixed_precision_available(device)
        if self.config.optim.amp and not self.use_amp:
            log.warning("%s has no native bfloat16 kernels: training in float32 (optim.amp is ignored here)", device)

    def setup_data(self) -> None:
        from .data.datasets import build_dataset
        from .data.loaders import EpochSampler, training_loader
        from .data.transforms import train_transforms
        from .evaluate import heldout_split

        c = self.config.data
        kwargs: dict[str, Any] = {}
        if c.min_size is not None:
            kwargs["min_size"] = c.min_size
        if c.max_size is not None:
            kwargs["max_size"] = c.max_size
        if c.dataset == "synthetic":
            kwargs.update(quick=c.synthetic_quick, seed=0)
        train_all = build_dataset(c.dataset, c.root, "train", **kwargs)
        self.test_set = build_dataset(c.dataset, c.root, "test", **kwargs)
        if self.config.protocol == "heldout":
            train_idx, val_idx = heldout_split(len(train_all), c.val_fraction, self.config.seed)
            from torch.utils.data import Subset

            self.val_set = Subset(train_all, val_idx)
        elif self.config.protocol == "official":
            train_idx, self.val_set = list(range(len(train_all))), self.test_set
        else:
            raise ValueError(f"unknown protocol {self.config.protocol!r}; choose 'heldout' or 'official'")
        if c.max_eval_images:
            from torch.utils.data import Subset

            self.val_set = Subset(self.val_set, range(min(c.max_eval_images, len(self.val_set))))
            self.test_set = Subset(self.test_set, range(min(c.max_eval_images, len(self.test_set))))
        if c.max_train_images:
            train_idx = train_idx[:c.max_train_images]
        self.train_indices = train_idx
        counts = [len(pts) for _, pts, _ in train_all.iter_annotations()]
        self.train_mean_count = float(sum(counts[i] for i in train_idx) / max(1, len(train_idx)))
        transform = train_transforms(c.crop_size, preset=c.augmentation, num_crops=c.num_crops)
        self.sampler = EpochSampler(train_idx, c.batch_size, seed=self.config.seed, rank=self.rank,
                                    world_size=self.world_size)
        self.loader = training_loader(train_all, transform, self.sampler, num_workers=c.num_workers,
                                      pin_memory=self.device.type == "cuda", seed=self.config.seed)

    def setup_model(self) -> None:
        from .binning import BinConfig
        from .losses import build_loss
        from .models import build_model

        m = self.config.model
        if hasattr(BinConfig, m.bins):
            self.bin_config = getattr(BinConfig, m.bins)()
        else:
            self.bin_config = BinConfig.load(m.bins)
        from .distributed import convert_sync_batchnorm, local_main_first

        with local_main_first(self.local_rank):  # the first process of each node fills the weights caches
            model = build_model(m.name, self.bin_config, pretrained=m.pretrained, **m.options)
        model = model.to(self.device)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # BatchNorm statistics over the global batch: torch's SyncBatchNorm on CUDA, CPUSyncBatchNorm
            # on CPU (gloo); the state-dict keys stay those of the plain model.
            model = convert_sync_batchnorm(model, device=self.device)
            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.model = model
        self.raw_model = model.module if self.distributed else model
        o = self.config.optim
        self.optimizer = configure_optimizer(self.raw_model, lr=o.lr, weight_decay=o.weight_decay,
                                             betas=tuple(o.betas), decay_all=o.decay_all)
        s = self.config.schedule
        steps_per_epoch = self.sampler.batches_per_epoch()
        self.schedule_per_step = s.unit == "step"
        total = self.config.epochs * (steps_per_epoch if self.schedule_per_step else 1)
        self.scheduler = build_scheduler(self.optimizer, s, total)
        self.scaler = make_grad_scaler(self.device, self.use_amp)
        self.loss_fn = build_loss(self.config.loss.name, self.bin_config, **self.config.loss.options)

    def write_run_info(self) -> None:
        """``config.json`` and ``run.json``: what is needed to repeat the run."""
        import platform
        import subprocess
        from pathlib import Path

        from .utils import atomic_write_json, library_versions

        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                    cwd=str(Path(__file__).resolve().parent)).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
        atomic_write_json(self.out_dir / "config.json", self.config.to_dict())
        atomic_write_json(self.out_dir / "run.json", {
            "preset": self.config.preset, "seed": self.config.seed, "git_commit": commit or "unknown",
            "versions": library_versions(), "machine": platform.processor() or platform.machine(),
            "device": str(self.device), "world_size": self.world_size, "weights_info": self.raw_model.weights_info,
            "autocast": str(autocast_dtype(self.device)).replace("torch.", "") if self.use_amp else "off",
            "protocol": self.config.protocol, "train_images": len(self.train_indices),
            "train_mean_count": self.train_mean_count})

    # -------------------------------------------------------------------- checkpoints
    def checkpoint_payload(self, epoch: int, step_in_epoch: int) -> dict[str, Any]:
        from .checkpoint import rng_state

        return {"model_name": self.raw_model.model_name, "model_options": dict(self.config.model.options),
                "bin_config": self.bin_config.to_dict(), "config": self.config.to_dict(),
                "weights_info": self.raw_model.weights_info, "model": self.raw_model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "epoch": epoch,
                "step_in_epoch": step_in_epoch, "global_step": self.global_step, "best": dict(self.best),
                "bad_evals": self.bad_evals, "history": list(self.history), "train_seconds": self.train_seconds,
                "epoch_sums": dict(self.epoch_sums), "epoch_done": self.epoch_done}

    def save(self, name: str, epoch: int, step_in_epoch: int) -> None:
        from .checkpoint import save_checkpoint

        if self.is_main:
            save_checkpoint(self.out_dir / name, self.checkpoint_payload(epoch, step_in_epoch))

    def restore(self) -> tuple[int, int]:
        """Load ``last.pt``: model, optimiser, scheduler, scaler, RNG states and position."""
        from .checkpoint import load_checkpoint, set_rng_state

        path = self.out_dir / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {path} to resume from; start without --resume "
                                    "or point --out at the run folder")
        blob = load_checkpoint(path, model_name=self.raw_model.model_name, bin_config=self.bin_config)
        self.raw_model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.scaler.load_state_dict(blob["scaler"])
        set_rng_state(blob["rng"])
        self.global_step, self.best, self.bad_evals = blob["global_step"], dict(blob["best"]), blob["bad_evals"]
        self.history, self.train_seconds = list(blob["history"]), float(blob["train_seconds"])
        self.epoch_sums, self.epoch_done = dict(blob["epoch_sums"]), int(blob["epoch_done"])
        log.info("resumed from %s at epoch %d, step %d", path, blob["epoch"], blob["step_in_epoch"])
        return int(blob["epoch"]), int(blob["step_in_epoch"])

    # -------------------------------------------------------------------- signals
    def install_signal_handlers(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def request_stop(signum, frame):
            self.stop_reason = signal.Signals(signum).name
            log.warning("%s received: saving a resumable checkpoint at the next step", self.stop_reason)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    @staticmethod
    def restore_signal_handlers(previous) -> None:
        import signal

        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # -------------------------------------------------------------------- one step
    def guarded_step(self, batch) -> dict[str, float] | None:
        """One optimisation step, or None when the batch is non-finite (nothing is changed then).

        Inputs are checked before the forward pass. The BatchNorm statistics and the RNG state
        (stochastic depth draws from it) are saved before the forward pass and restored when the loss
        is not finite, so a bad batch leaves no trace: the run continues as if it had not been there.
        """
        self.model.train()
        batch = batch.to(self.device, non_blocking=True)
        inputs_finite = bool(torch.isfinite(batch.images).all())
        if self.distributed:  # every rank skips, or none does (the forward pass has collectives)
            inputs_finite = self.all_ranks_agree(inputs_finite)
        if not inputs_finite:
            return None
        saved = norm_statistics(self.raw_model)
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        with autocast_context(self.device, self.use_amp):
            output = self.model(batch.images)
        finite = bool(torch.isfinite(output.logits).all() & torch.isfinite(output.density).all())
        if finite:  # the losses refuse non-finite inputs, so they only see finite outputs
            loss, terms = compute_loss(self.loss_fn, output, batch)
            finite = math.isfinite(terms["loss"])
        if self.distributed:  # every rank skips, or none does (DDP needs all ranks in backward)
            finite = self.all_ranks_agree(finite)
            if finite:
                terms = self.reduce_terms(terms)
        if not finite:
            restore_norm_statistics(saved)
            torch.set_rng_state(rng[0])
            if rng[1] is not None:
                torch.cuda.set_rng_state(rng[1], self.device)
            self.optimizer.zero_grad(set_to_none=True)
            return None
        backward(loss, self.scaler)
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        grad_norm = clip_gradients(self.model, self.config.optim.grad_clip)
        optimizer_step(self.optimizer, self.scaler)
        return {**terms, "grad_norm": float(grad_norm)}

    def all_ranks_agree(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank (a collective: every rank must call it)."""
        from .distributed import all_ranks

        return all_ranks(flag)[0]

    def reduce_terms(self, terms: dict[str, float]) -> dict[str, float]:
        """Average the logged loss terms over the ranks (the gradients are averaged by DDP)."""
        from .distributed import all_reduce_mean

        return all_reduce_mean(terms)

    # -------------------------------------------------------------------- evaluation
    def evaluate(self, dataset) -> dict[str, Any]:
        from .evaluate import evaluate_model

        result = evaluate_model(self.raw_model, dataset, device=self.device, window=self.config.eval_window,
                                stride=self.config.eval_stride)
        return result

    def evaluate_and_select(self, epoch: int) -> None:
        """Evaluate on the selection split; keep the best checkpoints by MAE and by RMSE."""
        result = self.evaluate(self.val_set)
        metrics = result.metrics
        self.history[-1].update({f"val_{k}": metrics[k] for k in ("mae", "rmse", "nae")})
        improved = False
        for key in ("mae", "rmse"):
            if metrics[key] < self.best.get(key, float("inf")):
                self.best[key], self.best[f"{key}_epoch"] = metrics[key], epoch
                self.save(f"best_{key}.pt", epoch + 1, 0)
                improved = improved or key == "mae"
        self.bad_evals = 0 if improved else self.bad_evals + 1
        log.info("epoch %d: %s MAE %.2f RMSE %.2f (best MAE %.2f at epoch %d)", epoch + 1, self.selection_name,
                 metrics["mae"], metrics["rmse"], self.best["mae"], self.best["mae_epoch"] + 1)

    @property
    def selection_name(self) -> str:
        return "test (selected on test)" if self.config.protocol == "official" else "held-out validation"

    # -------------------------------------------------------------------- logging
    def write_log(self) -> None:
        import csv
        import io

        from .utils import atomic_write_bytes

        if not self.is_main or not self.history:
            return
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_bytes(self.out_dir / "log.csv", text.getvalue().encode())
        if self.tensorboard is not None:
            row = self.history[-1]
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tensorboard.add_scalar(k, v, row["epoch"])

    def open_tensorboard(self):
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # -------------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train until the epochs, the time budget, the patience or a signal ends the run; returns the summary.

        Under torchrun every rank returns rank 0's summary; the process group is destroyed at the end
        when this Trainer created it.
        """
        self.setup_distributed()
        try:
            return self._fit()
        finally:
            self.teardown_distributed()

    def _fit(self) -> dict[str, Any]:
        from .distributed import broadcast_object, local_main_first
        from .utils import seed_everything

        seed_everything(self.config.seed)
        self.setup_device()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with local_main_first(self.local_rank):  # the first process of each node fills the data caches
            self.setup_data()
        self.setup_model()
        self.global_step, self.best, self.bad_evals, self.train_seconds = 0, {}, 0, 0.0
        self.epoch_sums, self.epoch_done = {}, 0
        start_epoch, start_step = self.restore() if self.resume_requested else (0, 0)
        if not self.resume_requested and (self.out_dir / "last.pt").exists():
            raise FileExistsError(f"{self.out_dir} already holds a run (last.pt); pass --resume to continue it "
                                  "or choose another --out")
        if self.is_main:
            self.write_run_info()
        self.tensorboard = self.open_tensorboard()
        previous_handlers = self.install_signal_handlers()
        try:
            status = self.loop(start_epoch, start_step)
        finally:
            self.restore_signal_handlers(previous_handlers)
            if self.tensorboard is not None:
                self.tensorboard.close()
        summary = self.finish(status)  # evaluates and writes on rank 0 only
        # the other ranks wait here for rank 0's summary (and leave together, summary.json written)
        return broadcast_object(summary) if self.distributed else summary

    def loop(self, start_epoch: int, start_step: int) -> str:
        from tqdm.auto import tqdm

        from .distributed import any_rank

        c = self.config
        steps_per_epoch = self.sampler.batches_per_epoch()
        bad_in_a_row = 0
        for epoch in range(start_epoch, c.epochs):
            self.sampler.set_epoch(epoch)
            self.sampler.skip(start_step * c.data.batch_size)
            if start_step == 0:
                self.epoch_sums, self.epoch_done = {}, 0
            bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{c.epochs}",
                       disable=not (self.progress and self.is_main), leave=False)
            tick = time.perf_counter()
            for step, batch in enumerate(self.loader, start=start_step):
                stats = self.guarded_step(batch)
                if stats is None:
                    bad_in_a_row += 1
                    names = [m.get("name") for m in batch.meta]
                    log.warning("non-finite batch skipped at epoch %d step %d (images %s)", epoch + 1, step, names)
                    if bad_in_a_row >= c.max_bad_batches:
                        raise StopTraining(f"{bad_in_a_row} non-finite batches in a row (last: {names}); check the "
                                           "images and the learning rate, then resume from last.pt")
                else:
                    bad_in_a_row = 0
                    self.global_step += 1
                    self.epoch_done += 1
                    for k, v in stats.items():
                        self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
                    if self.schedule_per_step:
                        self.scheduler.step()
                bar.update(1)
                if stats is not None and (step % c.log_every == 0 or step == steps_per_epoch - 1):
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                now = time.perf_counter()
                self.train_seconds += now - tick
                tick = now
                over_budget = c.max_minutes is not None and self.train_seconds > 60 * c.max_minutes
                if self.distributed:  # a signal or the budget reaches the ranks at different steps: stop together
                    signalled, over_budget = any_rank(self.stop_reason is not None, over_budget)
                    if signalled and self.stop_reason is None:
                        self.stop_reason = "signal on another rank"
                if self.stop_reason and step + 1 < steps_per_epoch:
                    bar.close()  # a signal: save the exact position and leave (resume continues this epoch)
                    self.save("last.pt", epoch, step + 1)
                    return "interrupted"
                if over_budget:
                    self.stop_reason = "time budget"  # finish this epoch's bookkeeping, then stop
                    break
            bar.close()
            start_step = 0
            if not self.schedule_per_step:
                self.scheduler.step()
            row = {"epoch": epoch + 1, "step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_seconds": round(self.train_seconds, 1)}
            row.update({f"train_{k}": v / max(self.epoch_done, 1) for k, v in self.epoch_sums.items()})
            self.history.append(row)
            last_epoch = epoch + 1 == c.epochs or self.stop_reason is not None
            if self.is_main and ((epoch + 1) % c.eval_every == 0 or last_epoch):
                self.evaluate_and_select(epoch)
            self.save("last.pt", epoch + 1, 0)
            self.write_log()
            if self.stop_reason:
                return "time budget" if self.stop_reason == "time budget" else "interrupted"
            out_of_patience = c.patience is not None and self.bad_evals >= c.patience
            if self.distributed and c.patience is not None:  # rank 0 evaluates: its count decides
                out_of_patience = any_rank(out_of_patience)[0]
            if out_of_patience:
                log.info("no improvement in %d evaluations: stopping (patience)", self.bad_evals)
                return "patience"
        return "completed"

    def finish(self, status: str) -> dict[str, Any]:
        """Final evaluation on the test split with the best-MAE weights (held-out protocol) and summary.json."""
        from .checkpoint import load_checkpoint
        from .evaluate import protocol_label
        from .utils import atomic_write_json

        summary: dict[str, Any] = {"status": status, "stop_reason": self.stop_reason, "epochs_run": len(self.history),
                                   "global_step": self.global_step, "train_seconds": round(self.train_seconds, 1),
                                   "protocol": self.config.protocol, "protocol_label": protocol_label(self.config.protocol),
                                   "best": self.best, "train_mean_count": self.train_mean_count}
        if status in ("completed", "patience", "time budget") and self.is_main and self.best:
            best = load_checkpoint(self.out_dir / "best_mae.pt")
            self.raw_model.load_state_dict(best["model"])
            result = self.evaluate(self.test_set)
            result.save(self.out_dir / "test")
            true = result.per_image["true_count"].to_numpy(dtype=float)
            trivial_mae = float(abs(true - self.train_mean_count).mean()) if len(true) else float("nan")
            summary["test"] = dict(result.metrics)
            summary["trivial_mae"] = trivial_mae
            summary["mae_ratio_to_trivial"] = result.metrics["mae"] / trivial_mae if trivial_mae > 0 else float("nan")
        if self.is_main:
            atomic_write_json(self.out_dir / "summary.json", summary)
        return summary


def train(config, out_dir, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run a :class:`Trainer`; ``torchrun --nproc_per_node N -m gigacount_lib.cli train ...`` runs it distributed."""
    return Trainer(config, out_dir, resume=resume, progress=progress).fit()
