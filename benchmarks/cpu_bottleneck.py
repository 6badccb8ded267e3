"""Which part of the ``cpu`` preset limits a short CPU run: the model, the loss or the head?

Usage::

    .venv/bin/python benchmarks/cpu_bottleneck.py --list
    .venv/bin/python benchmarks/cpu_bottleneck.py --arms vgg_mse gigacount_atto --minutes 6
    .venv/bin/python benchmarks/cpu_bottleneck.py --arms gigacount_vgg_dec128 --ema 0.998   # score an EMA of the weights

Every arm trains for the same wall-clock budget on the same batches (the ``cpu`` preset's data
pipeline: 8 synthetic training images x 2 crops of 128 px, the official augmentation, the held-out
split's training images), with AdamW (lr 2e-3, weight decay 1e-4), a 100-step linear warm-up and a
cosine decay over the *time* budget, and bfloat16 autocast when the CPU has it. Each is then scored
once on the whole synthetic test split (full images, one pass) against the mean-count predictor.
The arms change one thing at a time:

* the model: a small VGG-style density network (``VGGLite``, 0.2 M parameters, stride 8), the
  ConvNeXt-Atto stem and stages 1-2 with a small classifier (``atto_stage2``), the preset's
  ``gigacount_atto`` (stages 1-3, attention blocks, fusion, decoder, cosine text head), or the same
  GigaCount parts on a VGG-style encoder (``gigacount_vgg``, :mod:`gigacount_lib.models.vgg`);
* the loss: a blockwise squared error on the block counts, or the preset's Adaptive Hybrid loss;
* the head: a linear bin classifier or GigaCount's cosine head against the text prototypes.

Beside the ratio, each row says where the error comes from: the mean signed error (``test_bias``,
negative = undercounting), the MAE per count tercile of the test images, and the ratio on the first
100 training images (close to the test ratio = underfitting, far below it = overfitting).

Results are appended to ``benchmarks/results/cpu_bottleneck.json`` (one row per run, never
overwritten). Synthetic data, random init, CPU only: not UCF-QNRF results. The arms other than
``gigacount_atto`` and ``gigacount_vgg`` are diagnostics, not course models.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from _common import cpu_record  # noqa: E402
from gigacount_lib.config import get_preset  # noqa: E402
from gigacount_lib.data.transforms import pad_points  # noqa: E402
from gigacount_lib.losses._common import block_counts_padded  # noqa: E402
from gigacount_lib.models.base import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from gigacount_lib.models.head import CountingOutput  # noqa: E402
from gigacount_lib.models.vgg import conv_bn_relu  # noqa: E402
from gigacount_lib.utils import atomic_write_json, library_versions  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "cpu_bottleneck.json"

# name -> (model, loss, what it isolates)
ARMS: dict[str, tuple[str, str, str]] = {
    "vgg_mse": ("vgg", "mse", "VGGLite regressing block counts with a squared error"),
    "vgg_hybrid": ("vgg", "hybrid", "VGGLite with a linear bin classifier and the Adaptive Hybrid loss"),
    "vgg_cosine": ("vgg_cosine", "hybrid", "VGGLite with GigaCount's projection + cosine text head and the "
                                            "Adaptive Hybrid loss"),
    "atto_stage2": ("atto_stage2", "hybrid", "ConvNeXt-Atto stem + stages 1-2 with a small linear bin classifier, "
                                              "Adaptive Hybrid loss"),
    "gigacount_atto_mse": ("gigacount_atto", "mse", "the preset's model regressing block counts with a squared "
                                                    "error on its density"),
    "gigacount_atto": ("gigacount_atto", "hybrid", "the preset's model and loss"),
    "gigacount_vgg": ("gigacount_vgg", "hybrid", "the library's gigacount_vgg: GigaCount's attention blocks, fusion, "
                                                 "256-wide decoder and cosine head on a VGG-style encoder (strides "
                                                 "4/8/16) in place of ConvNeXt-Atto, Adaptive Hybrid loss"),
    "gigacount_vgg_wide": ("gigacount_vgg_wide", "hybrid", "gigacount_vgg with attention blocks that keep their input "
                                                           "widths (64/64/128) instead of squeezing to C/6 = 10/10/21"),
    "gigacount_vgg_dec128": ("gigacount_vgg_dec128", "hybrid", "gigacount_vgg with a 128-wide decoder instead of 256 "
                                                               "(on 128-px crops the 256-wide BasicBlock costs more "
                                                               "than the whole VGG encoder)"),
    "gigacount_vgg_dec64": ("gigacount_vgg_dec64", "hybrid", "gigacount_vgg with a 64-wide decoder"),
    "gigacount_vgg_dil3": ("gigacount_vgg_dil3", "hybrid", "gigacount_vgg_dec128 with three dilated convs at stride 8 "
                                                           "instead of one (VGGLite's context)"),
}

# builder options of the gigacount_vgg arms
VGG_OPTIONS: dict[str, dict] = {
    "gigacount_vgg": {},
    "gigacount_vgg_wide": {"attention_out": [64, 64, 128]},
    "gigacount_vgg_dec128": {"decoder_channels": 128},
    "gigacount_vgg_dec64": {"decoder_channels": 64},
    "gigacount_vgg_dil3": {"decoder_channels": 128, "dilated": 3},
}


class VGGLite(nn.Module):
    """A CSRNet-like density network (Li et al., CVPR 2018) shrunk for 2 cores: 3x3 conv-BN-ReLU
    pairs at strides 1, 2 and 4 (widths w, 2w, 4w), max pools, three dilated convs at stride 8.
    ``(B, 3, H, W) -> (B, 4w, H / 8, W / 8)`` features; ``H, W`` multiples of 8."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *conv_bn_relu(3, w), *conv_bn_relu(w, w), nn.MaxPool2d(2),
            *conv_bn_relu(w, 2 * w), *conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            *conv_bn_relu(2 * w, 4 * w), *conv_bn_relu(4 * w, 4 * w), *conv_bn_relu(4 * w, 4 * w), nn.MaxPool2d(2),
            *conv_bn_relu(4 * w, 4 * w, 2), *conv_bn_relu(4 * w, 4 * w, 2), *conv_bn_relu(4 * w, 4 * w, 2))
        self.out_channels = 4 * w

    def forward(self, x):
        return self.features(x)


