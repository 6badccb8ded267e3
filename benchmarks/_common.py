"""Shared pieces of the benchmark scripts: the machine record, round-robin timing, peak memory of a
configuration in a fresh subprocess, and markdown tables.

Not a benchmark itself; ``bench_step.py``, ``bench_inference.py``, ``bench_loader.py`` and ``run_all.py``
import it. Timing rules it implements (see ``benchmarks/README.md``):

* every compared variant is warmed up, then timed in round-robin (one repetition of each in turn), so
  that a change of load on a shared machine hits all of them alike; the median is reported;
* peak memory on CPU is measured in a fresh process that runs one configuration only: the process's
  own high-water resident set size (Linux ``VmHWM``, reset after the set-up through
  ``/proc/self/clear_refs``), never ``ru_maxrss``, which a child started by ``fork`` + ``exec``
  inherits from its parent on Linux (a worker of a process holding 8 GB reported 8 GB); on CUDA it is
  ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WORKER_MARK = "BENCH_WORKER_RESULT "
"""Prefix of the one stdout line in which a worker subprocess returns its JSON result."""

RECOVERABLE = (MemoryError, RuntimeError)
"""Errors a row records as its status instead of stopping the run (out of memory, unsupported kernel)."""

MIB = 2 ** 20


# ------------------------------------------------------------------------------------------ machine
def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_slug() -> str:
    """A short file-name-safe name of this machine: host, processor architecture and cores."""
    node = re.sub(r"[^a-z0-9]+", "-", platform.node().lower()).strip("-")[:24] or "host"
    arch = re.sub(r"[^a-z0-9_]+", "-", (platform.machine() or platform.processor() or "cpu").lower())
    return f"{node}-{arch}-{os.cpu_count()}c"


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else None. Two machines that both say
    "x86_64, 2 cores" can differ by an order of magnitude in bf16 speed; this tells them apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_record() -> dict[str, Any]:
    """What the training benchmarks record of the CPU: model name and whether bf16 is native there."""
    import torch

    return {"cpu_model": cpu_model(), "native_bf16": bf16_supported(torch.device("cpu"))}


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"slug": machine_slug(), "node": platform.node(),
                            "processor": platform.processor() or platform.machine(), **cpu_record(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
                            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def git_commit() -> dict[str, Any]:
    """The checked-out commit and whether the tracked files differ from it."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def header(script: str, argv: Sequence[str] | None, what: str) -> dict[str, Any]:
    """The fields every result starts with; ``finish`` adds the load average after and the time taken."""
    from gigacount_lib.utils import library_versions

    args = list(sys.argv[1:] if argv is None else argv)
    return {"command": " ".join(["python", f"benchmarks/{script}", *args]), "what": what,
            "machine": machine_info(), "load_average_before": load_average(), "versions": library_versions(),
            "git": git_commit(), "_t0": time.perf_counter()}


def finish(result: dict[str, Any]) -> dict[str, Any]:
    result["load_average_after"] = load_average()
    result["elapsed_s"] = round(time.perf_counter() - result.pop("_t0"), 2)
    return result


def write(result: dict[str, Any], path: str | Path, no_write: bool, tag: str) -> None:
    from gigacount_lib.utils import atomic_write_json

    if no_write:
        return
    atomic_write_json(path, result)
    print(f"[{tag}] wrote {path}", file=sys.stderr)


def add_run_arguments(p, default_out: str | Path, *, device_help: str = "cpu, cuda or auto",
                      memory_worker: bool = True) -> None:
    """The options every timing script shares: ``--device``, ``--threads``, ``--seed``, ``--out``,
    ``--no-write`` and (for scripts that measure memory in a subprocess) the hidden ``--worker``."""
    import argparse

    p.add_argument("--device", default="cpu", help=device_help)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(default_out))
    p.add_argument("--no-write", action="store_true")
    if memory_worker:
        p.add_argument("--worker", help=argparse.SUPPRESS)


def set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def resolve_device(name: str):
    from gigacount_lib.utils import select_device

    return select_device(name)


def bf16_supported(device) -> bool:
    """Whether bfloat16 kernels are native on ``device`` (:func:`gigacount_lib.utils.native_bf16`)."""
    from gigacount_lib.utils import native_bf16

    return native_bf16(device)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------ timing
