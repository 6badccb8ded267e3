"""Inference time and peak memory of GigaCount against image size: full image in one pass vs 224/224 sliding windows.

Usage::

    .venv/bin/python benchmarks/bench_inference.py                 # writes benchmarks/results/inference.json
    .venv/bin/python benchmarks/bench_inference.py --sizes 224 512 1024x768 --no-bf16
    .venv/bin/python benchmarks/bench_inference.py --modes full --no-memory
    .venv/bin/python benchmarks/bench_inference.py --sizes 2048x1536 --compile   # + torch.compile (full image)
    .venv/bin/python benchmarks/bench_inference.py --quick --no-write   # smoke run, writes nothing

Sizes are ``N`` (square) or ``WIDTHxHEIGHT``; default 224², 512², 1024x768, 2048x1536 and 4096x3072.
For each size, one random image (uniform in [0, 1]) goes through ``gigacount`` (random init,
``pretrained=None``, eval mode, ``torch.inference_mode`` inside ``gigacount_lib.evaluate``) four ways:

* ``full``: :func:`gigacount_lib.evaluate.predict_full`, the whole image in one pass;
* ``sliding``: :func:`gigacount_lib.evaluate.predict_sliding` with the official 224x224 windows at
  stride 224 (8 windows per forward pass, the function's default);

each in ``fp32`` (plain) and under bfloat16 autocast (``bf16``, ``train.autocast_context``; only where
the device supports bf16 natively, ``--no-bf16`` to skip). ``--compile`` adds ``full/bf16c``: the full
image through ``torch.compile(model)`` under bf16 (``gigacount predict --compile``); its first call, the
compilation, is timed apart (``compile_s``) and it has no memory row. The variants of one size are warmed up and
timed in round-robin; medians are reported with the full/sliding ratio per precision (below 1: the
full pass is faster). Every output is checked to be on the stride-8 grid, ``ceil(H/8) x ceil(W/8)``
blocks (``shape_ok``), and ``plan`` records what :func:`gigacount_lib.evaluate.plan_inference` would
choose on the device. Peak memory: one pass of each variant in a fresh subprocess (CPU: peak RSS growth
over the RSS with the model and image loaded; CUDA: ``torch.cuda.max_memory_allocated``). A variant
that runs out of memory or fails gets its error as the row's ``status``; the run goes on.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RECOVERABLE, RESULTS, PeakMemory, add_run_arguments, bf16_supported, finish, header,  # noqa: E402
                     markdown_table, parse_size, ratio, resolve_device, run_worker, set_threads, time_round_robin, worker_guard,
                     write)

from gigacount_lib.binning import BinConfig  # noqa: E402
from gigacount_lib.evaluate import OFFICIAL_STRIDE, OFFICIAL_WINDOW, plan_inference, predict_full, predict_sliding  # noqa: E402
from gigacount_lib.models import build_model  # noqa: E402
from gigacount_lib.steps import autocast_context  # noqa: E402

SIZES = ["224", "512", "1024x768", "2048x1536", "4096x3072"]
MODES = ["full", "sliding"]
SCRIPT = Path(__file__).resolve()


def build(name: str, device: torch.device, seed: int):
    torch.manual_seed(seed)
    return build_model(name, BinConfig.gigacount_qnrf(), pretrained=None).to(device).eval()


def random_image(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def predictor(model, image: torch.Tensor, mode: str, bf16: bool, device: torch.device) -> Callable[[], Any]:
    """A call running one inference of ``image`` in ``mode`` (``full`` / ``sliding``), under bf16 or not."""
    def call():
        with autocast_context(device, bf16):
            if mode == "full":
                return predict_full(model, image)
            return predict_sliding(model, image, OFFICIAL_WINDOW, OFFICIAL_STRIDE)
    return call


def memory_worker(p: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: load the model and the image, then the peak memory of one inference."""
    set_threads(p["threads"])
    device = torch.device(p["device"])
    model = build(p["model"], device, p["seed"])
    image = random_image(p["height"], p["width"], p["seed"]).to(device)
    call = predictor(model, image, p["mode"], p["bf16"], device)
    meter = PeakMemory(device)
    meter.start()
    call()
    return meter.stop()


