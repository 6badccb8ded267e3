"""Smoke tests of the benchmark scripts (``benchmarks/``): their ``--quick --no-write`` modes run in-process
on tiny inputs and return results of the documented structure. No test asserts a timing or a speed-up:
timings belong in ``benchmarks/results/`` (CONTRIBUTING.md)."""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

# bf16 keeps 8 significant bits (unit roundoff 2**-9, about 2e-3). The loss sums thousands of block terms
# computed by a network of about 20-50 layers each rounding its output to bf16; the roundings are
# independent and mostly average out in the sums (the count term, which dominates the hybrid loss at
# random init, is a sum over ~800 blocks). On gigacount, gigacount_odconv_blocks and clip_ebc_resnet50 at
# 128² the two paths differed by at most 1.4e-3 relative. 2e-2 (ten unit roundoffs) leaves room for other
# CPUs' bf16 kernels while still catching a real error of the fast path (a wrong layout or a dropped
# cast changes the loss by tens of percent).
BF16_LOSS_RTOL = 2e-2


def load(name: str):
    """Import ``benchmarks/<name>.py`` (the folder is not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_test_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def check_header(result: dict) -> None:
    for key in ("command", "what", "machine", "versions", "git", "load_average_before", "load_average_after",
                "elapsed_s", "rows", "markdown"):
        assert key in result, key
    assert result["machine"]["torch_threads"] >= 1
    assert "torch" in result["versions"]


# ------------------------------------------------------------------------------------------ helpers
def test_round_robin_interleaves_and_records_errors():
    common = load("_common")
    calls = []

    def ok(name):
        return lambda: calls.append(name)

    def broken():
        calls.append("broken")
        raise RuntimeError("out of memory (simulated)")

    out = common.time_round_robin({"a": ok("a"), "b": ok("b"), "broken": broken}, warmup=1, min_reps=2,
                                  max_reps=2, budget_s=0.0)
    assert calls == ["a", "b", "broken", "a", "b", "a", "b"]  # warm-up, then one of each in turn
    assert out["a"]["status"] == out["b"]["status"] == "ok" and len(out["a"]["times_s"]) == 2
    assert out["broken"]["status"].startswith("error: RuntimeError: out of memory")
    assert out["broken"]["median_s"] is None


def test_sizes_slug_and_table():
    common = load("_common")
    assert common.parse_size("512") == (512, 512)
    assert common.parse_size("1024x768") == (768, 1024)  # WIDTHxHEIGHT in, (height, width) out
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        common.parse_size("big")
    record = common.cpu_record()  # tells apart two "x86_64, 2 cores" machines with and without native bf16
    from gigacount_lib.utils import native_bf16
    assert record["native_bf16"] == native_bf16(torch.device("cpu"))
    assert record["cpu_model"] is None or (isinstance(record["cpu_model"], str) and record["cpu_model"])
    assert common.machine_info()["native_bf16"] == record["native_bf16"]
    slug = common.machine_slug()
    assert slug and all(c.isalnum() or c in "-_" for c in slug)
    table = common.markdown_table([{"a": "x", "b": 1.5}, {"a": "y", "b": None}], [("A", "a", "s"), ("B", "b", ".1f")])
    assert table.splitlines() == ["| A | B |", "|---|---:|", "| x | 1.5 |", "| y | - |"]


@pytest.mark.parametrize("name", ["bench_step", "bench_inference", "bench_loader", "run_all"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load(name).main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ bench_step
def test_step_quick_structure(tmp_path):
    step = load("bench_step")
    out = tmp_path / "step.json"
    result = step.main(["--quick", "--no-write", "--no-memory", "--no-drop-path", "--profile", "gigacount_atto",
                        "--out", str(out)])
    assert not out.exists()
    check_header(result)
    assert [(r["model"], r["path"]) for r in result["rows"]] == [("gigacount_atto", "plain"), ("gigacount_atto", "fast")]
    for row in result["rows"]:
        assert row["status"] == "ok", row
        assert row["step_s"] > 0 and len(row["step_times_s"]) == 1
        assert math.isfinite(row["check_loss"])
    assert result["paths"]["plain"] == {"name": "plain", "bf16": False, "channels_last": False}
    assert result["paths"]["fast"]["channels_last"] is False  # the Trainer's default path: bf16 only
    (summary,) = result["summary"]["per_model"]
    assert summary["fast_over_plain"] > 0
    assert summary["loss_rel_diff"] <= BF16_LOSS_RTOL
    profile = result["profile"]
    assert profile["model"] == "gigacount_atto" and [p["path"] for p in profile["paths"]] == ["plain", "fast"]
    assert all(1 <= len(p["rows"]) <= 10 for p in profile["paths"])
    assert "| model | batch | crop |" in result["markdown"] and "torch.profiler" in result["markdown"]


def test_step_switches_isolate_each_optimisation():
    step = load("bench_step")
    cpu = torch.device("cpu")
    assert step.make_paths(["plain", "fast_cl"], cpu, bf16=False)[1] == \
        step.PathSpec("fast_cl", bf16=False, channels_last=True)
    fast, fast_cl = step.make_paths(["fast", "fast_cl"], cpu, bf16=True)
    assert fast.channels_last is False and fast.bf16 == step.bf16_supported(cpu)
    assert fast_cl.channels_last is True and fast_cl.bf16 == fast.bf16


def test_step_fast_and_plain_give_the_same_loss():
    """The real gigacount (random init, stochastic depth off), one batch, same weights: both paths."""
    step = load("bench_step")
    cpu = torch.device("cpu")
    base = step.build_base("gigacount", seed=0, options={"drop_path_rate": 0.0})
    plain = step.StepCase(base, step.PathSpec("plain"), batch=2, size=96, device=cpu, seed=0)
    fast = step.StepCase(base, step.PathSpec("fast_cl", bf16=step.bf16_supported(cpu), channels_last=True),
                         batch=2, size=96, device=cpu, seed=0)
    assert fast.batch.images.is_contiguous(memory_format=torch.channels_last)
    assert plain.batch.images.is_contiguous()
    lp, lf = plain.check_loss(), fast.check_loss()
    assert lf == pytest.approx(lp, rel=BF16_LOSS_RTOL)
    terms = fast.step()  # and the fast path trains
    assert math.isfinite(terms["loss"])


@pytest.mark.slow
def test_step_memory_in_subprocesses():
    result = load("bench_step").main(["--quick", "--no-write", "--paths", "plain"])
    (row,) = result["rows"]
    assert row["memory_status"] == "ok", row["memory"]
    assert row["memory"]["memory_kind"].startswith("peak_rss") and row["peak_mib"] >= 0
    assert row["process_peak_mib"] >= row["memory"]["base_mib"] > 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM and clear_refs are Linux-only")
def test_peak_memory_is_the_processs_own_and_resets_after_setup():
    """Peak RSS comes from VmHWM, reset at start(): an allocation shows up once, and a child process
    does not report its parent's memory (ru_maxrss survives fork + exec on Linux)."""
    import subprocess
    import sys

    import json

    # In a fresh process: in this one, earlier tests leave freed memory resident that a new tensor reuses
    # without raising the high-water mark (the order test_models -> test_benchmarks measured 0 MiB).
    meter_code = (
        "import json, sys, torch; sys.path.insert(0, 'benchmarks'); from _common import PeakMemory\n"
        "meter = PeakMemory(torch.device('cpu')); meter.start()\n"
        "block = torch.ones(50 * 2 ** 20)  # 200 MiB, touched\n"
        "first = meter.stop(); del block; meter.start(); second = meter.stop()\n"
        "print(json.dumps([first, second]))")
    out = subprocess.run([sys.executable, "-c", meter_code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    first, second = json.loads(out.strip().splitlines()[-1])
    assert first["peak_growth_mib"] >= 190 and first["process_peak_mib"] >= first["base_mib"] + 190
    if second["peak_reset"]:
        assert second["peak_growth_mib"] < 50
    common = load("_common")
    held = torch.ones(100 * 2 ** 20)  # the parent now holds 400 MiB more than the child will
    code = ("import sys; sys.path.insert(0, 'benchmarks'); from _common import peak_rss_bytes; "
            "print(peak_rss_bytes() / 2 ** 20)")
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=Path(__file__).resolve().parent.parent).stdout)
    parent = common.rss_bytes() / 2 ** 20
    assert held.sum() > 0 and child < parent - 300


