"""Batched DM-Count OT (both modes) against the published per-image loop, and the OT share of a training step.

Usage::

    .venv/bin/python benchmarks/bench_losses.py                 # writes benchmarks/results/losses.json
    .venv/bin/python benchmarks/bench_losses.py --quick --no-write

What is timed, per cell (batch B in 1, 8, 32; N heads per 224x224 crop in 50, 500, 2000; plus the
target cell of the issue, batch 8 with 150-250 heads), side by side and round-robin:

* ``loop``: the published per-image OT loss (``OT_Loss.forward`` of DM-Count / CLIP-EBC), re-written
  here from its description: for each image a dense float32 cost and kernel ``exp(C / -10)``, 100
  scaling iterations with the per-iteration NaN/inf check and the ``.item()`` error check every 10
  iterations, ``beta``, the gradient, the surrogate, and the transport plan with ``sum(C * P).item()``;
* ``reference`` / ``exact``: the OT term of :class:`gigacount_lib.losses.DMCountLoss` (potentials for the
  whole batch plus the surrogate), in each mode.

The predicted density is ``softplus(randn)`` per block (positive, unstructured, like an early model),
the heads are uniform in the crop. Times are medians over round-robin repetitions (at least 3, more
while the cell has used less than ``--budget`` seconds). The OT share: one full GigaCount training
step (random init, batch 8, 224x224, forward, Adaptive Hybrid loss, backward, AdamW) against the OT
solve of the same batch.
"""
from __future__ import annotations

import argparse
import math
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
from gigacount_lib.data.transforms import collate_crowd, pad_points  # noqa: E402
from gigacount_lib.losses import LOSS_EPS, AdaptiveHybridLoss, ot_surrogate  # noqa: E402
from gigacount_lib.losses.ot import ot_potentials, published_squared_distances  # noqa: E402
from gigacount_lib.utils import atomic_write_json, library_versions  # noqa: E402

