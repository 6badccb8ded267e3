"""The ablation study (the paper's Table 3): a grid of variants, equal budgets, several seeds.

A :class:`Variant` is a named set of config overrides of one base preset; the variants of an
:class:`AblationAxis` change one thing. :func:`run_ablation` trains every (variant, seed) with the
:class:`~gigacount_lib.train.Trainer` into ``out_dir/<variant>/seed<k>/`` and returns a tidy DataFrame,
one row per run, also written atomically to ``out_dir/ablation.csv`` after every run;
:func:`summarise` gives mean ± std over the seeds.

* **Equal budgets**: every variant gets the same ``epochs`` and ``max_minutes`` (a variant may not
  override them, nor the seed); under a time budget a slower variant takes fewer steps (``steps``).
* **Resumable**: a finished run (``summary.json``) is skipped and its row read back; an unfinished one
  with ``last.pt`` resumes. A run folder whose ``config.json`` differs from the config asked for is
  an error naming the folder and the fields.
* **Shared runs**: variants that resolve to the same config are trained once (``shared_with``).
* **Structural axes** go through ``model.options`` (``keep_stage4``, ``scales``, ``block_type``), so
  they apply to ``gigacount`` and to the CPU model ``gigacount_atto`` alike.

On 2 CPU cores (synthetic data, random init, minutes of training) a grid shows large, early effects
and the seed-to-seed spread, not the paper's Table 3 (UCF-QNRF, pretrained weights, 600 epochs);
notebook 06 says what such a table can and cannot show.

Command line::

    python -m gigacount_lib.ablation --preset cpu-quick --axes schedule loss --seeds 0 1 2 \\
        --out runs/ablation --set epochs=3
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .utils import atomic_write_bytes, get_logger

__all__ = ["Variant", "AblationAxis", "AXES", "DEFAULT_SEEDS", "FINISHED_STATUSES", "TABLE_COLUMNS",
           "default_grid", "list_axes", "apply_overrides", "variant_config", "run_state", "run_ablation",
           "read_table", "summarise", "versus_reference", "main"]

log = get_logger("ablation")

DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
# Trainer summary statuses that end a run for good (``interrupted`` can be resumed).
FINISHED_STATUSES = ("completed", "patience", "time budget")
# Fields that make the budget or the replicate; a variant may not override them.
_RESERVED = ("epochs", "max_minutes", "seed")

TABLE_COLUMNS = ["axis", "variant", "seed", "status", "steps", "epochs_run", "train_seconds", "test_mae",
                 "test_rmse", "trivial_mae", "ratio", "best_val_mae", "best_val_mae_epoch", "epochs",
                 "max_minutes", "base_preset", "reused", "shared_with", "run_dir", "error"]


@dataclass(frozen=True)
class Variant:
    """One configuration of the grid: ``overrides`` (``"section.field=value"``, values JSON) applied
    to the base preset with :func:`apply_overrides`; ``axis`` names the question it answers."""

    name: str
    axis: str
    overrides: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"Variant name {self.name!r}: must be a plain folder name")
        object.__setattr__(self, "overrides", tuple(self.overrides))
        for item in self.overrides:
            key = item.split("=", 1)[0].strip()
            if key in _RESERVED:
                raise ValueError(f"Variant {self.name!r}: {key!r} is set for the whole grid (equal budgets, "
                                 "seeds), not per variant")


@dataclass(frozen=True)
class AblationAxis:
    """The variants that change one thing, the reference among them, and the paper's claim."""

    name: str
    variants: tuple[Variant, ...]
    reference: str  # the variant that is the paper's model on this axis
    claim: str = ""  # what the paper reports (or, for axes it does not ablate, why we look)


def _axis(name: str, reference: str, claim: str, *variants: tuple[str, Sequence[str], str]) -> AblationAxis:
    return AblationAxis(name, tuple(Variant(v, name, tuple(o), d) for v, o, d in variants), reference, claim)


