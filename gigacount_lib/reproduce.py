"""One-command reproduction: execute every numbered notebook headless with papermill, then one report.

``make reproduce [PRESET=quick]``, ``gigacount reproduce --preset quick`` or
``python -m gigacount_lib.reproduce --preset quick`` runs ``notebooks/NN_*.ipynb`` in order with the
parameters of a preset (:data:`REPRODUCE_PRESETS`) and writes, under ``reports/<run>/`` (``<run>``
is ``YYYYmmdd-HHMMSS-<preset>`` unless ``--run NAME``):

* the executed notebooks (``NN_name.ipynb``; a failed one is the partial output, up to its error);
* ``output/``: the notebooks' ``output_dir`` (their figures, JSON files and training runs), one per
  run so that nothing of an earlier run is resumed or reported by mistake; the figures are also
  copied to ``figures/``;
* ``report.html``: the notebooks in order behind a table of contents, one self-contained page
  (:mod:`gigacount_lib.report`; it opens offline);
* ``manifest.json``: git commit, library versions, preset, parameters and seeds, wall time and
  status per notebook, machine, and the headline numbers: every ``summary.json`` a notebook's training
  wrote under ``output/`` (MAE, RMSE, ratio to the mean-count predictor), plus, as a hook for the
  notebooks, the contents of any ``output/headline*.json`` (a JSON object of named numbers).

It prints a line as each notebook starts and one when it ends (with its wall time). When a notebook
fails it stops with the failing cell (index and source), the error and the path of the partial
output, after writing the manifest and the report of what ran (:class:`NotebookFailed`). ``--only 04``
runs one notebook, ``--from 04`` resumes from one; both continue the latest run folder of the preset
(or ``--run NAME``), keeping what earlier calls recorded there.

Every notebook takes the same parameters (:data:`NOTEBOOK_PARAMETERS`): a preset maps onto them, so
``tiny`` and ``quick`` both run ``quick=True`` (the notebooks cannot tell them apart), ``cpu`` runs
``quick=False``, and the GPU presets add a dataset root and ``device="cuda"``. Every preset passes
``solutions=True``, so the notebooks' exercises check their reference solutions.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .utils import atomic_write_bytes, atomic_write_json, get_logger, library_versions

log = get_logger("reproduce")

REPO_ROOT = Path(__file__).resolve().parent.parent

# The contract of every notebook's cell tagged ``parameters``.
NOTEBOOK_PARAMETERS = ("data_root", "quick", "device", "seed", "output_dir", "solutions")

__all__ = ["NOTEBOOK_PARAMETERS", "ReproducePreset", "REPRODUCE_PRESETS", "NotebookFailed", "list_notebooks",
           "select_notebooks", "run_notebook", "notebook_parameters", "collect_headline", "reproduce", "main"]


@dataclass(frozen=True)
class ReproducePreset:
    """How one ``reproduce`` preset maps onto the notebooks' parameters.

    ``cell_timeout_s`` is papermill's limit per cell (None: none); ``budget_minutes`` is the target
    wall time of all notebooks together on the machine the preset is for (documentation, not enforced).
    """

    name: str
    quick: bool
    device: str
    needs_data_root: bool
    needs_gpu: bool
    cell_timeout_s: int | None
    budget_minutes: float | None
    description: str


REPRODUCE_PRESETS: dict[str, ReproducePreset] = {p.name: p for p in (
    ReproducePreset("cpu", quick=False, device="cpu", needs_data_root=False, needs_gpu=False, cell_timeout_s=3600,
                    budget_minutes=60, description="everything on the synthetic data, full notebook settings "
                                                   "(quick=False); at most 60 min on 2 CPU cores (the default)"),
    ReproducePreset("quick", quick=True, device="cpu", needs_data_root=False, needs_gpu=False, cell_timeout_s=900,
                    budget_minutes=10, description="the same path with the notebooks' quick settings "
                                                   "(quick=True); a first look in at most 10 min"),
    ReproducePreset("tiny", quick=True, device="cpu", needs_data_root=False, needs_gpu=False, cell_timeout_s=900,
                    budget_minutes=10, description="for CI: quick=True, as the notebook tests run them (the "
                                                   "notebooks have no setting below quick)"),
    ReproducePreset("colab-t4", quick=False, device="cuda", needs_data_root=True, needs_gpu=True, cell_timeout_s=None,
                    budget_minutes=None, description="a GPU and a real dataset root (--data-root, UCF-QNRF "
                                                     "layout); notebook 05 trains the colab-t4 training preset"),
    ReproducePreset("paper", quick=False, device="cuda", needs_data_root=True, needs_gpu=True, cell_timeout_s=None,
                    budget_minutes=None, description="a GPU and a real dataset root; the notebooks run as for "
                                                     "colab-t4 (they choose the training preset themselves)"),
)}
DEFAULT_PRESET = "cpu"


class NotebookFailed(RuntimeError):
    """A notebook raised: which one, the failing cell (index in the source notebook and source), the
    error, and the partial executed copy (``partial``)."""

    def __init__(self, notebook: Path, partial: Path, *, cell_index: int | None, source: str, ename: str,
                 evalue: str, seconds: float, resume_hint: str = "") -> None:
        self.notebook, self.partial, self.cell_index = Path(notebook), Path(partial), cell_index
        self.source, self.ename, self.evalue, self.seconds = source, ename, evalue, seconds
        where = f"cell {cell_index} (counting from 0)" if cell_index is not None else "an unknown cell"
        body = "\n".join("    " + line for line in (source or "<no source>").splitlines()) or "    <empty cell>"
        message = (f"{self.notebook.name} failed in {where} after {seconds:.1f} s:\n{body}\n"
                   f"{ename}: {evalue}\npartial output: {self.partial}")
        if resume_hint:
            message += f"\nresume with: {resume_hint}"
        super().__init__(message)


def list_notebooks(notebook_dir: str | os.PathLike | None = None) -> list[Path]:
    """Numbered notebooks (``NN_*.ipynb``) in execution order."""
    folder = Path(notebook_dir) if notebook_dir else REPO_ROOT / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def _matches(path: Path, key: str) -> bool:
    return path.name.startswith(key) or key in path.stem


def select_notebooks(notebooks: Sequence[Path], *, only: Sequence[str] | None = None,
                     start: str | None = None) -> list[Path]:
    """``only``: the notebooks whose name starts with (or contains) one of the keys (``"04"``);
    ``start``: from the first notebook matching it onwards. A key matching nothing is an error."""
    chosen = list(notebooks)
    names = ", ".join(p.name for p in notebooks)
    if start is not None:
        index = next((i for i, p in enumerate(chosen) if _matches(p, start)), None)
        if index is None:
            raise ValueError(f"--from {start}: no notebook matches; the notebooks are {names}")
        chosen = chosen[index:]
    if only:
        missing = [k for k in only if not any(_matches(p, k) for p in notebooks)]
        if missing:
            raise ValueError(f"--only {' '.join(missing)}: no notebook matches; the notebooks are {names}")
        chosen = [p for p in chosen if any(_matches(p, k) for k in only)]
    return chosen


def notebook_parameters(preset: str | ReproducePreset, *, output_dir: str | os.PathLike, seed: int = 0,
                        data_root: str | None = None, device: str | None = None) -> dict[str, Any]:
    """The :data:`NOTEBOOK_PARAMETERS` of a preset (``solutions=True``: the exercises check their reference
    solutions, so a reproduction shows them passing)."""
    p = REPRODUCE_PRESETS[preset] if isinstance(preset, str) else preset
    return {"data_root": data_root, "quick": p.quick, "device": device or p.device, "seed": int(seed),
            "output_dir": str(Path(output_dir).resolve()), "solutions": True}


def _cell_from_partial(partial: Path, cell_index: int | None) -> tuple[int | None, str]:
    """The failing cell's index in the *source* notebook and its source, read from papermill's partial
    output (which holds an injected-parameters cell and, on a cell error, two error-marker cells)."""
    import nbformat

    try:
        nb = nbformat.read(str(partial), as_version=4)
    except Exception:  # noqa: BLE001 - no partial output: report what is known
        return cell_index, ""
    cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    if cell_index is None:  # a timeout or a dead kernel: the cell papermill marked as running
        cell_index = next((i for i, c in enumerate(cells)
                           if c.get("metadata", {}).get("papermill", {}).get("status") == "running"), None)
        if cell_index is None:
            return None, ""
    if not 0 <= cell_index < len(cells):
        return cell_index, ""
    injected = sum("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in cells[:cell_index])
    return cell_index - injected, cells[cell_index].source


def run_notebook(notebook: str | os.PathLike, output_path: str | os.PathLike, *,
                 parameters: dict[str, Any] | None = None, kernel_name: str | None = None,
                 timeout_s: int | None = 3600, progress_bar: bool = False) -> Path:
    """Execute ``notebook`` with papermill, injecting ``parameters``; returns the executed copy.

    The notebook runs with its own folder as the working directory, as it would in Jupyter.
    ``timeout_s`` is the limit per cell (None: none). A failing cell raises :class:`NotebookFailed`
    naming it; the partial notebook is at ``output_path``.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    output_path = Path(output_path).resolve()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    unknown = set(parameters or {}) - set(NOTEBOOK_PARAMETERS)
    if unknown:
        raise ValueError(f"{notebook.name}: unknown notebook parameters {sorted(unknown)}; "
                         f"the contract is {NOTEBOOK_PARAMETERS}")
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"  # headless plotting in the kernel
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(notebook), str(output_path), parameters=dict(parameters or {}),
            cwd=str(notebook.parent), kernel_name=kernel_name, progress_bar=progress_bar,
            execution_timeout=timeout_s, log_output=False,
        )
    except PapermillExecutionError as exc:
        index, source = _cell_from_partial(output_path, exc.cell_index)
        raise NotebookFailed(notebook, output_path, cell_index=index, source=source or exc.source,
                             ename=exc.ename, evalue=exc.evalue, seconds=time.perf_counter() - start) from exc
    except Exception as exc:  # a cell timeout, a dead kernel: still name the cell that was running
        index, source = _cell_from_partial(output_path, None)
        raise NotebookFailed(notebook, output_path, cell_index=index, source=source, ename=type(exc).__name__,
                             evalue=" ".join(str(exc).split()), seconds=time.perf_counter() - start) from exc
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
    return output_path