SIZE, R = 224, 8
GRID = (SIZE // R, SIZE // R)


# ------------------------------------------------------------------------------------------ contenders
def published_loop(density: torch.Tensor, points: list[torch.Tensor], reg: float = 10.0, iters: int = 100):
    """The published per-image OT loss (see the module docstring); returns the surrogate loss."""
    s_all = density.flatten(1)
    normed = s_all / (s_all.sum(-1, keepdim=True) + LOSS_EPS)
    loss = density.new_zeros(())
    wd = 0.0
    for idx, pts in enumerate(points):
        if len(pts) == 0:
            continue
        cost = published_squared_distances(pts[None], GRID, R)[0]
        b = normed[idx].detach()
        n = len(pts)
        a = torch.ones(n) / n
        kernel = torch.exp(cost / -reg)
        u, v = torch.ones(n) / n, torch.ones(b.numel()) / b.numel()
        it, err = 1, 1.0
        while err > 1e-9 and it <= iters:
            u_prev, v_prev = u, v
            v = b / (u @ kernel + 1e-16)
            u = a / (kernel @ v + 1e-16)
            if torch.any(torch.isnan(u)) or torch.any(torch.isnan(v)) or torch.any(torch.isinf(u)) \
                    or torch.any(torch.isinf(v)):
                u, v = u_prev, v_prev
                break
            if it % 10 == 0:
                err = ((b - (u @ kernel) * v) ** 2).sum().item()
            it += 1
        beta = reg * torch.log(v + 1e-16)
        s = s_all[idx].detach()
        total = s.sum()
        grad = total / (total * total + LOSS_EPS) * beta - (s * beta).sum() / (total * total + LOSS_EPS)
        loss = loss + (s_all[idx] * grad.detach()).sum()
        plan = u.reshape(-1, 1) * kernel * v.reshape(1, -1)
        wd += torch.sum(cost * plan).item()
    return loss


def batched(density: torch.Tensor, padded: torch.Tensor, mask: torch.Tensor, mode: str):
    s = density.detach().flatten(1)
    b = s / (s.sum(-1, keepdim=True) + LOSS_EPS)
    res = ot_potentials(padded, mask, b, GRID, R, mode=mode, image_size=(SIZE, SIZE))
    return ot_surrogate(density, res.beta, mask.any(-1))[0]


# ------------------------------------------------------------------------------------------ timing
def make_case(batch: int, counts: list[int], seed: int):
    gen = torch.Generator().manual_seed(seed)
    points = [torch.rand(n, 2, generator=gen) * SIZE for n in counts]
    density = F.softplus(torch.randn(batch, 1, *GRID, generator=gen))
    return density, points


def time_round_robin(fns: dict, budget_s: float, min_reps: int = 3, max_reps: int = 15) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        reps = len(next(iter(times.values())))
        if reps >= max_reps or (reps >= min_reps and time.perf_counter() - start > budget_s):
            break
    return {k: statistics.median(v) for k, v in times.items()}


def ot_cells(batches, counts, budget_s: float, seed: int) -> list[dict]:
    cells = [(b, n, [n] * b) for b in batches for n in counts]
    gen = torch.Generator().manual_seed(seed + 99)
    target = torch.randint(150, 251, (8,), generator=gen).tolist()
    cells.append((8, "150-250", target))
    rows = []
    for batch, label, per_image in cells:
        density, points = make_case(batch, per_image, seed)
        padded, mask = pad_points(points)
        fns = {
            "loop": lambda: published_loop(density, points),
            "reference": lambda: batched(density, padded, mask, "reference"),
            "exact": lambda: batched(density, padded, mask, "exact"),
        }
        t = time_round_robin(fns, budget_s)
        row = {"batch": batch, "points_per_image": label, "loop_ms": 1e3 * t["loop"],
               "reference_ms": 1e3 * t["reference"], "exact_ms": 1e3 * t["exact"],
               "speedup_reference": t["loop"] / t["reference"], "speedup_exact": t["loop"] / t["exact"]}
        print(f"B={batch:>2} N={label!s:>7}: loop {row['loop_ms']:8.1f} ms | reference {row['reference_ms']:7.1f} ms "
              f"(x{row['speedup_reference']:.1f}) | exact {row['exact_ms']:8.1f} ms (x{row['speedup_exact']:.2f})",
              flush=True)
        rows.append(row)
    return rows


def step_share(batch: int, steps: int, seed: int) -> dict:
    """Median time of a full GigaCount step vs the OT solve (both modes) on the same batch."""
    from gigacount_lib.models import build_model
    from gigacount_lib.steps import configure_optimizer, train_step

    torch.manual_seed(seed)
    bc = BinConfig.gigacount_qnrf()
    model = build_model("gigacount", bc, pretrained=None)
    opt = configure_optimizer(model, lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(150, 251, (batch,), generator=gen).tolist()
    samples = [(torch.rand(3, SIZE, SIZE, generator=gen), torch.rand(n, 2, generator=gen) * SIZE, {"name": str(i)})
               for i, n in enumerate(counts)]
    crowd = collate_crowd(samples)
    padded, mask = pad_points(crowd.points)
    out = {}
    for mode in ("reference", "exact"):
        loss_fn = AdaptiveHybridLoss(bc, mode=mode)
        train_step(model, crowd, loss_fn, opt)  # warm-up
        step_times, ot_times = [], []
        for _ in range(steps):
            step_times.append(train_step(model, crowd, loss_fn, opt)["time_s"])
            with torch.no_grad():
                density = model(crowd.images).density.float()
            t0 = time.perf_counter()
            batched(density, padded, mask, mode)
            ot_times.append(time.perf_counter() - t0)
        step, ot = statistics.median(step_times), statistics.median(ot_times)
        out[mode] = {"step_s": step, "ot_s": ot, "ot_share": ot / step}
        print(f"training step (batch {batch}, {SIZE}^2, fp32, mode={mode}): {step:.2f} s, OT {1e3 * ot:.1f} ms "
              f"= {100 * ot / step:.1f}% of the step", flush=True)
    return out


def markdown(rows: list[dict], share: dict | None) -> str:
    lines = ["| batch | heads / image | per-image loop (ms) | reference (ms) | speed-up | exact (ms) | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['points_per_image']} | {r['loop_ms']:.1f} | {r['reference_ms']:.1f} | "
                     f"{r['speedup_reference']:.1f}x | {r['exact_ms']:.1f} | {r['speedup_exact']:.2f}x |")
    if share:
        for mode, s in share.items():
            lines.append(f"\nOT share of a GigaCount training step ({mode}): {1e3 * s['ot_s']:.0f} ms of "
                         f"{s['step_s']:.2f} s = {100 * s['ot_share']:.1f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8, 32])
    parser.add_argument("--points", nargs="*", type=int, default=[50, 500, 2000])
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per cell before stopping repetitions")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default, 2 on the course machine)")
    parser.add_argument("--step-batch", type=int, default=8)
    parser.add_argument("--step-reps", type=int, default=3)
    parser.add_argument("--no-step", action="store_true", help="skip the training-step share")
    parser.add_argument("--quick", action="store_true", help="batches 1 8, points 50 500, budget 1 s, no step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "losses.json"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.points, args.budget, args.no_step = [1, 8], [50, 500], 1.0, True
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_losses.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    rows = ot_cells(args.batches, args.points, args.budget, args.seed)
    share = None if args.no_step else step_share(args.step_batch, args.step_reps, args.seed)
    table = markdown(rows, share)
    print("\n" + table)
    result = {
        "command": command.strip(),
        "what": ("median wall time of the DM-Count OT term (potentials + surrogate) per batch: the published per-image "
                 "loop vs the batched reference and exact modes; 224x224 crops, reduction 8 (784 blocks), reg 10, "
                 "100 iterations, float32, CPU; plus the OT share of a full GigaCount training step"),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average_after": list(os.getloadavg()),
                    "note": "2-core CPU shared with other engineers' jobs while measuring; ratios are measured "
                            "side by side (round-robin) in one run"},
        "versions": library_versions(),
        "rows": rows,
        "step_share": share,
        "markdown": table,
        "elapsed_s": time.perf_counter() - t0,
    }
    if not args.no_write:
        atomic_write_json(args.out, result)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