def run(args: argparse.Namespace, argv) -> dict[str, Any]:
    set_threads(args.threads)
    device = resolve_device(args.device)
    precisions = ["fp32"] + (["bf16"] if not args.no_bf16 and bf16_supported(device) else [])
    if args.compile:
        precisions.append("bf16c" if "bf16" in precisions else "fp32c")
    result = header("bench_inference.py", argv, (
        f"median wall time and peak memory of one inference of {args.model} (random init, eval, inference_mode) on "
        f"one image: full image (predict_full) vs {OFFICIAL_WINDOW}/{OFFICIAL_STRIDE} sliding windows "
        f"(predict_sliding), precisions {precisions}"))
    result.update(device=str(device), bf16_supported=bf16_supported(device), precisions=precisions,
                  settings={k: getattr(args, k) for k in ("model", "sizes", "modes", "warmup", "min_reps",
                                                          "max_reps", "budget", "seed")})
    model = build(args.model, device, args.seed)
    compiled = torch.compile(model) if args.compile else None  # compiles on its first call
    rows: list[dict[str, Any]] = []
    for text in args.sizes:
        height, width = parse_size(text)
        expected = (math.ceil(height / 8), math.ceil(width / 8))
        plan = plan_inference(height, width, device=device)
        base = {"size": text, "height": height, "width": width, "megapixels": height * width / 1e6,
                "expected_blocks": list(expected), "plan": plan["mode"]}
        try:
            image = random_image(height, width, args.seed).to(device)
        except RECOVERABLE as err:
            rows += [{**base, "mode": m, "precision": p, "status": f"error: {type(err).__name__}: {err}"[:200]}
                     for m in args.modes for p in precisions]
            continue
        outputs: dict[str, Any] = {}

        def recording(key: str, call: Callable[[], Any]) -> Callable[[], None]:
            def run_once() -> None:
                out = call()
                outputs[key] = (tuple(out.density.shape), float(out.density.float().sum()))
            return run_once

        fns = {f"{m}/{p}": recording(f"{m}/{p}", predictor(model, image, m, p == "bf16", device))
               for m in args.modes for p in precisions if not p.endswith("c")}
        compile_s = {}
        for p in precisions:
            if p.endswith("c") and "full" in args.modes:  # compiled: the full image only (one shape)
                call = recording(f"full/{p}", predictor(compiled, image, "full", p == "bf16c", device))
                start = time.perf_counter()
                call()
                compile_s[f"full/{p}"] = time.perf_counter() - start
                fns[f"full/{p}"] = call
        timed = time_round_robin(fns, warmup=args.warmup, min_reps=args.min_reps, max_reps=args.max_reps,
                                 budget_s=args.budget, device=device)
        for key, t in timed.items():
            mode, precision = key.split("/")
            shape, count = outputs.get(key, (None, None))
            rows.append({**base, "mode": mode, "precision": precision, "status": t["status"], "time_s": t["median_s"],
                         "time_min_s": t["min_s"], "times_s": t["times_s"],
                         "output_shape": list(shape) if shape else None,
                         "shape_ok": None if shape is None else tuple(shape[-2:]) == expected and shape[:2] == (1, 1),
                         "count": count, **({"compile_s": compile_s[key]} if key in compile_s else {})})
            print(f"[bench_inference] {text} {key}: {t['status']} {t['median_s']}", file=sys.stderr, flush=True)
        del image, outputs
    if not args.no_memory:
        for row in rows:  # also for a row whose timing failed: its memory status says how far a pass gets
            if row["precision"].endswith("c"):
                continue  # compiled: no memory row (the compilation's own peak would dominate)
            payload = {"model": args.model, "height": row["height"], "width": row["width"], "mode": row["mode"],
                       "bf16": row["precision"] == "bf16", "device": str(device), "seed": args.seed,
                       "threads": torch.get_num_threads()}
            mem = run_worker(SCRIPT, payload)
            row["memory_status"] = mem.pop("status", "ok")
            row["memory"] = mem
            row["peak_mib"] = mem.get("peak_growth_mib")
            row["process_peak_mib"] = mem.get("process_peak_mib")
            print(f"[bench_inference] memory {row['size']} {row['mode']}/{row['precision']}: {row['memory_status']} "
                  f"{row['peak_mib']}", file=sys.stderr, flush=True)
    result["rows"] = rows
    result["summary"] = summarise(rows, precisions)
    result["markdown"] = tables(rows, result["summary"])
    return finish(result)