# ------------------------------------------------------------------------------------------ bench_inference
def test_inference_quick_structure():
    inference = load("bench_inference")
    result = inference.main(["--quick", "--no-write", "--no-memory", "--model", "gigacount_atto"])
    check_header(result)
    precisions = result["precisions"]
    assert precisions[0] == "fp32"
    rows = result["rows"]
    assert len(rows) == 2 * 2 * len(precisions)
    for row in rows:
        assert row["status"] == "ok", row
        assert row["shape_ok"] is True and row["time_s"] > 0
    odd = next(r for r in rows if r["size"] == "100x60")
    assert (odd["height"], odd["width"]) == (60, 100)
    assert odd["expected_blocks"] == [8, 13] and odd["output_shape"] == [1, 1, 8, 13]
    assert {(s["size"], s["precision"]) for s in result["summary"]} == \
        {(size, p) for size in ("64", "100x60") for p in precisions}
    assert all(s["full_over_sliding"] > 0 for s in result["summary"])
    assert "full/sliding" in result["markdown"]


def test_inference_failure_is_a_row_status(monkeypatch):
    inference = load("bench_inference")

    def out_of_memory(model, images):
        raise RuntimeError("DefaultCPUAllocator: not enough memory (simulated)")

    monkeypatch.setattr(inference, "predict_full", out_of_memory)
    result = inference.main(["--quick", "--no-write", "--no-memory", "--no-bf16", "--model", "gigacount_atto",
                             "--sizes", "64"])
    status = {r["mode"]: r["status"] for r in result["rows"]}
    assert status["full"].startswith("error: RuntimeError: DefaultCPUAllocator")
    assert status["sliding"] == "ok"
    assert result["summary"][0]["full_over_sliding"] is None