def time_round_robin(fns: dict[str, Callable[[], Any]], *, warmup: int = 1, min_reps: int = 3,
                     max_reps: int = 7, budget_s: float = 30.0, device=None,
                     self_timed: bool = False) -> dict[str, dict[str, Any]]:
    """Warm each variant up, then time one call of each in turn until ``min_reps`` repetitions are
    done and ``budget_s`` seconds have passed, or ``max_reps`` are done.

    A variant that raises one of :data:`RECOVERABLE` is dropped from the following rounds and gets
    ``status`` ``"error: ..."``; the others go on. Returns, per variant, ``status``, ``times_s``,
    ``median_s``, ``min_s``. ``self_timed``: each call returns the seconds to record itself (so
    that it can leave out a set-up it must redo every time, e.g. starting DataLoader workers).
    """
    out: dict[str, dict[str, Any]] = {name: {"status": "ok", "times_s": []} for name in fns}

    def call(name: str) -> float | None:
        try:
            if device is not None:
                synchronize(device)
            t0 = time.perf_counter()
            value = fns[name]()
            if device is not None:
                synchronize(device)
            return float(value) if self_timed else time.perf_counter() - t0
        except RECOVERABLE as err:
            out[name]["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            return None

    alive = list(fns)
    for _ in range(warmup):
        alive = [name for name in alive if call(name) is not None]
    start = time.perf_counter()
    for rep in range(max_reps):
        if not alive or (rep >= min_reps and time.perf_counter() - start > budget_s):
            break
        for name in list(alive):
            elapsed = call(name)
            if elapsed is None:
                alive.remove(name)
            else:
                out[name]["times_s"].append(elapsed)
    for name, row in out.items():
        times = row["times_s"]
        row["median_s"] = statistics.median(times) if times else None
        row["min_s"] = min(times) if times else None
        row["times_s"] = [round(t, 6) for t in times]
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


# ------------------------------------------------------------------------------------------ memory
def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int:
    """Current resident set size (Linux ``VmRSS``; elsewhere the peak, an upper bound)."""
    rss = _proc_status_bytes("VmRSS")
    return peak_rss_bytes() if rss is None else rss


def peak_rss_bytes() -> int:
    """This process's peak resident set size: Linux ``VmHWM`` (the high-water mark of its own address
    space); elsewhere ``ru_maxrss``, which on Linux would include the parent's RSS at ``fork``."""
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of what runs between :meth:`start` (after the set-up) and :meth:`stop`.

    CPU: the process's peak RSS between the two calls (``peak_mib``; ``VmHWM`` reset at ``start``
    where Linux allows, else the peak since the process began), its growth over the RSS at ``start``
    (``peak_growth_mib``: gradients, optimiser state, activations) and the whole process's peak
    (``process_peak_mib``: set-up included, the figure to compare with a memory budget). Meant for a
    fresh process that runs one configuration. CUDA: the allocator's peak over its allocation at ``start``.
    """

    def __init__(self, device) -> None:
        self.device = device

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base, self.peak_before = rss_bytes(), peak_rss_bytes()
            self.reset = reset_peak_rss()

    def stop(self) -> dict[str, Any]:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return {"memory_kind": "cuda_max_memory_allocated", "base_mib": self.base / MIB,
                    "peak_mib": peak / MIB, "peak_growth_mib": (peak - self.base) / MIB,
                    "process_peak_mib": peak / MIB}
        peak = peak_rss_bytes()
        return {"memory_kind": "peak_rss" if self.reset else "peak_rss_since_start", "base_mib": self.base / MIB,
                "peak_mib": peak / MIB, "setup_peak_mib": self.peak_before / MIB,
                "peak_growth_mib": max(peak - self.base, 0) / MIB,
                "process_peak_mib": max(peak, self.peak_before) / MIB, "peak_reset": self.reset}


def run_worker(script: str | Path, payload: dict[str, Any], timeout_s: float = 1800) -> dict[str, Any]:
    """Run ``script --worker JSON`` in a fresh Python process; returns the dict it prints after
    :data:`WORKER_MARK`, or ``{"status": "failed ..."}`` (killed for memory, error, timeout)."""
    cmd = [sys.executable, str(script), "--worker", json.dumps(payload)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timeout after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(WORKER_MARK):
            return json.loads(line[len(WORKER_MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    why = "killed (signal %d, out of memory?)" % -proc.returncode if proc.returncode < 0 else f"rc {proc.returncode}"
    return {"status": f"failed: {why}", "stderr_tail": tail}


def worker_reply(result: dict[str, Any]) -> None:
    """The worker side of :func:`run_worker`: print the result on one marked line."""
    print(WORKER_MARK + json.dumps(result), flush=True)


def worker_guard(fn: Callable[[dict[str, Any]], dict[str, Any]], payload: dict[str, Any]) -> None:
    """Run ``fn(payload)`` in a worker; a recoverable error is returned as the row's status."""
    try:
        result = fn(payload)
        result.setdefault("status", "ok")
    except RECOVERABLE as err:
        result = {"status": f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
    worker_reply(result)


# ------------------------------------------------------------------------------------------ tables
def fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (str, bool)):
        return str(value)
    return format(value, spec)


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: ``(header, key, format spec)``; a missing or None value prints as ``-``."""
    rows = list(rows)
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" if spec == "s" else "---:" for _, _, spec in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key), spec) for _, key, spec in columns) + " |")
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"1024x768"`` -> width 1024, height 768, returned as ``(height, width)``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) == 1:
            side = int(parts[0])
            return side, side
        if len(parts) == 2:
            width, height = int(parts[0]), int(parts[1])
            return height, width
    except ValueError:
        pass
    raise ValueError(f"size {text!r}: expected N or WIDTHxHEIGHT, e.g. 512 or 1024x768")