def summarise(rows: list[dict[str, Any]], precisions: list[str]) -> list[dict[str, Any]]:
    """Per size and precision: full/sliding time and memory ratios; per size: bf16/fp32 of each mode."""
    by = {(r["size"], r["mode"], r["precision"]): r for r in rows}
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        for p in precisions:
            full, sliding = by.get((size, "full", p), {}), by.get((size, "sliding", p), {})
            out.append({"size": size, "precision": p, "full_s": full.get("time_s"), "sliding_s": sliding.get("time_s"),
                        "full_over_sliding": ratio(full.get("time_s"), sliding.get("time_s")),
                        "full_mib": full.get("peak_mib"), "sliding_mib": sliding.get("peak_mib"),
                        "full_over_sliding_memory": ratio(full.get("peak_mib"), sliding.get("peak_mib")),
                        "bf16_over_fp32_full": ratio(full.get("time_s"), by.get((size, "full", "fp32"), {}).get("time_s")),
                        "full_over_official": ratio(full.get("time_s"),
                                                    by.get((size, "sliding", "fp32"), {}).get("time_s")),
                        "compile_s": full.get("compile_s"),
                        "status": ", ".join(sorted({r.get("status", "-") for r in (full, sliding) if r}))})
    return out


def tables(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    text = markdown_table(rows, [
        ("size", "size", "s"), ("MP", "megapixels", ".2f"), ("mode", "mode", "s"), ("precision", "precision", "s"),
        ("time (s)", "time_s", ".3f"), ("growth (MiB)", "peak_mib", ".0f"),
        ("process peak (MiB)", "process_peak_mib", ".0f"), ("shape ok", "shape_ok", "s"),
        ("plan", "plan", "s"), ("status", "status", "s")])
    return text + "\n\nfull image against sliding windows:\n\n" + markdown_table(summary, [
        ("size", "size", "s"), ("precision", "precision", "s"), ("full (s)", "full_s", ".3f"),
        ("sliding (s)", "sliding_s", ".3f"), ("full/sliding", "full_over_sliding", ".2f"),
        ("full / official sliding fp32", "full_over_official", ".2f"), ("compile (s)", "compile_s", ".0f"),
        ("memory full/sliding", "full_over_sliding_memory", ".2f"), ("status", "status", "s")])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=SIZES, help="N or WIDTHxHEIGHT (default: %(default)s)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=MODES)
    p.add_argument("--no-bf16", action="store_true", help="fp32 only")
    p.add_argument("--model", default="gigacount")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument("--max-reps", type=int, default=7)
    p.add_argument("--budget", type=float, default=30.0, help="seconds per size after which no new round starts")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--compile", action="store_true", help="also the full image through torch.compile (bf16)")
    p.add_argument("--quick", action="store_true", help="smoke run: sizes 64 and 100x60, one timed repetition")
    add_run_arguments(p, RESULTS / "inference.json")
    return p


def main(argv=None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.worker:
        worker_guard(memory_worker, json.loads(args.worker))
        return {}
    if args.quick:
        if args.sizes == SIZES:
            args.sizes = ["64", "100x60"]
        args.warmup, args.min_reps, args.max_reps = 1, 1, 1
    for text in args.sizes:
        try:
            parse_size(text)
        except ValueError as err:
            parser().error(str(err))
    result = run(args, argv)
    print(result["markdown"])
    write(result, args.out, args.no_write, "bench_inference")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
