"""One-command reproduction: execute every numbered notebook headless with papermill.

``make reproduce`` (or ``python -m gigacount_lib.reproduce``) runs ``notebooks/NN_*.ipynb`` in
order on the embedded synthetic dataset, writes the executed copies to ``reports/`` and the
figures to ``figures/``, and prints where they are. Every notebook takes the same parameters
(see :data:`NOTEBOOK_PARAMETERS`), so the same call serves tests (``quick=True``) and the full run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .utils import atomic_write_json, get_logger, library_versions

log = get_logger("reproduce")

REPO_ROOT = Path(__file__).resolve().parent.parent

# The contract of every notebook's cell tagged ``parameters``.
NOTEBOOK_PARAMETERS = ("data_root", "quick", "device", "seed", "output_dir")


def list_notebooks(notebook_dir: str | os.PathLike | None = None) -> list[Path]:
    """Numbered notebooks (``NN_*.ipynb``) in execution order."""
    folder = Path(notebook_dir) if notebook_dir else REPO_ROOT / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(notebook: str | os.PathLike, output_path: str | os.PathLike, *,
                 parameters: dict[str, Any] | None = None, kernel_name: str | None = None,
                 timeout_s: int = 3600) -> Path:
    """Execute ``notebook`` with papermill, injecting ``parameters``; returns the executed copy.

    The notebook runs with its own folder as the working directory, as it would in Jupyter.
    """
    import papermill as pm

    notebook = Path(notebook).resolve()
    output_path = Path(output_path).resolve()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    unknown = set(parameters or {}) - set(NOTEBOOK_PARAMETERS)
    if unknown:
        raise ValueError(f"{notebook.name}: unknown notebook parameters {sorted(unknown)}; "
                         f"the contract is {NOTEBOOK_PARAMETERS}")
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"  # headless plotting in the kernel
    try:
        pm.execute_notebook(
            str(notebook), str(output_path), parameters=dict(parameters or {}),
            cwd=str(notebook.parent), kernel_name=kernel_name, progress_bar=False,
            execution_timeout=timeout_s, log_output=False,
        )
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
    return output_path


def reproduce(*, quick: bool = False, data_root: str | None = None, device: str = "auto", seed: int = 0,
              reports_dir: str | os.PathLike | None = None, figures_dir: str | os.PathLike | None = None,
              only: list[str] | None = None) -> dict:
    """Run every notebook; returns (and writes to ``reports/manifest.json``) what was run and where."""
    reports = Path(reports_dir) if reports_dir else REPO_ROOT / "reports"
    figures = Path(figures_dir) if figures_dir else REPO_ROOT / "figures"
    reports.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    notebooks = list_notebooks()
    if only:
        notebooks = [nb for nb in notebooks if any(key in nb.name for key in only)]
    if not notebooks:
        raise FileNotFoundError(f"no numbered notebooks found under {REPO_ROOT / 'notebooks'}")
    manifest = {"quick": quick, "data": data_root or "embedded synthetic dataset", "device": device,
                "seed": seed, "versions": library_versions(), "notebooks": []}
    params = {"data_root": data_root, "quick": quick, "device": device, "seed": seed,
              "output_dir": str(figures.resolve())}
    for nb in notebooks:
        out = reports / nb.name
        log.info("executing %s -> %s", nb.name, out)
        start = time.perf_counter()
        run_notebook(nb, out, parameters=params)
        seconds = round(time.perf_counter() - start, 1)
        manifest["notebooks"].append({"notebook": nb.name, "executed": str(out), "seconds": seconds})
        log.info("%s done in %.1f s", nb.name, seconds)
    atomic_write_json(reports / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small, fast settings (as in the tests)")
    parser.add_argument("--data-root", default=None, help="dataset root (UCF-QNRF layout); default: synthetic")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reports-dir", default=None)
    parser.add_argument("--figures-dir", default=None)
    parser.add_argument("--only", nargs="*", help="run only notebooks whose name contains one of these")
    args = parser.parse_args(argv)
    manifest = reproduce(quick=args.quick, data_root=args.data_root, device=args.device, seed=args.seed,
                         reports_dir=args.reports_dir, figures_dir=args.figures_dir, only=args.only)
    reports = Path(manifest["notebooks"][0]["executed"]).parent
    print(f"Executed notebooks: {reports}/")
    for entry in manifest["notebooks"]:
        print(f"  {entry['notebook']:<40} {entry['seconds']:>7.1f} s")
    print(f"Figures:            {Path(args.figures_dir or REPO_ROOT / 'figures').resolve()}/")
    print(f"Manifest:           {reports / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