@pytest.mark.slow
def test_inference_memory_in_subprocesses():
    result = load("bench_inference").main(["--quick", "--no-write", "--no-bf16", "--model", "gigacount_atto",
                                           "--sizes", "64", "--modes", "full"])
    (row,) = result["rows"]
    assert row["memory_status"] == "ok", row["memory"]
    assert row["peak_mib"] >= 0


# ------------------------------------------------------------------------------------------ bench_loader
@pytest.mark.slow
def test_loader_quick_structure():
    result = load("bench_loader").main(["--quick", "--no-write"])
    check_header(result)
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"loader_w0", "loader_w2", "train"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["images_per_s"] > 0 and row["crops_per_s"] == pytest.approx(2 * row["images_per_s"])
    assert isinstance(rows["loader_w2"]["bottleneck"], bool)
    assert 0 < rows["loader_w0"]["loading_share"] < 1
    assert result["preset"] == "cpu" and result["batch_crops"] == 2 * result["batch_images"]


# ------------------------------------------------------------------------------------------ run_all
@pytest.mark.slow
def test_run_all_quick_merges_the_parts(monkeypatch, tmp_path):
    run_all = load("run_all")
    for name in ("step", "inference"):  # the memory subprocesses have their own tests
        monkeypatch.setitem(run_all.QUICK, name, ["--quick", "--no-memory"])
    monkeypatch.setitem(run_all.QUICK, "inference", ["--quick", "--no-memory", "--model", "gigacount_atto"])
    out = tmp_path / "merged.json"
    merged = run_all.main(["--quick", "--no-write", "--out", str(out)])
    assert not out.exists()
    assert list(merged["parts"]) == ["losses", "step", "inference", "loader"]
    for name, part in merged["parts"].items():
        assert part["status"] == "ok", (name, part.get("traceback"))
        assert part["rows"] and part["markdown"] in merged["markdown"]
    for key in ("machine", "load_average_before", "load_average_after", "torch_threads", "versions", "git"):
        assert key in merged, key
    assert merged["machine"]["slug"] == load("_common").machine_slug()