class Diagnostic(nn.Module):
    """``body`` (stride 8) + a 1x1 output: one channel (softplus block counts) for the squared-error
    loss, or K bin logits (expected count over the anchors) for the hybrid loss; or GigaCount's
    projection + cosine head (``head``). Returns a :class:`CountingOutput` like the course models."""

    def __init__(self, body: nn.Module, channels: int, anchors, loss: str, head: nn.Module | None = None,
                 pad_multiple: int = 8, feature_index: int | None = None) -> None:
        super().__init__()
        self.body, self.head, self.loss = body, head, loss
        self.pad_multiple, self.feature_index = pad_multiple, feature_index
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        if head is not None:
            self.out = nn.Conv2d(channels, head.embed_dim, 1)
        else:
            k = 1 if loss == "mse" else self.anchors.numel()
            self.out = nn.Conv2d(channels, k, 1)
            with torch.no_grad():  # start near the empty image: count ~0.02 per block
                self.out.bias.copy_(torch.tensor([-4.0]) if k == 1 else
                                    torch.tensor([4.0] + [-float(i) for i in range(k - 1)]))

    def forward(self, images):
        h, w = images.shape[-2:]
        m = self.pad_multiple
        x = F.pad((images - self.mean) / self.std, (0, (-w) % m, 0, (-h) % m))
        f = self.body(x)
        if self.feature_index is not None:
            f = f[self.feature_index]
        y = self.out(f)[..., :h // 8, :w // 8]
        if self.head is not None:
            return self.head(y)
        y = y.float()
        if self.loss == "mse":
            return CountingOutput(y, F.softplus(y))
        return CountingOutput(y, (y.softmax(1) * self.anchors).sum(1, keepdim=True))


def build_arm(model: str, loss: str, trainer) -> nn.Module:
    anchors = trainer.bin_config.anchor_points
    if model == "gigacount_atto":
        return trainer.model
    if model in VGG_OPTIONS:
        from gigacount_lib.models import build_model

        return build_model("gigacount_vgg", trainer.bin_config, pretrained=None,
                           logit_scale_init=float(trainer.model.head.logit_scale.detach()), **VGG_OPTIONS[model])
    if model in ("vgg", "vgg_cosine"):
        body = VGGLite()
        head = trainer.model.head if model == "vgg_cosine" else None
        return Diagnostic(body, body.out_channels, anchors, loss, head=head)
    if model == "atto_stage2":
        encoder = trainer.model.encoder  # built with the preset's options (layer scale 1, no drop path)
        net = Diagnostic(encoder, encoder.channels[1], anchors, loss, pad_multiple=32, feature_index=1)
        classifier = net.out  # keeps its empty-image bias
        net.out = nn.Sequential(*conv_bn_relu(encoder.channels[1], 64), nn.Conv2d(64, classifier.out_channels, 1))
        with torch.no_grad():
            net.out[-1].bias.copy_(classifier.bias)
        return net
    raise ValueError(f"unknown model {model!r}")


def block_counts(points, height: int, width: int, stride: int = 8) -> torch.Tensor:
    """Heads per ``stride``-px block, ``(B, 1, H / stride, W / stride)``: the losses' own block targets."""
    padded, mask = pad_points(points)
    return block_counts_padded(padded, mask, (height // stride, width // stride), stride)


def run_arm(name: str, minutes: float, seed: int, out_root: Path, lr: float = 2e-3, preset: str = "cpu",
            ema: float | None = None) -> dict:
    """Train arm ``name`` for ``minutes`` on ``preset``'s data pipeline, score it on the test split: one row.

    ``ema``: score an exponential moving average of the weights and BatchNorm buffers (decay per step)
    instead of the last weights."""
    from gigacount_lib.steps import autocast_context
    from gigacount_lib.utils import mixed_precision_available
    from gigacount_lib.train import Trainer

    model_name, loss_name, what = ARMS[name]
    torch.manual_seed(seed)
    config = get_preset(preset).override(f"seed={seed}")
    trainer = Trainer(config, out_root / name, progress=False)
    trainer.setup_distributed(); trainer.setup_device(); trainer.setup_data(); trainer.setup_model()
    net = build_arm(model_name, loss_name, trainer)
    amp = mixed_precision_available(torch.device("cpu"))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    averaged = None if ema is None else torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema), use_buffers=True)
    budget, steps, epoch, t0 = minutes * 60.0, 0, 0, time.perf_counter()
    net.train()
    while time.perf_counter() - t0 < budget:
        trainer.sampler.set_epoch(epoch)
        for batch in trainer.loader:
            frac = (time.perf_counter() - t0) / budget
            if frac >= 1:
                break
            scale = min(1.0, (steps + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac))
            for group in opt.param_groups:
                group["lr"] = max(lr * scale, 1e-6)
            with autocast_context(torch.device("cpu"), amp):
                out = net(batch.images)
            if loss_name == "hybrid":
                loss, _ = trainer.loss_fn(out, batch)
            else:
                pred = out.density.float()
                target = block_counts(batch.points, *batch.image_size)
                loss = (F.mse_loss(pred, target, reduction="sum") / len(pred)
                        + 0.01 * (pred.sum((1, 2, 3)) - target.sum((1, 2, 3))).abs().mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if averaged is not None:
                averaged.update_parameters(net)
            steps += 1
        epoch += 1
    train_minutes = (time.perf_counter() - t0) / 60
    if averaged is not None:
        net = averaged.module
    net.eval()
    e, c = score(net, trainer.test_set)
    mae, rmse = e.abs().mean().item(), e.pow(2).mean().sqrt().item()
    trivial = (c - trainer.train_mean_count).abs().mean().item()
    train_images = torch.utils.data.Subset(trainer.loader.dataset.dataset, trainer.train_indices[:100])
    e_train, c_train = score(net, train_images)
    tercile = c.quantile(torch.tensor([1 / 3, 2 / 3], dtype=c.dtype))
    which = torch.bucketize(c, tercile)
    diagnostics = {
        "test_images": len(e),
        "test_bias": e.mean().item(),  # mean signed error: < 0 undercounts
        "test_mae_by_count_tercile": [e[which == k].abs().mean().item() if (which == k).any() else None
                                      for k in range(3)],
        "test_images_by_count_tercile": [int((which == k).sum()) for k in range(3)],
        "test_count_tercile_edges": tercile.tolist(),
        "train_mae_first100": e_train.abs().mean().item(),
        "train_ratio_first100": e_train.abs().mean().item() / (c_train - trainer.train_mean_count).abs().mean().item(),
    }
    return {"arm": name, "preset": preset, "model": model_name, "loss": loss_name, "what": what, "seed": seed,
            "minutes": minutes, "train_minutes": round(train_minutes, 2), "steps": steps, "epochs": epoch,
            "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "autocast": "bfloat16" if amp else "off", "ema": ema,
            "test_mae": mae, "test_rmse": rmse, "trivial_mae": trivial, "ratio": mae / trivial, **diagnostics,
            "load_after": list(os.getloadavg())}


def score(net: nn.Module, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed count errors and true counts of ``net`` on every image of ``dataset`` (full images, one pass)."""
    errors, counts = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            image, points, _ = dataset[i]
            errors.append(float(net(image.unsqueeze(0)).density.sum()) - len(points))
            counts.append(len(points))
    return torch.tensor(errors, dtype=torch.float64), torch.tensor(counts, dtype=torch.float64)


def append(row: dict) -> None:
    import platform

    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {
        "script": "benchmarks/cpu_bottleneck.py",
        "data": "embedded synthetic dataset (300 train + 100 test, 512x384), held-out split's training images, "
                "random init, full-image test scoring", "runs": []}
    row = {**row, "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), **cpu_record()},
           "versions": {k: v for k, v in library_versions().items() if k in ("torch", "timm", "gigacount_lib")}}
    data["runs"].append(row)
    atomic_write_json(RESULTS, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM")
    parser.add_argument("--minutes", type=float, default=6.0, help="training wall-clock budget per arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="score an exponential moving average of the weights (e.g. 0.998) instead of the last ones")
    parser.add_argument("--preset", default="cpu", help="whose data pipeline (cpu-quick: the small set, for a smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "cpu_bottleneck")
    parser.add_argument("--list", action="store_true", help="list the arms and exit")
    parser.add_argument("--no-write", action="store_true", help="do not append to the results file")
    args = parser.parse_args(argv)
    if args.list:
        for name, (model, loss, what) in ARMS.items():
            print(f"{name:20s} {model:15s} {loss:7s} {what}")
        return 0
    for name in args.arms:
        row = run_arm(name, args.minutes, args.seed, args.out, preset=args.preset, ema=args.ema)
        print(json.dumps({k: row[k] for k in ("arm", "steps", "train_minutes", "test_mae", "ratio", "test_bias", "test_mae_by_count_tercile", "train_ratio_first100")}), flush=True)
        if not args.no_write:
            append(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