AXES: dict[str, AblationAxis] = {a.name: a for a in (
    _axis("stage4", "no_stage4",
          "the paper: removing ConvNeXt stage 4 lowers the UCF-QNRF MAE (135.05 -> 116.93, 150 epochs)",
          ("no_stage4", ["model.options.keep_stage4=false"], "ConvNeXt stages 1-3 (GigaCount)"),
          ("stage4", ["model.options.keep_stage4=true"], "stage 4 kept and fused too")),
    _axis("augmentation", "aug_official",
          "the paper: augmentation helps, mostly late in training; low light targets dark scenes",
          ("aug_none", ["data.augmentation=none"], "random crops only"),
          ("aug_official", ["data.augmentation=official"], "the official pipeline"),
          ("aug_official_low_light", ["data.augmentation=official_low_light"], "official + random low light")),
    _axis("schedule", "schedule_official",
          "the paper: a learning-rate schedule is needed (warm-up, then cosine with restarts)",
          ("schedule_none", ["schedule.name=none"], "constant learning rate, no warm-up"),
          ("schedule_step", ["schedule.name=step"], "warm-up, then step decay"),
          ("schedule_cosine", ["schedule.name=cosine"], "warm-up, then cosine to eta_min"),
          ("schedule_linear", ["schedule.name=linear"], "warm-up, then linear to eta_min"),
          ("schedule_official", ["schedule.name=official"], "warm-up, then cosine with warm restarts")),
    _axis("loss", "loss_hybrid",
          "the paper: the Adaptive Hybrid loss (CE + L_Prob + DM-Count) improves on CLIP-EBC's DACE",
          ("loss_hybrid", ["loss.name=hybrid"], "Adaptive Hybrid: CE + L_Prob + count (DM-Count)"),
          ("loss_dace", ["loss.name=dace"], "DACE: CE + count (CLIP-EBC)"),
          ("loss_no_ce", ["loss.name=hybrid", "loss.options.weight_ce=0"], "hybrid without CE"),
          ("loss_no_prob", ["loss.name=hybrid", "loss.options.weight_prob=0"], "hybrid without L_Prob"),
          ("loss_no_count", ["loss.name=hybrid", "loss.options.weight_count=0"], "hybrid without the count term")),
    _axis("fusion", "fusion",
          "the paper: fusing the stride-4/8/16 maps beats the deepest map alone",
          ("fusion", ["model.options.scales=[0, 1, 2]"], "multi-scale fusion of stages 1-3"),
          ("no_fusion", ["model.options.scales=[2]"], "stage 3 (stride 16) only")),
    _axis("encoder", "encoder_convnext",
          "paper text vs official code: ODConv blocks in the encoder, or ODConv only in the attention blocks",
          ("encoder_convnext", ["model.options.block_type=convnext"], "plain ConvNeXt blocks (official code)"),
          ("encoder_odconv", ["model.options.block_type=odconv"], "depthwise convs replaced by ODConv (paper text)")),
    _axis("ot_mode", "ot_reference",
          "not in the paper: DM-Count's published Sinkhorn numerics against the exact OT potentials",
          ("ot_reference", ["loss.options.mode=reference"], "published Sinkhorn numerics"),
          ("ot_exact", ["loss.options.mode=exact"], "exact OT potentials")),
)}


def list_axes() -> list[str]:
    return list(AXES)


def default_grid(axes: Iterable[str] | None = None) -> list[Variant]:
    """The variants of ``axes`` (default: all, in :data:`AXES` order, the paper's Table 3 axes first)."""
    names = list(AXES) if axes is None else list(axes)
    unknown = [a for a in names if a not in AXES]
    if unknown:
        raise ValueError(f"unknown ablation axis {unknown}; choose from {', '.join(AXES)}")
    return [v for a in names for v in AXES[a].variants]


# --------------------------------------------------------------------------- configs
def _merge(base: Any, new: Any) -> Any:
    """``new`` merged into ``base`` when both are dicts (recursively); otherwise ``new``."""
    if isinstance(base, dict) and isinstance(new, dict):
        out = dict(base)
        for k, v in new.items():
            out[k] = _merge(base.get(k), v)
        return out
    return new