# ------------------------------------------------------------------------------------------ cpu_recipes
def test_cpu_recipes_train_fit_scores_a_run_on_its_training_images(tmp_path, monkeypatch):
    import json

    from gigacount_lib.config import get_preset
    from gigacount_lib.train import Trainer

    recipes = load("cpu_recipes")
    run_dir = (tmp_path / "run").resolve()
    config = get_preset("cpu-quick").override("epochs=1", "data.max_train_images=8")
    summary = Trainer(config, run_dir, progress=False).fit()
    results = tmp_path / "cpu_recipes.json"
    monkeypatch.setattr(recipes, "RESULTS", results)
    results.write_text(json.dumps({"runs": [{"recipe": "other", "run_dir": "/elsewhere"},
                                            # as cpu_recipes writes it: relative to the repository
                                            {"recipe": "quick", "run_dir": os.path.relpath(run_dir, recipes.REPO)}]}))
    fit = recipes.record_train_fit(run_dir, n_images=4)
    assert fit["train_images"] == 4 and math.isfinite(fit["train_mae"]) and fit["train_ratio"] > 0
    rows = json.loads(results.read_text())["runs"]
    assert "train_ratio" not in rows[0] and rows[1]["train_ratio"] == pytest.approx(fit["train_ratio"])
    assert summary["status"] in ("completed", "time budget")
    with pytest.raises(SystemExit, match="no row"):
        recipes.record_train_fit(tmp_path.resolve(), n_images=4)


# ------------------------------------------------------------------------------------------ cpu_bottleneck
def test_cpu_bottleneck_block_counts_bin_points_into_stride_8_blocks():
    bottleneck = load("cpu_bottleneck")
    points = [torch.tensor([[0.5, 0.5], [7.9, 7.9], [8.0, 0.0], [31.9, 15.9]]), torch.zeros(0, 2)]
    counts = bottleneck.block_counts(points, 16, 32)
    assert counts.shape == (2, 1, 2, 4)
    assert counts[0, 0, 0, 0] == 2 and counts[0, 0, 0, 1] == 1 and counts[0, 0, 1, 3] == 1
    assert counts[0].sum() == 4 and counts[1].sum() == 0


@pytest.mark.parametrize("arm", ["vgg_mse", "vgg_cosine", "atto_stage2", "gigacount_atto", "gigacount_vgg",
                                 "gigacount_vgg_dec64"])
def test_cpu_bottleneck_arm_trains_and_scores_on_the_quick_set(arm, tmp_path):
    bottleneck = load("cpu_bottleneck")
    row = bottleneck.run_arm(arm, minutes=0.02, seed=0, out_root=tmp_path, preset="cpu-quick")
    assert row["arm"] == arm and row["steps"] >= 1 and row["params"] > 0
    assert math.isfinite(row["test_mae"]) and row["trivial_mae"] > 0
    assert row["ratio"] == pytest.approx(row["test_mae"] / row["trivial_mae"])
    # the tercile breakdown partitions the test images and averages back to the overall MAE
    sizes, maes = row["test_images_by_count_tercile"], row["test_mae_by_count_tercile"]
    assert sum(sizes) == row["test_images"] > 0
    assert sum(n * m for n, m in zip(sizes, maes) if n) / sum(sizes) == pytest.approx(row["test_mae"])
    assert abs(row["test_bias"]) <= row["test_mae"] + 1e-9 and math.isfinite(row["train_ratio_first100"])


def test_cpu_bottleneck_ema_option_trains_and_scores(tmp_path):
    bottleneck = load("cpu_bottleneck")
    torch.manual_seed(0)
    row = bottleneck.run_arm("vgg_mse", minutes=0.02, seed=0, out_root=tmp_path, preset="cpu-quick", ema=0.5)
    assert row["ema"] == 0.5 and row["steps"] >= 1 and math.isfinite(row["test_mae"])