# --------------------------------------------------------------------------- manifest parts
def _git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=str(REPO_ROOT)).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    return {"commit": commit or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None}


def _machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "python": platform.python_version(), "gpus": []}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - torch missing or broken: the manifest still gets written
        pass
    gpus = ", ".join(info["gpus"]) or "no GPU"
    info["summary"] = f"{info['processor']}, {info['cpu_count']} CPU cores, {gpus}"
    return info


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


def _read_headline_json(path: Path):
    """A notebook's JSON output, or None (with a warning) when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable (%s); left out of the headline numbers", path, exc)
        return None


def collect_headline(output_dir: str | os.PathLike) -> dict[str, Any]:
    """The headline numbers of a run's ``output_dir``.

    ``runs``: one entry per ``summary.json`` found below it (the Trainer's; its run folder, status,
    test MAE/RMSE, trivial MAE, the ratio, steps, seconds, and the seed from the run's ``config.json``).
    ``notebooks``: the merged JSON objects of ``output_dir/headline*.json``, the hook for numbers a
    notebook wants in the manifest and the report (e.g. notebook 06's Table 3 summary).
    """
    output_dir = Path(output_dir)
    runs, extra = [], {}
    for path in sorted(output_dir.rglob("summary.json")):
        summary = _read_headline_json(path)
        if not isinstance(summary, dict) or "status" not in summary:
            continue
        test = summary.get("test") or {}
        seed = None
        config = path.parent / "config.json"
        if config.is_file():
            try:
                seed = json.loads(config.read_text()).get("seed")
            except (OSError, json.JSONDecodeError):
                pass
        runs.append({"path": str(path.parent.relative_to(output_dir)), "status": summary.get("status"),
                     "test_mae": _number(test.get("mae")), "test_rmse": _number(test.get("rmse")),
                     "trivial_mae": _number(summary.get("trivial_mae")),
                     "mae_ratio_to_trivial": _number(summary.get("mae_ratio_to_trivial")),
                     "global_step": summary.get("global_step"), "train_seconds": summary.get("train_seconds"),
                     "seed": seed, "protocol_label": summary.get("protocol_label")})
    for path in sorted(output_dir.glob("headline*.json")):
        data = _read_headline_json(path)
        if data is None:
            continue
        if isinstance(data, dict):
            extra.update(data)
        else:
            log.warning("%s: not a JSON object; left out of the headline numbers", path)
    return {"runs": runs, "notebooks": extra}


_FIGURE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def _copy_figures(output_dir: Path, figures: Path) -> int:
    figures.mkdir(parents=True, exist_ok=True)
    copied = 0
    for path in sorted(output_dir.iterdir()) if output_dir.is_dir() else []:
        if path.is_file() and path.suffix.lower() in _FIGURE_SUFFIXES:
            atomic_write_bytes(figures / path.name, path.read_bytes())
            copied += 1
    return copied


def _latest_run(reports: Path, preset: str) -> Path | None:
    runs = sorted(p for p in reports.glob(f"*-{preset}") if (p / "manifest.json").is_file()
                  and re.match(r"\d{8}-\d{6}-", p.name))
    return runs[-1] if runs else None


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the run
def reproduce(preset: str = DEFAULT_PRESET, *, data_root: str | None = None, device: str | None = None,
              seed: int = 0, run: str | None = None, only: Sequence[str] | None = None,
              start: str | None = None, reports_dir: str | os.PathLike | None = None,
              figures_dir: str | os.PathLike | None = None, notebook_dir: str | os.PathLike | None = None,
              mathjax_url: str | None = None, progress: bool | None = None, quick: bool | None = None) -> dict:
    """Run the notebooks of ``preset``; returns the manifest (also ``reports/<run>/manifest.json``).

    Args:
        preset: a name of :data:`REPRODUCE_PRESETS` (``cpu`` by default; ``tiny`` is what CI runs).
        data_root: dataset root for the notebooks (required by ``colab-t4`` and ``paper``).
        device: overrides the preset's device (``auto``, ``cpu``, ``cuda``).
        seed: the notebooks' seed.
        run: the run folder's name under ``reports_dir`` (default ``YYYYmmdd-HHMMSS-<preset>``, or with
            ``only``/``start`` the latest run of the preset, continued).
        only, start: run only the matching notebooks / from the matching notebook on (``"04"``).
        reports_dir, figures_dir, notebook_dir: default ``reports/``, ``figures/``, ``notebooks/``.
        mathjax_url: typeset LaTeX in the report with MathJax from this URL (default: none, offline).
        progress: papermill's per-cell progress bar (default: when stderr is a terminal).
        quick: the old switch; ``True`` means ``preset="quick"``.

    Raises :class:`NotebookFailed` (after writing the manifest and the report) when a notebook fails.
    """
    if quick:
        preset = "quick"
    if preset not in REPRODUCE_PRESETS:
        raise ValueError(f"unknown reproduce preset {preset!r}; choose one of {', '.join(REPRODUCE_PRESETS)}")
    p = REPRODUCE_PRESETS[preset]
    if p.needs_data_root and not data_root:
        raise ValueError(f"preset {preset!r} needs a real dataset: pass --data-root DIR (UCF-QNRF layout; "
                         "`gigacount download qnrf --root DIR` fetches it); the synthetic data is for cpu/quick/tiny")
    device = device or p.device
    if p.needs_gpu and device != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"preset {preset!r} is for a GPU and none is visible here; use --preset cpu or "
                               "quick on this machine, or Colab (README, 'Reproducing on a GPU')")
    reports = Path(reports_dir) if reports_dir else REPO_ROOT / "reports"
    figures = Path(figures_dir) if figures_dir else REPO_ROOT / "figures"
    all_notebooks = list_notebooks(notebook_dir)
    if not all_notebooks:
        raise FileNotFoundError(f"no numbered notebooks found under {notebook_dir or REPO_ROOT / 'notebooks'}")
    chosen = select_notebooks(all_notebooks, only=only, start=start)
    if run is not None and (Path(run).name != run or run in ("", ".", "..")):
        raise ValueError(f"--run {run!r}: must be a plain folder name")
    if run is None and (only or start):
        latest = _latest_run(reports, preset)
        run_dir = latest if latest is not None else reports / f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{preset}"
    else:
        run_dir = reports / (run or f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{preset}")
    output_dir = run_dir / "output"
    output_dir.mkdir(parents=True, exist_ok=True)
    params = notebook_parameters(p, output_dir=output_dir, seed=seed, data_root=data_root, device=device)

    previous: dict[str, dict] = {}
    manifest_path = run_dir / "manifest.json"
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
            if old.get("preset") not in (None, preset):
                raise ValueError(f"{run_dir} is a run of preset {old.get('preset')!r}, not {preset!r}; "
                                 "pass another --run")
            previous = {e["notebook"]: e for e in old.get("notebooks", [])}
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable (%s); starting its manifest afresh", manifest_path, exc)
    started = _now()
    wall_start = time.perf_counter()
    manifest: dict[str, Any] = {
        "run": run_dir.name, "preset": preset, "preset_settings": asdict(p), "parameters": params,
        "seeds": [int(seed)], "data": data_root or "embedded synthetic dataset",
        "data_label": "synthetic data: numbers here are not UCF-QNRF (or any benchmark) results"
        if not data_root else f"dataset root {data_root}",
        "git": _git_info(), "versions": library_versions(), "machine": _machine_info(),
        "started": started, "finished": None, "wall_seconds": 0.0, "notebooks": [],
        "reports_dir": str(run_dir.resolve()), "output_dir": str(output_dir.resolve()),
        "figures_dir": str(figures.resolve()), "report": str((run_dir / "report.html").resolve()),
        "headline": {"runs": [], "notebooks": {}}}

    entries: dict[str, dict] = dict(previous)

    def write_manifest() -> None:
        order = {nb.name: i for i, nb in enumerate(all_notebooks)}
        manifest["notebooks"] = sorted(entries.values(), key=lambda e: order.get(e["notebook"], 1 << 30))
        manifest["wall_seconds"] = round(sum(float(e.get("seconds") or 0) for e in manifest["notebooks"]), 1)
        manifest["headline"] = collect_headline(output_dir)
        seeds = {int(seed)} | {r["seed"] for r in manifest["headline"]["runs"] if isinstance(r.get("seed"), int)}
        manifest["seeds"] = sorted(seeds)
        atomic_write_json(manifest_path, manifest)

    def write_report() -> None:
        executed = [e for e in manifest["notebooks"] if e.get("status") in ("ok", "failed")
                    and Path(e["executed"]).is_file()]
        if not executed:
            return
        from .report import build_report

        try:
            build_report([e["executed"] for e in executed], run_dir / "report.html", manifest=manifest,
                         image_dirs=[e.get("source_dir") for e in executed],
                         statuses=[e["status"] for e in executed], mathjax_url=mathjax_url)
        except Exception as exc:  # noqa: BLE001 - a report problem must not hide the run's own result
            log.error("could not build %s: %s", run_dir / "report.html", exc)
            manifest["report_error"] = f"{type(exc).__name__}: {exc}"
            atomic_write_json(manifest_path, manifest)

    if progress is None:
        progress = sys.stderr.isatty()
    print(f"reproduce: preset {preset} ({p.description}); {len(chosen)} notebook(s) -> {run_dir}/", flush=True)
    for k, nb in enumerate(chosen, start=1):
        out = run_dir / nb.name
        tag = f"[{k}/{len(chosen)}] {nb.stem}"
        print(f"{tag}: running ({_dt.datetime.now():%H:%M:%S})", flush=True)
        entry = {"notebook": nb.name, "executed": str(out.resolve()), "source_dir": str(nb.parent.resolve()),
                 "status": "running", "started": _now(), "seconds": None}
        entries[nb.name] = entry
        write_manifest()
        start_t = time.perf_counter()
        try:
            run_notebook(nb, out, parameters=params, timeout_s=p.cell_timeout_s, progress_bar=progress)
        except NotebookFailed as exc:
            entry.update(status="failed", seconds=round(time.perf_counter() - start_t, 1),
                         error={"cell_index": exc.cell_index, "source": exc.source, "ename": exc.ename,
                                "evalue": exc.evalue})
            _copy_figures(output_dir, figures)
            manifest["finished"] = _now()
            write_manifest()
            write_report()
            print(f"{tag}: FAILED after {entry['seconds']:.1f} s", flush=True)
            hint = (f"python -m gigacount_lib.reproduce --preset {preset} --run {run_dir.name} --from {nb.name[:2]}"
                    + (f" --data-root {data_root}" if data_root else "")
                    + (f" --reports-dir {reports_dir}" if reports_dir else ""))
            raise NotebookFailed(exc.notebook, exc.partial, cell_index=exc.cell_index, source=exc.source,
                                 ename=exc.ename, evalue=exc.evalue, seconds=exc.seconds,
                                 resume_hint=hint) from exc
        except BaseException as exc:  # Ctrl-C (or a bug of ours): record where it stopped, then leave
            entry.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "error",
                         seconds=round(time.perf_counter() - start_t, 1))
            write_manifest()
            raise
        entry.update(status="ok", seconds=round(time.perf_counter() - start_t, 1))
        copied = _copy_figures(output_dir, figures)
        write_manifest()
        print(f"{tag}: done in {entry['seconds']:.1f} s ({copied} figure(s) in {figures})", flush=True)
    manifest["finished"] = _now()
    manifest["this_call_seconds"] = round(time.perf_counter() - wall_start, 1)
    write_manifest()
    write_report()
    return manifest


def build_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {p.name:<9} {p.description}" for p in REPRODUCE_PRESETS.values())
    parser = argparse.ArgumentParser(
        prog="python -m gigacount_lib.reproduce", description=__doc__.splitlines()[0],
        epilog=f"presets:\n{lines}", formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The reproduce options (shared with ``gigacount reproduce``)."""
    parser.add_argument("--preset", default=None, choices=list(REPRODUCE_PRESETS),
                        help=f"parameter preset (default {DEFAULT_PRESET})")
    parser.add_argument("--quick", action="store_true", help="alias of --preset quick")
    parser.add_argument("--data-root", default=None, help="dataset root (UCF-QNRF layout); default: synthetic")
    parser.add_argument("--device", default=None, help="override the preset's device (auto, cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", default=None, help="run folder name under the reports folder "
                                                    "(default: a timestamp and the preset)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NN", help="run only these notebooks (e.g. 04)")
    parser.add_argument("--from", dest="start", default=None, metavar="NN", help="resume from this notebook")
    parser.add_argument("--reports-dir", default=None, help="default: reports/")
    parser.add_argument("--figures-dir", default=None, help="default: figures/")
    parser.add_argument("--mathjax-url", default=None,
                        help="typeset LaTeX in report.html with MathJax from this URL (the page then needs it)")


def run_from_args(args: argparse.Namespace) -> int:
    if args.quick and args.preset not in (None, "quick"):
        print(f"reproduce: --quick and --preset {args.preset} disagree; pass one", file=sys.stderr)
        return 2
    preset = "quick" if args.quick else (args.preset or DEFAULT_PRESET)
    try:
        manifest = reproduce(preset, data_root=args.data_root, device=args.device, seed=args.seed, run=args.run,
                             only=args.only, start=args.start, reports_dir=args.reports_dir,
                             figures_dir=args.figures_dir, mathjax_url=args.mathjax_url)
    except NotebookFailed as exc:
        print(f"reproduce: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"reproduce: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"Executed notebooks: {manifest['reports_dir']}/")
    for entry in manifest["notebooks"]:
        seconds = entry.get("seconds")
        print(f"  {entry['notebook']:<40} {entry['status']:<8} {seconds if seconds is not None else '-':>7} s")
    print(f"Report:             {manifest['report']}")
    print(f"Figures:            {manifest['figures_dir']}/")
    print(f"Manifest:           {Path(manifest['reports_dir']) / 'manifest.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
