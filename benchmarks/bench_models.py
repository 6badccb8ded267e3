"""Parameter / FLOP table and one CPU training-step time for every model variant, side by side.

Usage::

    .venv/bin/python benchmarks/bench_models.py                 # all variants, writes benchmarks/results/models.json
    .venv/bin/python benchmarks/bench_models.py --models gigacount --steps 2 --no-write

For each variant (random init, ``pretrained=None``; weights do not change the cost) it reports the
parameters (trainable, frozen inside the model, the frozen CLIP text tower whose prototypes are
precomputed, total), the FLOPs at 224² and 512² (``torch.utils.flop_counter.FlopCounterMode``,
batch 1) and the median wall time of one training step (forward, a stand-in loss, backward, AdamW
step) at batch 4, 224², on CPU. The step time depends on the machine and its load: the JSON records
the CPU, thread count and load average.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gigacount_lib.binning import BinConfig  # noqa: E402
from gigacount_lib.models import build_model, list_models  # noqa: E402
from gigacount_lib.models.profile import markdown_table, model_row  # noqa: E402
from gigacount_lib.utils import atomic_write_json, library_versions, seed_everything  # noqa: E402

ORDER = ["gigacount", "gigacount_stage4", "gigacount_odconv_blocks", "gigacount_no_fusion",
         "clip_ebc_resnet50", "clip_ebc_vit_b16"]


class StepRunner:
    """One model's training step on a fixed random batch (forward, stand-in loss, backward, AdamW)."""

    def __init__(self, model, bin_config: BinConfig, batch: int, size: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.model = model
        self.images = torch.rand(batch, 3, size, size, generator=gen)
        self.targets = torch.randint(0, bin_config.num_bins, (batch, size // 8, size // 8), generator=gen)
        self.counts = bin_config.anchors_tensor()[self.targets].sum(dim=(1, 2))
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        self.times: list[float] = []

    def step(self, record: bool = True) -> None:
        self.model.train()
        t0 = time.perf_counter()
        out = self.model(self.images)
        loss = F.cross_entropy(out.logits, self.targets) + \
            (out.density.sum(dim=(1, 2, 3)) - self.counts).abs().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if record:
            self.times.append(time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=ORDER, help=f"variants (default: all: {ORDER})")
    parser.add_argument("--flop-sizes", nargs="*", type=int, default=[224, 512])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--no-step", action="store_true", help="skip the training-step timing")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "models.json"))
    args = parser.parse_args(argv)
    unknown = set(args.models) - set(list_models())
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; available: {list_models()}")

    seed_everything(0)
    bin_config = BinConfig.gigacount_qnrf()
    rows, runners = [], {}
    for name in args.models:
        model = build_model(name, bin_config, pretrained=None)
        rows.append(model_row(name, model, args.flop_sizes))
        if not args.no_step:
            runners[name] = StepRunner(model, bin_config, args.batch, args.size)
            runners[name].step(record=False)  # warm-up (allocations, optimizer state)
        print(f"[bench_models] {name}: counted", file=sys.stderr, flush=True)
    # Side by side: round-robin over the variants, so that load changes on a shared machine hit all alike.
    for _ in range(0 if args.no_step else args.steps):
        for name, runner in runners.items():
            runner.step()
    for row in rows:
        if row["model"] in runners:
            times = runners[row["model"]].times
            row["step_s"] = statistics.median(times)
            row["step_min_s"] = min(times)
            row["step_times_s"] = times

    table = markdown_table(rows, args.flop_sizes)
    print(table)
    if not args.no_write:
        result = {
            "command": "python benchmarks/bench_models.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "what": ("parameters; FLOPs (FlopCounterMode, batch 1, eval); median wall time of one training "
                     f"step (forward + CE/count stand-in loss + backward + AdamW) at batch {args.batch}, "
                     f"{args.size}x{args.size}, CPU, after one warm-up step, {args.steps} timed steps, round-robin over the variants"),
            "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(),
                        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
            "versions": library_versions(),
            "bin_config": bin_config.to_dict(),
            "rows": rows,
            "markdown": table,
        }
        atomic_write_json(args.output, result)
        print(f"[bench_models] wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
