"""Training-step time and peak memory of GigaCount, its variants and the CLIP-EBC baselines, plain vs fast path.

Usage::

    .venv/bin/python benchmarks/bench_step.py                      # full grid, writes benchmarks/results/step.json
    .venv/bin/python benchmarks/bench_step.py --models gigacount clip_ebc_vit_b16 --batches 4 --sizes 224
    .venv/bin/python benchmarks/bench_step.py --paths plain fast fast_cl   # + bf16 with channels_last
    .venv/bin/python benchmarks/bench_step.py --no-bf16            # fast paths in fp32 (fast_cl: channels_last only)
    .venv/bin/python benchmarks/bench_step.py --paths plain        # one path only
    .venv/bin/python benchmarks/bench_step.py --profile            # + torch.profiler top-10 ops of gigacount
    .venv/bin/python benchmarks/bench_step.py --quick --no-write   # smoke run, writes nothing

One training step is what the Trainer does per batch (``gigacount_lib.steps.train_step``): forward,
the real Adaptive Hybrid loss (``build_loss("hybrid", bin_config, mode="reference")``), backward and
an AdamW step, on a fixed synthetic ``CrowdBatch`` (uniform random images, 50-300 heads per crop
placed uniformly). Models are built from random init (``pretrained=None``; weights do not change the
cost). Grid: batch 4 and 8, crops 224² and 448², models ``gigacount``, its variants and the two
CLIP-EBC baselines of the paper's Table 2.

Paths, each measured beside the other in the same run:

* ``plain``: eager, float32, contiguous NCHW, the unfused AdamW (every optimisation off);
* ``fast``: what the Trainer runs by default: the fused AdamW and (``optim.amp``) bfloat16 autocast
  (``train.autocast_context``, when the device supports bf16 natively; ``--no-bf16`` turns it off);
* ``fast_cl`` (only when asked for with ``--paths``): ``fast`` with ``channels_last`` for the model and the
  input, a candidate that is measured but not adopted: on the 2-core CPU it was slower than ``fast``.

Time: per (batch, crop) cell all (model, path) pairs are warmed up, then timed in round-robin;
medians are reported with the ratios fast/plain per model and gigacount/clip_ebc_vit_b16 on the plain
path (below 1: the first is faster). Memory: each (model, path, cell) runs two steps in a fresh
subprocess; CPU: growth of the peak RSS over the RSS after set-up (model, batch and optimizer built),
so it counts gradients, AdamW's state and activations; CUDA: ``torch.cuda.max_memory_allocated``.
Before timing, each pair computes the loss of the same batch from the same weights (``check_loss``):
the fast path must agree with the plain one up to bf16 rounding.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RECOVERABLE, RESULTS, PeakMemory, add_run_arguments, bf16_supported, finish, header,  # noqa: E402
                     markdown_table, ratio, resolve_device, run_worker, set_threads, time_round_robin, worker_guard, write)

from gigacount_lib.binning import BinConfig  # noqa: E402
from gigacount_lib.data.transforms import collate_crowd  # noqa: E402
from gigacount_lib.losses import build_loss  # noqa: E402
from gigacount_lib.models import build_model, list_models  # noqa: E402
from gigacount_lib.steps import configure_optimizer, forward_and_loss, make_grad_scaler, train_step  # noqa: E402

MODELS = ["gigacount", "gigacount_stage4", "gigacount_odconv_blocks", "gigacount_no_fusion", "gigacount_atto",
          "clip_ebc_resnet50", "clip_ebc_vit_b16"]
PATHS = ["plain", "fast", "fast_cl"]
DEFAULT_PATHS = ["plain", "fast"]
HEADS = (50, 300)  # heads per crop, drawn uniformly in this closed range
SCRIPT = Path(__file__).resolve()


@dataclasses.dataclass(frozen=True)
class PathSpec:
    """One way of running the step; ``plain`` has every optimisation off."""

    name: str
    bf16: bool = False
    channels_last: bool = False

    def describe(self) -> str:
        parts = (["bf16 autocast"] if self.bf16 else ["fp32"]) + (["channels_last"] if self.channels_last else ["NCHW"])
        return ", ".join(parts)


def make_paths(names: list[str], device: torch.device, bf16: bool = True) -> list[PathSpec]:
    """The requested paths; bf16 only where the device runs it natively (else the fast paths stay fp32)."""
    native = bf16 and bf16_supported(device)
    specs = {"plain": PathSpec("plain"), "fast": PathSpec("fast", bf16=native),
             "fast_cl": PathSpec("fast_cl", bf16=native, channels_last=True)}
    return [specs[n] for n in names]


def synthetic_batch(batch: int, size: int, seed: int, channels_last: bool = False):
    """A ``CrowdBatch`` of ``batch`` random ``size²`` crops with 50-300 uniform heads each."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(HEADS[0], HEADS[1] + 1, (batch,), generator=gen).tolist()
    samples = [(torch.rand(3, size, size, generator=gen), torch.rand(n, 2, generator=gen) * size,
                {"name": f"synthetic_{i}"}) for i, n in enumerate(counts)]
    crowd = collate_crowd(samples)
    if channels_last:
        crowd = dataclasses.replace(crowd, images=crowd.images.contiguous(memory_format=torch.channels_last))
    return crowd


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``channels_last`` for every 4-D parameter and buffer, in place. (``Module.to(memory_format=...)``
    refuses the model: ODConv's kernels are 5-D, and ``channels_last`` exists only for 4-D tensors.)"""
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def build_base(name: str, seed: int, options: dict[str, Any] | None = None):
    torch.manual_seed(seed)
    return build_model(name, BinConfig.gigacount_qnrf(), pretrained=None, **(options or {}))


class StepCase:
    """One (model, path, batch, crop) configuration: its own copy of the model, optimizer and batch."""

    def __init__(self, base_model, path: PathSpec, batch: int, size: int, device: torch.device, seed: int) -> None:
        self.path, self.device, self.seed = path, device, seed
        model = copy.deepcopy(base_model).to(device)
        if path.channels_last:
            to_channels_last(model)
        self.model = model
        self.batch = synthetic_batch(batch, size, seed, path.channels_last).to(device)
        self.loss_fn = build_loss("hybrid", model.bin_config, mode="reference")
        # plain: the loop AdamW of the official code; fast: the Trainer's default (fused where supported)
        self.optimizer = configure_optimizer(model, lr=1e-4, fused=None if path.name != "plain" else False)
        self.scaler = make_grad_scaler(device, path.bf16)
        self.last: dict[str, float] = {}

    def check_loss(self) -> float:
        """The loss of the batch from the current weights, train mode, under a fixed RNG seed."""
        self.model.train()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            loss, _ = forward_and_loss(self.model, self.batch, self.loss_fn, use_autocast=self.path.bf16)
        return float(loss)

    def step(self) -> dict[str, float]:
        self.last = train_step(self.model, self.batch, self.loss_fn, self.optimizer, device=self.device,
                               use_autocast=self.path.bf16, scaler=self.scaler)
        return self.last


# ------------------------------------------------------------------------------------------ memory worker
def memory_worker(p: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: build one configuration, then the peak memory of ``p["steps"]`` steps."""
    set_threads(p["threads"])
    device = torch.device(p["device"])
    case = StepCase(build_base(p["model"], p["seed"], p.get("options")), PathSpec(**p["path"]), p["batch"],
                    p["size"], device, p["seed"])
    meter = PeakMemory(device)
    meter.start()
    for _ in range(p["steps"]):
        case.step()
    return meter.stop()


# ------------------------------------------------------------------------------------------ profile
def profile_steps(case: StepCase, steps: int = 2, top: int = 10) -> dict[str, Any]:
    """``torch.profiler`` over ``steps`` steps (after one warm-up): the ``top`` operators by self time."""
    from torch.profiler import ProfilerActivity, profile

    case.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if case.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            case.step()
    key = "self_cuda_time_total" if case.device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in events) or 1
    rows = [{"op": e.key, "calls": e.count, "self_ms_per_step": getattr(e, key, 0) / 1e3 / steps,
             "share": getattr(e, key, 0) / total} for e in events[:top]]
    return {"path": case.path.name, "sort_by": key, "steps": steps, "rows": rows,
            "table": prof.key_averages().table(sort_by=key, row_limit=top)}


# ------------------------------------------------------------------------------------------ run
def run(args: argparse.Namespace, argv) -> dict[str, Any]:
    set_threads(args.threads)
    device = resolve_device(args.device)
    paths = make_paths(args.paths, device, bf16=not args.no_bf16)
    result = header("bench_step.py", argv, (
        "median wall time and peak memory of one training step (train.train_step: forward, Adaptive Hybrid loss "
        "in reference mode, backward, AdamW) on a synthetic batch with 50-300 heads per crop, random init; "
        "paths: " + "; ".join(f"{p.name} = {p.describe()}" for p in paths)))
    result.update(device=str(device), bf16_supported=bf16_supported(device),
                  paths={p.name: dataclasses.asdict(p) for p in paths},
                  settings={k: getattr(args, k) for k in ("models", "batches", "sizes", "warmup", "min_reps",
                                                          "max_reps", "budget", "seed", "memory_steps")})
    options = {"drop_path_rate": 0.0} if args.no_drop_path else {}
    bases = {}
    for name in args.models:
        bases[name] = build_base(name, args.seed, options)
        print(f"[bench_step] built {name}", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    for batch in args.batches:
        for size in args.sizes:
            cases: dict[str, StepCase] = {}
            checks: dict[str, Any] = {}
            for name in args.models:
                for path in paths:
                    key = f"{name}/{path.name}"
                    try:
                        cases[key] = StepCase(bases[name], path, batch, size, device, args.seed)
                        checks[key] = cases[key].check_loss()
                    except RECOVERABLE as err:
                        cases.pop(key, None)
                        checks[key] = f"error: {type(err).__name__}: {err}"[:200]
            timed = time_round_robin({k: c.step for k, c in cases.items()}, warmup=args.warmup,
                                     min_reps=args.min_reps, max_reps=args.max_reps, budget_s=args.budget,
                                     device=device)
            for name in args.models:
                for path in paths:
                    key = f"{name}/{path.name}"
                    t = timed.get(key, {"status": checks[key], "times_s": [], "median_s": None, "min_s": None})
                    check = checks[key]
                    rows.append({"model": name, "batch": batch, "size": size, "path": path.name,
                                 "status": t["status"], "step_s": t["median_s"], "step_min_s": t["min_s"],
                                 "step_times_s": t["times_s"],
                                 "check_loss": check if isinstance(check, float) else None,
                                 "crops_per_s": ratio(batch, t["median_s"])})
                    shown = "-" if t["median_s"] is None else f"{t['median_s']:.3f} s"
                    print(f"[bench_step] B={batch} {size}² {key}: {t['status']} {shown}", file=sys.stderr, flush=True)
            if args.profile in args.models and "profile" not in result:  # the first cell only
                result["profile"] = {"model": args.profile, "batch": batch, "size": size,
                                     "paths": [profile_steps(cases[f"{args.profile}/{p.name}"]) for p in paths
                                               if f"{args.profile}/{p.name}" in cases]}
            del cases
    if not args.no_memory:
        for row in rows:
            spec = next(p for p in paths if p.name == row["path"])
            payload = {"model": row["model"], "path": dataclasses.asdict(spec), "batch": row["batch"],
                       "size": row["size"], "device": str(device), "seed": args.seed, "options": options,
                       "threads": torch.get_num_threads(), "steps": args.memory_steps}
            mem = run_worker(SCRIPT, payload)
            row["memory_status"] = mem.pop("status", "ok")
            row["memory"] = mem
            row["peak_mib"] = mem.get("peak_growth_mib")
            row["process_peak_mib"] = mem.get("process_peak_mib")
            print(f"[bench_step] memory {row['model']}/{row['path']} B={row['batch']} {row['size']}²: "
                  f"{row['memory_status']} growth {row['peak_mib']} process {row['process_peak_mib']}",
                  file=sys.stderr, flush=True)
    result["rows"] = rows
    result["summary"] = summarise(rows)
    result["markdown"] = tables(result["summary"])
    if "profile" in result:
        result["markdown"] += "\n\n" + "\n\n".join(
            f"torch.profiler, {result['profile']['model']}, {p['path']} path (top 10 by {p['sort_by']}):\n" + markdown_table(
                p["rows"], [("op", "op", "s"), ("calls", "calls", "d"), ("self ms / step", "self_ms_per_step", ".1f"),
                            ("share", "share", ".1%")]) for p in result["profile"]["paths"])
    return finish(result)


def summarise(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per (model, cell): both paths side by side and fast/plain; per cell: gigacount/clip_ebc_vit_b16 (plain)."""
    by = {(r["model"], r["batch"], r["size"], r["path"]): r for r in rows}
    per_model, per_cell = [], []
    for model, batch, size in dict.fromkeys((r["model"], r["batch"], r["size"]) for r in rows):
        plain, fast = by.get((model, batch, size, "plain"), {}), by.get((model, batch, size, "fast"), {})
        fast_cl = by.get((model, batch, size, "fast_cl"), {})
        lp, lf = plain.get("check_loss"), fast.get("check_loss")
        per_model.append({"model": model, "batch": batch, "size": size,
                          "plain_s": plain.get("step_s"), "fast_s": fast.get("step_s"),
                          "fast_over_plain": ratio(fast.get("step_s"), plain.get("step_s")),
                          "fast_cl_s": fast_cl.get("step_s"),
                          "fast_cl_over_fast": ratio(fast_cl.get("step_s"), fast.get("step_s")),
                          "plain_mib": plain.get("peak_mib"), "fast_mib": fast.get("peak_mib"),
                          "fast_over_plain_memory": ratio(fast.get("peak_mib"), plain.get("peak_mib")),
                          "plain_process_mib": plain.get("process_peak_mib"),
                          "fast_process_mib": fast.get("process_peak_mib"),
                          "plain_loss": lp, "fast_loss": lf,
                          "loss_rel_diff": abs(lf - lp) / abs(lp) if lp and lf is not None else None})
    for batch, size in dict.fromkeys((r["batch"], r["size"]) for r in rows):
        g, v = by.get(("gigacount", batch, size, "plain"), {}), by.get(("clip_ebc_vit_b16", batch, size, "plain"), {})
        f = by.get(("gigacount", batch, size, "fast"), {})
        if g and v:
            per_cell.append({"batch": batch, "size": size, "gigacount_s": g.get("step_s"), "vit_b16_s": v.get("step_s"),
                             "gigacount_over_vit_b16": ratio(g.get("step_s"), v.get("step_s")),
                             "gigacount_mib": g.get("peak_mib"), "vit_b16_mib": v.get("peak_mib"),
                             "gigacount_over_vit_b16_memory": ratio(g.get("peak_mib"), v.get("peak_mib")),
                             "gigacount_fast_s": f.get("step_s"),
                             "gigacount_fast_over_vit_b16": ratio(f.get("step_s"), v.get("step_s"))})
    return {"per_model": per_model, "gigacount_vs_vit_b16": per_cell}


def tables(summary: dict[str, list[dict[str, Any]]]) -> str:
    text = markdown_table(summary["per_model"], [
        ("model", "model", "s"), ("batch", "batch", "d"), ("crop", "size", "d"), ("plain (s)", "plain_s", ".3f"),
        ("fast (s)", "fast_s", ".3f"), ("fast/plain", "fast_over_plain", ".2f"),
        *([("fast_cl (s)", "fast_cl_s", ".3f"), ("fast_cl/fast", "fast_cl_over_fast", ".2f")]
          if any(r.get("fast_cl_s") for r in summary["per_model"]) else []),
        ("plain growth (MiB)", "plain_mib", ".0f"), ("fast growth (MiB)", "fast_mib", ".0f"),
        ("plain process peak (MiB)", "plain_process_mib", ".0f"), ("fast process peak (MiB)", "fast_process_mib", ".0f"),
        ("loss rel. diff", "loss_rel_diff", ".1e")])
    if summary["gigacount_vs_vit_b16"]:
        text += "\n\ngigacount against clip_ebc_vit_b16 on its plain path:\n\n" + markdown_table(
            summary["gigacount_vs_vit_b16"], [
                ("batch", "batch", "d"), ("crop", "size", "d"), ("gigacount plain (s)", "gigacount_s", ".3f"),
                ("gigacount fast (s)", "gigacount_fast_s", ".3f"), ("vit_b16 plain (s)", "vit_b16_s", ".3f"),
                ("plain/vit", "gigacount_over_vit_b16", ".2f"), ("fast/vit", "gigacount_fast_over_vit_b16", ".2f"),
                ("memory growth plain/vit", "gigacount_over_vit_b16_memory", ".2f")])
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS, help=f"models (default: {' '.join(MODELS)})")
    p.add_argument("--batches", nargs="+", type=int, default=[4, 8])
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 448], help="square crop sides")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=DEFAULT_PATHS,
                   help=f"paths to measure (default: {' '.join(DEFAULT_PATHS)})")
    p.add_argument("--no-bf16", action="store_true", help="fast paths without bfloat16 autocast")
    p.add_argument("--no-drop-path", action="store_true",
                   help="build models with drop_path_rate=0 (stochastic depth off; the loss check is then exact)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument("--max-reps", type=int, default=7)
    p.add_argument("--budget", type=float, default=60.0, help="seconds per cell after which no new round starts")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-steps", type=int, default=2)
    p.add_argument("--profile", nargs="?", const="gigacount", default=None, metavar="MODEL",
                   help="torch.profiler top-10 operators of MODEL's step, both paths, first cell (default MODEL: "
                        "gigacount; it must be among --models)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: gigacount_atto at batch 2, 64², one warm-up and one timed step")
    add_run_arguments(p, RESULTS / "step.json")
    return p


def main(argv=None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.worker:
        worker_guard(memory_worker, json.loads(args.worker))
        return {}
    unknown = sorted(set(args.models) - set(list_models()))
    if unknown:
        parser().error(f"unknown models {unknown}; available: {list_models()}")
    if args.quick:
        if args.models == MODELS:
            args.models = ["gigacount_atto"]
        args.batches, args.sizes, args.warmup, args.min_reps, args.max_reps, args.memory_steps = [2], [64], 1, 1, 1, 1
    result = run(args, argv)
    print(result["markdown"])
    write(result, args.out, args.no_write, "bench_step")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
