"""Run the four benchmarks of the performance issue in one go and merge their JSON into one file per machine.

Usage::

    .venv/bin/python benchmarks/run_all.py              # writes benchmarks/results/<machine>.json (make bench)
    .venv/bin/python benchmarks/run_all.py --full       # every script at its own defaults (the full grids; long)
    .venv/bin/python benchmarks/run_all.py --only step inference
    .venv/bin/python benchmarks/run_all.py --quick --no-write   # smoke run of all four, writes nothing

Parts, run one after the other in this process (each measures peak memory in its own subprocesses):

* ``losses``: ``bench_losses.py``, the DM-Count OT term against batch size and heads per image;
* ``step``: ``bench_step.py``, the training step, plain vs fast path, every model;
* ``inference``: ``bench_inference.py``, full image vs 224/224 sliding windows against image size;
* ``loader``: ``bench_loader.py``, the training loader against the ``cpu`` preset's step.

The default settings (``STANDARD`` below) are cut down from the scripts' full grids so that the run
is meant to finish in under 15 minutes on an idle 2-core CPU: batch 4 at 224² only for the step, no
4096x3072 image, fewer OT cells. The merged file records the machine (``<machine>`` is a short slug of the
host name, architecture and cores), the load average before and after, torch's threads, the library
versions, the git commit, the arguments of every part and each part's full result.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_commit, load_average, machine_info, machine_slug, write  # noqa: E402

HERE = Path(__file__).resolve().parent
PARTS = {"losses": "bench_losses.py", "step": "bench_step.py", "inference": "bench_inference.py",
         "loader": "bench_loader.py"}
STANDARD = {
    "losses": ["--batches", "1", "8", "--points", "50", "500", "2000", "--budget", "2", "--step-reps", "3"],
    "step": ["--batches", "4", "--sizes", "224", "--min-reps", "3", "--max-reps", "3", "--profile"],
    "inference": ["--sizes", "224", "512", "1024x768", "2048x1536", "--min-reps", "2", "--max-reps", "2",
                  "--budget", "20"],
    "loader": ["--batches", "10", "--train-steps", "3", "--min-reps", "3", "--max-reps", "3"],
}
QUICK = {name: ["--quick"] for name in PARTS}
FULL: dict[str, list[str]] = {name: [] for name in PARTS}


def load_script(name: str):
    """Import ``benchmarks/<script>`` as a module (the folder is not a package)."""
    path = HERE / PARTS[name]
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_part(name: str, argv: list[str], scratch: Path) -> dict[str, Any]:
    """One script's result as a dict. ``bench_losses.py`` returns an exit code and writes its JSON, so it
    writes into ``scratch``; the others return their result and write nothing here."""
    module = load_script(name)
    if name == "losses":
        out = scratch / "losses.json"
        module.main([*argv, "--out", str(out)])
        import json

        return json.loads(out.read_text())
    return module.main([*argv, "--no-write"])


def run(args: argparse.Namespace, argv) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL if args.full else STANDARD
    threads = ["--threads", str(args.threads)] if args.threads else []
    t0 = time.perf_counter()
    merged: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)]),
        "what": "the benchmarks of the performance issue, run one after the other; see each part's 'what'",
        "machine": machine_info(), "load_average_before": load_average(), "git": git_commit(),
        "settings": {name: [*plan[name], *threads] for name in args.only}, "parts": {},
    }
    from gigacount_lib.utils import library_versions

    merged["versions"] = library_versions()
    with tempfile.TemporaryDirectory(prefix="gigacount_bench_") as scratch:
        for name in args.only:
            print(f"[run_all] {name}: {PARTS[name]} {' '.join(merged['settings'][name])}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                part = run_part(name, merged["settings"][name], Path(scratch))
                part.setdefault("status", "ok")
            except (Exception, SystemExit) as err:  # one failing part must not lose the others
                part = {"status": f"error: {type(err).__name__}: {err}"[:300],
                        "traceback": traceback.format_exc().splitlines()[-5:]}
            part["run_all_elapsed_s"] = round(time.perf_counter() - start, 2)
            merged["parts"][name] = part
    merged["load_average_after"] = load_average()
    import torch

    merged["torch_threads"] = torch.get_num_threads()
    merged["elapsed_s"] = round(time.perf_counter() - t0, 2)
    merged["markdown"] = "\n\n".join(f"## {name} ({PARTS[name]})\n\n{part.get('markdown', part['status'])}"
                                     for name, part in merged["parts"].items())
    return merged


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run (default: all)")
    p.add_argument("--full", action="store_true", help="every script at its own defaults instead of STANDARD")
    p.add_argument("--quick", action="store_true", help="every script in its --quick smoke mode")
    p.add_argument("--threads", type=int, default=0, help="torch threads for every part (0: torch's default)")
    p.add_argument("--out", default=None, help="merged JSON (default: benchmarks/results/<machine>.json)")
    p.add_argument("--no-write", action="store_true")
    return p


def main(argv=None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick and args.full:
        parser().error("--quick and --full exclude each other")
    merged = run(args, argv)
    print("\n" + merged["markdown"])
    write(merged, args.out or RESULTS / f"{machine_slug()}.json", args.no_write, "run_all")
    return merged


if __name__ == "__main__":
    main()
    sys.exit(0)
