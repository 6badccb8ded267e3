"""Training recipes tried for the ``cpu`` preset, each run to the end and scored on the synthetic test split.

Usage::

    .venv/bin/python benchmarks/cpu_recipes.py --list
    .venv/bin/python benchmarks/cpu_recipes.py --recipes preset          # the cpu preset as shipped
    .venv/bin/python benchmarks/cpu_recipes.py --recipes baseline ls1 --out runs/cpu_recipes

A recipe is a list of ``TrainConfig.override`` assignments applied to the ``cpu`` preset
(:func:`gigacount_lib.config.get_preset`). Each run trains with the :class:`~gigacount_lib.train.Trainer`
under the held-out protocol (a seeded 10% of the training images selects the checkpoint; the test
split is scored once at the end) and is compared with the mean-count predictor, which always answers
the mean count of the training images. Results are appended (one row per run, never overwritten) to
``benchmarks/results/cpu_recipes.json`` with the machine, the load average and the library versions:
wall times depend on the machine and on what else runs on it, the ratios much less.

Notebook 05 shows the table. Synthetic data, random init, CPU only: these are not UCF-QNRF results.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import cpu_record  # noqa: E402
from gigacount_lib.config import get_preset  # noqa: E402
from gigacount_lib.utils import atomic_write_json, library_versions  # noqa: E402

# name -> (what changes, overrides of the cpu preset). "preset" is the preset as shipped.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "preset": ("the cpu preset as shipped", []),
    "baseline": ("timm layer scale 1e-6, stochastic depth 0.1, lr 1e-3",
                 ['model.options={"drop_path_rate":0.1}', "optim.lr=1e-3"]),
    "ls1": ("layer scale 1.0, no stochastic depth, lr 1e-3",
            ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0}', "optim.lr=1e-3"]),
    "ls1_lr2e-3": ("layer scale 1.0, no stochastic depth, lr 2e-3",
                   ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0}', "optim.lr=2e-3"]),
    "ls1_noaug": ("layer scale 1.0, no stochastic depth, lr 1e-3, crops only (no flip, colour, blur, noise)",
                  ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0}', "optim.lr=1e-3",
                   "data.augmentation=none"]),
    "ls1_scale100": ("layer scale 1.0, no stochastic depth, lr 1e-3, head temperature exp(s) = 100 at init "
                     "instead of 1/0.07 (the random text prototypes have cosine 0.73-0.96 with each other)",
                     ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517}',
                      "optim.lr=1e-3"]),
    "ls1_scale100_lr2e-3": ("as ls1_scale100 with lr 2e-3",
                            ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517}',
                             "optim.lr=2e-3"]),
    "ls1_scale100_lr4e-3": ("as ls1_scale100 with lr 4e-3",
                            ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517}',
                             "optim.lr=4e-3"]),
    "ls1_scale100_lr2e-3_b4": ("as ls1_scale100_lr2e-3 with batch 4 images (x 2 crops): twice the steps, "
                               "the same images per epoch",
                               ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517}',
                                "optim.lr=2e-3", "data.batch_size=4"]),
    "ls1_scale100_lr2e-3_count5": ("as ls1_scale100_lr2e-3 with the DM-Count term weighted 5 (lambda_1 = 5 "
                                   "instead of 1): short runs undercount dense crops",
                                   ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517}',
                                    "optim.lr=2e-3", 'loss.options={"mode":"reference","weight_count":5.0}']),
    "ls1_scale100_lr2e-3_dec128": ("as ls1_scale100_lr2e-3 with a 128-wide decoder instead of 256 (at 128² crops "
                                   "the 256-wide decoder costs about as much as the encoder)",
                                   ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517,'
                                    '"decoder_channels":128}', "optim.lr=2e-3"]),
    "ls1_scale100_lr2e-3_noaug": ("as ls1_scale100_lr2e-3 with crops only (no flip, colour, blur up to sigma 5, "
                                  "pepper-salt noise): the heads are a few pixels wide",
                                  ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517}',
                                   "optim.lr=2e-3", "data.augmentation=none"]),
    "noclip": ("the cpu preset without gradient clipping (its gradient norms are 1e3-1e4, so clipping at 1 "
               "rescales every step to unit norm and gives batches of dense crops no more weight than sparse ones)",
               ["optim.grad_clip=null"]),
    "fusion16": ("the cpu preset with the official attention-block output widths 16/32/64 (those of ConvNeXt-Tiny) "
                 "instead of C/6 = 6/13/26 of ConvNeXt-Atto's 40/80/160 channels: the stride-4 map reaches the "
                 "decoder through 6 channels otherwise",
                 ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517,'
                  '"attention_out":[16,32,64]}']),
    "noclip_b4": ("noclip with batch 4 images (x 2 crops): twice the steps in the same epochs",
                  ["optim.grad_clip=null", "data.batch_size=4"]),
    "noclip_up2": ("noclip on images upscaled 2x (data.min_size=768: 512x384 -> 1024x768, CLIP-EBC's min-size "
                   "rule): the farthest heads are 1.5 px wide at the native size, less than the stem's 4-px patch; "
                   "the 128-px crops then cover 64 px of the original scene",
                   ["optim.grad_clip=null", "data.min_size=768"]),
    "fp32": ("the cpu preset in float32, without bfloat16 autocast: the accuracy cost of bf16 (compare with "
             "'preset' at the same epochs)", ["optim.amp=false"]),
    "focal2": ("the cpu preset with a focal L_CE, gamma 2 (Lin et al. 2017): the 98% empty, easy blocks weigh "
               "less, so the head-holding blocks get more of the gradient", ['loss.options={"mode":"reference",'
                                                                            '"focal_gamma":2.0}']),
    "ortho": ("the cpu preset with orthonormal class prototypes instead of the random text tower's, whose pairwise "
              "cosines are 0.73-0.96 (model option prototypes=orthogonal)",
              ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517,'
               '"prototypes":"orthogonal"}']),
    "up2_c192": ("images upscaled 2x (data.min_size=768: 512x384 -> 1024x768) with 192-px crops (96 px of the "
                 "original scene) and 192-px evaluation windows, 56 epochs to fit the budget: half the test heads "
                 "are under 3 px wide, and a predictor that finds every head of 2.5 px or more but none smaller "
                 "already scores 0.37 (gigacount_lib.data.synthetic.heads.size_floor)",
                 ["data.min_size=768", "data.crop_size=192", "eval_window=192", "eval_stride=192", "epochs=56",
                  "eval_every=8"]),
    "up15_c160": ("images upscaled 1.5x (data.min_size=576: 512x384 -> 768x576) with 160-px crops and windows, "
                  "70 epochs to fit the budget",
                  ["data.min_size=576", "data.crop_size=160", "eval_window=160", "eval_stride=160", "epochs=70",
                   "eval_every=10"]),
    "ls6_lr3e-4": ("the cpu preset with timm's layer scale 1e-6 and lr 3e-4: on one fixed batch of 16 crops, 80 "
                   "steps of this fit the counts (loss 7.7), where the preset's layer scale 1 and lr 2e-3 do not "
                   "(loss 15.9; train and test ratios of a full run are alike, so the preset underfits)",
                   ['model.options={"drop_path_rate":0.0,"logit_scale_init":4.60517}', "optim.lr=3e-4"]),
    "ols": ("the cpu preset on timm's convnext_atto_ols: the same ConvNeXt-Atto widths and depths with timm's "
            "overlapping tiered stem (3x3 stride-2 convolutions to stride 4) instead of the 4x4 patchify stem, "
            "which sees each 1.5-3 px head inside a single non-overlapping patch",
            ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517,'
             '"timm_name":"convnext_atto_ols"}']),
    "femto_ols": ("as ols on timm's convnext_femto_ols (widths 48/96/192 instead of 40/80/160)",
                  ['model.options={"ls_init_value":1.0,"drop_path_rate":0.0,"logit_scale_init":4.60517,'
                   '"timm_name":"convnext_femto_ols"}']),
    "b16": ("the cpu preset with batch 16 images (x 2 crops) and lr 2.83e-3 (sqrt scaling): tests whether "
            "twice the crops per step cost less than twice the time, i.e. whether the atto step is "
            "overhead-bound; compare with 'preset' at equal training minutes",
            ["data.batch_size=16", "optim.lr=2.83e-3"]),
    "vgg": ("the cpu preset on gigacount_vgg: GigaCount's attention blocks, fusion, decoder and cosine head on a "
            "small VGG-style encoder instead of ConvNeXt-Atto (benchmarks/cpu_bottleneck.py: at equal time a "
            "VGG-style body learns to count much faster from scratch)",
            ["model.name=gigacount_vgg", 'model.options={"logit_scale_init":4.60517}']),
    "vgg_dec128": ("as vgg with a 128-wide decoder instead of 256 (cpu_bottleneck: at 128-px crops the 256-wide "
                   "BasicBlock costs about as much as the whole VGG encoder, and the 128-wide one counted better "
                   "at equal time)",
                   ["model.name=gigacount_vgg", 'model.options={"logit_scale_init":4.60517,"decoder_channels":128}']),
}

RESULTS = REPO / "benchmarks" / "results" / "cpu_recipes.json"


def run_recipe(name: str, out_root: Path, extra: list[str]) -> dict:
    from gigacount_lib.train import Trainer

    what, overrides = RECIPES[name]
    config = get_preset("cpu").override(*overrides, *extra)
    out = out_root / name
    start = time.perf_counter()
    summary = Trainer(config, out, progress=False).fit()
    wall = time.perf_counter() - start
    test = summary.get("test", {})
    return {**run_row_details(out),"recipe": name, "what": what, "overrides": overrides + list(extra), "status": summary["status"],
            "steps": summary["global_step"], "epochs": summary["epochs_run"],
            "train_minutes": round(summary["train_seconds"] / 60, 1), "wall_minutes": round(wall / 60, 1),
            "test_mae": test.get("mae"), "test_rmse": test.get("rmse"), "trivial_mae": summary.get("trivial_mae"),
            "ratio": summary.get("mae_ratio_to_trivial"), "best_val_mae": summary["best"].get("mae"),
            "load_after": list(os.getloadavg()), "run_dir": str(out)}


def run_row_details(run_dir: Path) -> dict:
    """What a run's test split shows beyond MAE: mean true and predicted counts per density quintile,
    and the share of non-empty blocks put in the right bin (read from ``test/``)."""
    import pandas as pd

    per_image, metrics = run_dir / "test" / "per_image.csv", run_dir / "test" / "metrics.json"
    if not per_image.is_file():
        return {}
    table = pd.read_csv(per_image)
    table["quintile"] = pd.qcut(table["true_count"], 5, labels=False, duplicates="drop")
    by = table.groupby("quintile")[["true_count", "pred_count"]].mean().round(1)
    details = {"by_density_quintile": {"mean_true": by["true_count"].tolist(), "mean_pred": by["pred_count"].tolist()}}
    if metrics.is_file():
        m = json.loads(metrics.read_text())["metrics"]
        details["nonempty_block_accuracy"] = m.get("nonempty_block_accuracy")
    return details


def train_fit(run_dir: Path, n_images: int = 100) -> dict:
    """How well a finished run fits its own training images: its ``best_mae.pt`` scored on the first
    ``n_images`` images it trained on (the held-out ones left out), in the run's evaluation windows. A
    ``train_ratio`` close to the test ``ratio`` means the recipe underfits (more or faster learning
    helps); far below it, it overfits (more data or augmentation helps)."""
    from gigacount_lib.evaluation_plots import evaluate_checkpoint

    ev = evaluate_checkpoint(run_dir / "best_mae.pt", split="train", trained_only=True, max_images=n_images)
    return {"train_images": len(ev["dataset"]), "train_mae": ev["result"].metrics["mae"], "train_ratio": ev["ratio"]}


def record_train_fit(run_dir: Path, n_images: int) -> dict:
    """:func:`train_fit` of ``run_dir``, added to its row of the results file (matched by ``run_dir``)."""
    import fcntl

    def rows_of(data: dict) -> list[dict]:
        # rows keep run_dir as given (relative to the repository when run from it)
        rows = [r for r in data["runs"] if r.get("run_dir") and (REPO / r["run_dir"]).resolve() == run_dir.resolve()]
        if not rows:
            raise SystemExit(f"{run_dir}: no row of {RESULTS} has this run_dir")
        return rows

    rows_of(json.loads(RESULTS.read_text()))  # before the minutes of scoring
    fit = train_fit(run_dir, n_images)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(RESULTS.read_text())
        rows_of(data)[-1].update(fit)
        atomic_write_json(RESULTS, data)
    return fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["preset"], help=f"any of {', '.join(RECIPES)}")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="an extra override for every recipe (e.g. max_minutes=5)")
    parser.add_argument("--out", default="runs/cpu_recipes", help="folder for the run folders")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument("--train-fit", nargs="+", type=Path, metavar="RUN_DIR",
                        help="score finished runs on their own training images (train_ratio) and record it")
    parser.add_argument("--train-images", type=int, default=100, help="training images for --train-fit")
    parser.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if args.list:
        for name, (what, overrides) in RECIPES.items():
            print(f"{name:12s} {what}\n{'':12s} {' '.join(overrides) or '(no overrides)'}")
        return 0
    if args.train_fit:
        for run_dir in args.train_fit:
            print(run_dir, json.dumps(record_train_fit(run_dir.resolve(), args.train_images)))
        return 0
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    out_root = Path(args.out)
    for name in args.recipes:
        if (out_root / name / "last.pt").exists():
            parser.error(f"{out_root / name} already holds a run; pass another --out")
    for name in args.recipes:
        row = run_recipe(name, out_root, args.set)
        print(json.dumps(row))
        if row["status"] == "interrupted":  # a partial run is not a result; resume it by hand if wanted
            print(f"{name}: interrupted, not recorded")
            return 130
        if not args.no_write:
            append_row(row)
    return 0


def append_row(row: dict) -> None:
    """Append one run to the results file under a lock (several recipes may run side by side)."""
    import fcntl

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {
            "script": "benchmarks/cpu_recipes.py", "data": "embedded synthetic dataset (300 train + 100 test, "
            "512x384), held-out protocol, random init", "runs": []}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip() or "unknown"
        row.update(git_commit=commit, machine={"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                                  **cpu_record()},
                   versions=library_versions(), date=time.strftime("%Y-%m-%d %H:%M"))
        data["runs"].append(row)
        atomic_write_json(RESULTS, data)


if __name__ == "__main__":
    raise SystemExit(main())