def apply_overrides(config, overrides: Iterable[str]):
    """A copy of ``config`` with ``"a.b=value"`` assignments applied (values JSON, else strings).

    Unlike :meth:`TrainConfig.override`, a dict value is *merged* into a dict field
    (``'model.options={"keep_stage4": true}'`` keeps the preset's other options) and a dotted name may
    reach into a dict field, adding the key if needed (``model.options.keep_stage4=true``). Names of
    config sections and fields are still checked.
    """
    from .config import TrainConfig, parse_assignment

    data = config.to_dict()
    for item in overrides:
        key, value = parse_assignment(item)
        path = [p for p in key.strip().split(".")]
        target: Any = data
        inside_field = False  # True once the path has entered a dict-valued field (free keys)
        for depth, name in enumerate(path[:-1]):
            if name not in target and not inside_field:
                raise ValueError(f"override {item!r}: no field {'.'.join(path[:depth + 1])!r}")
            if name not in target:
                target[name] = {}
            if not isinstance(target[name], dict):
                raise ValueError(f"override {item!r}: {'.'.join(path[:depth + 1])!r} is not a section or dict field")
            # a dict below a config section is a field (options), whose keys are free
            inside_field = inside_field or depth >= 1
            target = target[name]
        last = path[-1]
        if last not in target and not inside_field:
            raise ValueError(f"override {item!r}: no field {key.strip()!r}")
        target[last] = _merge(target.get(last), value)
    return TrainConfig.from_dict(data)


def variant_config(variant: Variant, seed: int, base_preset: str = "cpu-quick", *,
                   overrides: Sequence[str] = (), epochs: int | None = None, max_minutes: float | None = None):
    """The config of one run: base preset, then the grid-wide ``overrides``, then the variant's, then
    the budget (``epochs``, ``max_minutes``; None keeps the preset's) and the seed."""
    from .config import get_preset

    for item in overrides:
        if item.split("=", 1)[0].strip() == "seed":
            raise ValueError(f"override {item!r}: the seeds are the grid's replicates; pass seeds=[...]")
    config = apply_overrides(get_preset(base_preset), overrides)
    config = apply_overrides(config, variant.overrides)
    budget = [f"seed={int(seed)}"]
    if epochs is not None:
        budget.append(f"epochs={int(epochs)}")
    if max_minutes is not None:
        budget.append(f"max_minutes={float(max_minutes)!r}")
    return config.override(*budget)


def _model_check(config, variant: Variant) -> None:
    structural = {"keep_stage4", "scales", "block_type"}
    if structural & set(config.model.options) and config.model.name not in ("gigacount", "gigacount_atto"):
        raise ValueError(f"variant {variant.name!r}: the structural options {sorted(structural)} apply to the "
                         f"base models 'gigacount' and 'gigacount_atto', not {config.model.name!r}")


def _normalised(config_dict: dict) -> dict:
    return json.loads(json.dumps(config_dict, default=str))


# Builder defaults of the GigaCount variants: an option set to its default builds the same model.
_STRUCTURAL_MODELS = ("gigacount", "gigacount_atto")


def _canonical(config_dict: dict) -> dict:
    """The config with GigaCount builder options at their defaults dropped (``keep_stage4=false``,
    ``block_type="convnext"``, ``scales`` = every encoder map), so that equal runs compare equal."""
    data = _normalised(config_dict)
    model = data.get("model", {})
    if model.get("name") in _STRUCTURAL_MODELS:
        options = dict(model.get("options") or {})
        if options.get("keep_stage4") is False:
            options.pop("keep_stage4")
        if options.get("block_type") == "convnext":
            options.pop("block_type")
        maps = 4 if options.get("keep_stage4") else 3
        if "scales" in options and list(options["scales"] or []) == list(range(maps)):
            options.pop("scales")
        model["options"] = options
    return data


def _config_key(config_dict: dict) -> str:
    return json.dumps(_canonical(config_dict), sort_keys=True)


def _index_runs(out_dir: Path) -> dict[str, str]:
    """Run folders already under ``out_dir``: canonical config -> the variant folder holding it."""
    index: dict[str, str] = {}
    for path in sorted(out_dir.glob("*/seed*/config.json")):
        try:
            key = _config_key(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
        index.setdefault(key, path.parent.parent.name)
    return index


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}: {x!r} there, {y!r} asked")
    return out


# --------------------------------------------------------------------------- runs
def run_state(run_dir: str | os.PathLike) -> str:
    """``"finished"`` (a summary with a finished status), ``"resumable"`` (``last.pt``, no finished
    summary) or ``"new"``."""
    run_dir = Path(run_dir)
    summary = _read_summary(run_dir)
    if summary is not None and summary.get("status") in FINISHED_STATUSES:
        return "finished"
    if (run_dir / "last.pt").is_file():
        return "resumable"
    return "new"


def _read_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:  # a damaged summary: the run is redone from last.pt
        log.warning("%s: unreadable (%s); treating the run as unfinished", path, exc)
        return None


def _nan_or(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _row(variant: Variant, seed: int, run_dir: Path, summary: dict | None, *, base_preset: str, config,
         reused: bool, shared_with: str = "", status: str | None = None, error: str = "") -> dict[str, Any]:
    summary = summary or {}
    test = summary.get("test") or {}
    best = summary.get("best") or {}
    return {
        "axis": variant.axis, "variant": variant.name, "seed": int(seed),
        "status": status or summary.get("status", "pending"),
        "steps": summary.get("global_step", 0), "epochs_run": summary.get("epochs_run", 0),
        "train_seconds": _nan_or(summary.get("train_seconds")),
        "test_mae": _nan_or(test.get("mae")), "test_rmse": _nan_or(test.get("rmse")),
        "trivial_mae": _nan_or(summary.get("trivial_mae")), "ratio": _nan_or(summary.get("mae_ratio_to_trivial")),
        "best_val_mae": _nan_or(best.get("mae")),
        "best_val_mae_epoch": (int(best["mae_epoch"]) + 1) if "mae_epoch" in best else -1,
        "epochs": config.epochs, "max_minutes": _nan_or(config.max_minutes), "base_preset": base_preset,
        "reused": bool(reused), "shared_with": shared_with, "run_dir": str(run_dir), "error": error,
    }


def _write_table(rows: list[dict], path: Path):
    import pandas as pd

    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
    return table


def run_ablation(variants: Sequence[Variant] | None = None, seeds: Sequence[int] = DEFAULT_SEEDS,
                 base_preset: str = "cpu-quick", out_dir: str | os.PathLike = "runs/ablation", *,
                 epochs: int | None = None, max_minutes: float | None = None, overrides: Sequence[str] = (),
                 progress: bool = False, errors: str = "record"):
    """Train every ``(variant, seed)`` (resuming and skipping as the module docstring says); returns the table.

    Args:
        variants: the grid (default :func:`default_grid`, every axis).
        seeds: replicate seeds (``config.seed``: initialisation, batch order, augmentation, held-out split).
        base_preset: the preset every variant is relative to.
        out_dir: run folders ``<out_dir>/<variant>/seed<k>/`` and the table ``<out_dir>/ablation.csv``.
        epochs, max_minutes: the budget of every run (None: the preset's).
        overrides: ``"a.b=value"`` applied to every variant before its own (e.g. a data root, a smaller
            ``data.batch_size``); budget fields go here too and so stay equal.
        progress: the Trainer's progress bars.
        errors: ``"record"`` (a failed run becomes a row with status ``failed`` and its error, and the
            grid goes on) or ``"raise"``.

    Returns a :class:`pandas.DataFrame` with the columns :data:`TABLE_COLUMNS`, one row per
    ``(variant, seed)`` in grid order; ``reused`` is True for rows read back from a finished run.
    """
    from .train import Trainer

    if errors not in ("record", "raise"):
        raise ValueError(f"errors must be 'record' or 'raise', got {errors!r}")
    variants = list(default_grid() if variants is None else variants)
    seeds = [int(s) for s in seeds]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {sorted(n for n in set(names) if names.count(n) > 1)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    out_dir = Path(out_dir)
    # Resolve (and so validate) every config before training anything.
    plan = []
    existing = _index_runs(out_dir)  # runs of earlier calls (other axes) are reused too
    owners: dict[str, str] = {}
    for variant in variants:
        for seed in seeds:
            config = variant_config(variant, seed, base_preset, overrides=overrides, epochs=epochs,
                                    max_minutes=max_minutes)
            _model_check(config, variant)
            key = _config_key(config.to_dict())
            if key not in owners:
                own = (out_dir / variant.name / f"seed{seed}" / "config.json").is_file()
                owners[key] = variant.name if own or key not in existing else existing[key]
            plan.append((variant, seed, config, owners[key]))

    rows: list[dict] = []
    done: dict[str, dict] = {}  # run_dir -> row of the run that owns it
    table_path = out_dir / "ablation.csv"
    stop = False
    for variant, seed, config, owner in plan:
        run_dir = out_dir / owner / f"seed{seed}"
        shared = owner if owner != variant.name else ""
        if stop:
            rows.append(_row(variant, seed, run_dir, None, base_preset=base_preset, config=config, reused=False,
                             shared_with=shared, status="pending"))
            continue
        if str(run_dir) in done:
            row = dict(done[str(run_dir)], axis=variant.axis, variant=variant.name, shared_with=shared)
            rows.append(row)
            continue
        _check_folder(run_dir, config)
        state = run_state(run_dir)
        label = f"{variant.name} seed {seed}"
        if state == "finished":
            log.info("%s: finished earlier, read back from %s", label, run_dir)
            row = _row(variant, seed, run_dir, _read_summary(run_dir), base_preset=base_preset, config=config,
                       reused=True, shared_with=shared)
        else:
            log.info("%s: %s run in %s", label, "resuming the" if state == "resumable" else "new", run_dir)
            try:
                summary = Trainer(config, run_dir, resume=state == "resumable", progress=progress).fit()
                row = _row(variant, seed, run_dir, summary, base_preset=base_preset, config=config, reused=False,
                           shared_with=shared)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded in the table, or re-raised
                if errors == "raise":
                    raise
                message = " ".join(f"{type(exc).__name__}: {exc}".split())
                log.warning("%s failed: %s", label, message)
                row = _row(variant, seed, run_dir, None, base_preset=base_preset, config=config, reused=False,
                           shared_with=shared, status="failed", error=message)
            if row["status"] == "interrupted":  # Ctrl-C/SIGTERM: the Trainer saved last.pt; stop the grid
                log.warning("%s interrupted; the grid stops here (run again to resume)", label)
                stop = True
        done[str(run_dir)] = row
        rows.append(row)
        _write_table(rows, table_path)
    return _write_table(rows, table_path)


def _check_folder(run_dir: Path, config) -> None:
    """A run folder already holding a different config is an error (budgets must stay equal)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    try:
        there = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable run config ({exc}); delete the folder {run_dir} to redo the run") from exc
    diffs = _differences(_canonical(there), _canonical(config.to_dict()))
    if diffs:
        raise ValueError(f"{run_dir} holds a run with another config ({'; '.join(diffs[:5])}"
                         f"{'; ...' if len(diffs) > 5 else ''}); use another out_dir or delete that folder")


# --------------------------------------------------------------------------- tables
def read_table(out_dir: str | os.PathLike):
    """``out_dir/ablation.csv`` as a DataFrame (error naming the file when it is missing)."""
    import pandas as pd

    path = Path(out_dir) / "ablation.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ablation table; run gigacount_lib.ablation first")
    text_columns = {c: str for c in ("axis", "variant", "status", "base_preset", "shared_with", "run_dir", "error")}
    table = pd.read_csv(path, dtype=text_columns, keep_default_na=False)
    for column in TABLE_COLUMNS:
        if column not in text_columns and column != "reused" and column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    if "reused" in table:
        table["reused"] = table["reused"].astype(str).eq("True")
    return table


def summarise(table, metrics: Sequence[str] = ("test_mae", "test_rmse", "ratio", "best_val_mae", "steps",
                                               "train_seconds")):
    """Mean ± std over the seeds per ``(axis, variant)``, finished runs only, in grid order.

    Columns: ``axis``, ``variant``, ``n`` (finished seeds), ``runs`` (all seeds), ``<metric>_mean`` and
    ``<metric>_std`` for each metric (std with ``ddof=1``; NaN for one seed), and ``mae`` /
    ``ratio_text``, the MAE and the ratio written as ``"mean ± std"``.
    """
    import pandas as pd

    columns = ["axis", "variant", "n", "runs"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")] + \
        ["mae", "ratio_text"]
    if len(table) == 0:
        return pd.DataFrame(columns=columns)
    rows = []
    order = list(dict.fromkeys(zip(table["axis"], table["variant"])))
    for axis, variant in order:
        group = table[(table["axis"] == axis) & (table["variant"] == variant)]
        ok = group[group["status"].isin(FINISHED_STATUSES)]
        row: dict[str, Any] = {"axis": axis, "variant": variant, "n": len(ok), "runs": len(group)}
        for metric in metrics:
            values = pd.to_numeric(ok[metric], errors="coerce")
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        row["mae"] = _pm(row.get("test_mae_mean"), row.get("test_mae_std"), 2)
        row["ratio_text"] = _pm(row.get("ratio_mean"), row.get("ratio_std"), 3)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def versus_reference(table, metric: str = "test_mae", *, z: float = 2.0):
    """Each variant against its axis's reference (:attr:`AblationAxis.reference`) on ``metric``.

    Columns: ``axis``, ``variant``, ``reference``, ``n``, ``n_reference``, ``difference`` (variant mean
    minus reference mean; negative is better for an error), ``standard_error`` of that difference
    (``sqrt(s1²/n1 + s2²/n2)`` over the seeds) and ``verdict``: ``"lower"`` / ``"higher"`` when the
    difference exceeds ``z`` standard errors, else ``"no clear difference"`` (also when fewer than two
    seeds finished on either side: one seed gives no spread). With 2-3 seeds this is a coarse screen,
    not a test; the notebook should say so.
    """
    import pandas as pd

    columns = ["axis", "variant", "reference", "n", "n_reference", "difference", "standard_error", "verdict"]
    ok = table[table["status"].isin(FINISHED_STATUSES)]
    rows = []
    for axis, variant in dict.fromkeys(zip(table["axis"], table["variant"])):
        if axis not in AXES or variant == AXES[axis].reference:
            continue
        reference = AXES[axis].reference
        a = pd.to_numeric(ok[(ok["axis"] == axis) & (ok["variant"] == variant)][metric], errors="coerce").dropna()
        b = pd.to_numeric(ok[ok["variant"] == reference][metric], errors="coerce").dropna()
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if len(a) > 1 and len(b) > 1 else math.nan
        if math.isfinite(diff) and math.isfinite(se) and abs(diff) > z * se:
            verdict = "lower" if diff < 0 else "higher"
        else:
            verdict = "no clear difference"
        rows.append({"axis": axis, "variant": variant, "reference": reference, "n": len(a), "n_reference": len(b),
                     "difference": diff, "standard_error": se, "verdict": verdict})
    return pd.DataFrame(rows, columns=columns)


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# --------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gigacount_lib.ablation",
        description="Run the ablation grid (the paper's Table 3) with equal budgets over several seeds; "
                    "resumable. Writes <out>/<variant>/seed<k>/ and <out>/ablation.csv.",
        epilog="A short CPU budget shows large effects and the seed spread only; see the module docstring.")
    parser.add_argument("--preset", default="cpu-quick", help="base preset (default cpu-quick)")
    parser.add_argument("--axes", nargs="+", default=None, metavar="AXIS",
                        help=f"axes to run (default all): {', '.join(AXES)}")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="run only these variants (names from --list)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--out", default="runs/ablation", help="output folder (default runs/ablation)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: the preset's)")
    parser.add_argument("--max-minutes", type=float, default=None, help="time budget of every run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override for every variant, e.g. data.batch_size=4 or epochs=3 (repeatable; "
                             "applied to all runs, so budgets stay equal)")
    parser.add_argument("--list", action="store_true", help="print the grid and exit")
    parser.add_argument("--progress", action="store_true", help="show the Trainer's progress bars")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        variants = default_grid(args.axes)
        if args.variants:
            known = {v.name: v for v in default_grid()}
            missing = [n for n in args.variants if n not in known]
            if missing:
                raise ValueError(f"unknown variant(s) {missing}; see --list")
            variants = [v for v in variants if v.name in args.variants] if args.axes else \
                [known[n] for n in args.variants]
        if args.list:
            for v in variants:
                print(f"{v.axis:<13} {v.name:<24} {' '.join(v.overrides):<48} {v.description}")
            return 0
        table = run_ablation(variants, args.seeds, args.preset, args.out, epochs=args.epochs,
                             max_minutes=args.max_minutes, overrides=args.overrides, progress=args.progress,
                             errors="raise" if args.fail_fast else "record")
    except (ValueError, FileNotFoundError) as exc:
        print(f"ablation: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    summary = summarise(table)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary[["axis", "variant", "n", "runs", "mae", "ratio_text", "steps_mean"]].to_string(index=False))
    print(f"table: {Path(args.out) / 'ablation.csv'}")
    failed = table[~table["status"].isin(FINISHED_STATUSES)]
    return 1 if len(failed) else 0


if __name__ == "__main__":
    sys.exit(main())
