"""The ablation runner: grid, equal budgets, tidy table, resume (gigacount_lib.ablation)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import gigacount_lib.train as train_module
from gigacount_lib.ablation import (AXES, FINISHED_STATUSES, TABLE_COLUMNS, Variant, apply_overrides, default_grid,
                                    main, read_table, run_ablation, run_state, summarise, variant_config,
                                    versus_reference)
from gigacount_lib.config import get_preset

# As tests/test_trainer.py's tiny_config: one short epoch, 3 evaluation images, 64² crops.
TINY = ["eval_every=1", "max_minutes=null", "data.batch_size=4", "data.max_eval_images=3", "data.crop_size=64"]


def variants(*names):
    known = {v.name: v for v in default_grid()}
    return [known[n] for n in names]


class FakeTrainer:
    """Writes what the Trainer writes (config.json, summary.json) without training; records its calls."""

    calls: list = []
    status = "completed"
    fail = False

    def __init__(self, config, out_dir, *, resume=False, progress=True):
        from pathlib import Path

        self.config, self.out_dir, self.resume = config, Path(out_dir), resume
        FakeTrainer.calls.append((self.out_dir, resume))

    def fit(self):
        from gigacount_lib.utils import atomic_write_json

        if FakeTrainer.fail:
            raise RuntimeError("boom in fit")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out_dir / "config.json", self.config.to_dict())
        summary = {"status": FakeTrainer.status, "epochs_run": self.config.epochs, "global_step": 7,
                   "train_seconds": 1.5, "best": {"mae": 3.0, "mae_epoch": 0}, "test": {"mae": 2.0 + self.config.seed,
                                                                                          "rmse": 3.0},
                   "trivial_mae": 10.0, "mae_ratio_to_trivial": (2.0 + self.config.seed) / 10}
        atomic_write_json(self.out_dir / "summary.json", summary)
        if FakeTrainer.status == "interrupted":
            (self.out_dir / "last.pt").write_bytes(b"x")
        return summary


@pytest.fixture
def fake_trainer(monkeypatch):
    FakeTrainer.calls, FakeTrainer.status, FakeTrainer.fail = [], "completed", False
    monkeypatch.setattr(train_module, "Trainer", FakeTrainer)
    return FakeTrainer


def test_grid_covers_the_issue_axes():
    assert list(AXES) == ["stage4", "augmentation", "schedule", "loss", "fusion", "encoder", "ot_mode"]
    names = {v.name for v in default_grid()}
    assert {"schedule_none", "schedule_step", "schedule_cosine", "schedule_linear", "schedule_official"} <= names
    assert {"aug_none", "aug_official", "aug_official_low_light", "loss_dace", "loss_hybrid", "loss_no_ce",
            "loss_no_prob", "loss_no_count", "stage4", "no_stage4", "fusion", "no_fusion", "encoder_odconv",
            "ot_reference", "ot_exact"} <= names
    for axis in AXES.values():
        assert axis.reference in {v.name for v in axis.variants} and axis.claim
    with pytest.raises(ValueError, match="unknown ablation axis"):
        default_grid(["nope"])
    with pytest.raises(ValueError, match="equal budgets"):
        Variant("x", "schedule", ("epochs=3",))


def test_structural_overrides_merge_into_the_cpu_models_options():
    base = get_preset("cpu").override('model.options={"drop_path_rate": 0.0}')
    merged = apply_overrides(base, ["model.options.keep_stage4=true", 'model.options={"scales": [2]}'])
    assert merged.model.name == "gigacount_atto"
    assert merged.model.options == {"drop_path_rate": 0.0, "keep_stage4": True, "scales": [2]}
    for name in ("stage4", "no_fusion", "encoder_odconv"):
        config = variant_config(variants(name)[0], 1, "cpu", epochs=4, max_minutes=2.0)
        assert config.model.name == "gigacount_atto" and (config.seed, config.epochs, config.max_minutes) == (1, 4, 2.0)
    assert variant_config(variants("ot_exact")[0], 0, "paper").loss.options == {"mode": "exact"}
    assert variant_config(variants("loss_no_prob")[0], 0, "cpu").loss.options == {"mode": "reference",
                                                                                  "weight_prob": 0}
    for bad in ("model.nosuch=1", "nosuch=1", "data.crop_size.x=1", "no_equals_sign"):
        with pytest.raises(ValueError, match="override"):
            apply_overrides(base, [bad])


def test_stage4_structure_builds_on_the_cpu_model():
    import torch

    from gigacount_lib.binning import BinConfig
    from gigacount_lib.models import build_model

    config = variant_config(variants("stage4")[0], 0, "cpu-quick")
    model = build_model(config.model.name, BinConfig.gigacount_qnrf(), pretrained=None, **config.model.options)
    assert model.weights_info["image"]["keep_stage4"] is True and model.scales == (0, 1, 2, 3)
    assert model(torch.rand(2, 3, 64, 64)).logits.shape[-2:] == (8, 8)


def test_equal_runs_are_trained_once_and_shared(tmp_path, fake_trainer):
    grid = variants("schedule_cosine", "schedule_none", "loss_hybrid")  # cosine and hybrid: cpu-quick itself
    table = run_ablation(grid, [0, 1], "cpu-quick", tmp_path, epochs=2)
    assert len(fake_trainer.calls) == 4
    shared = table[table["variant"] == "loss_hybrid"]
    assert list(shared["shared_with"]) == ["schedule_cosine"] * 2
    assert all("schedule_cosine" in d for d in shared["run_dir"])
    assert (table["epochs"] == 2).all()
    # a later call with another axis reuses the same run folders
    fake_trainer.calls.clear()
    again = run_ablation(variants("loss_hybrid", "loss_dace"), [0], "cpu-quick", tmp_path, epochs=2)
    assert [c[0].parent.name for c in fake_trainer.calls] == ["loss_dace"]
    assert again.iloc[0]["reused"] and again.iloc[0]["shared_with"] == "schedule_cosine"


def test_other_config_in_a_run_folder_is_an_error(tmp_path, fake_trainer):
    run_ablation(variants("schedule_none"), [0], "cpu-quick", tmp_path, epochs=2)
    with pytest.raises(ValueError, match=r"schedule_none/seed0 holds a run with another config \(epochs: 2"):
        run_ablation(variants("schedule_none"), [0], "cpu-quick", tmp_path, epochs=3)


def test_failed_runs_are_recorded_and_interruption_stops_the_grid(tmp_path, fake_trainer):
    fake_trainer.fail = True
    table = run_ablation(variants("schedule_none"), [0, 1], "cpu-quick", tmp_path / "a")
    assert list(table["status"]) == ["failed", "failed"] and "boom in fit" in table.iloc[0]["error"]
    with pytest.raises(RuntimeError, match="boom"):
        run_ablation(variants("schedule_none"), [0], "cpu-quick", tmp_path / "b", errors="raise")
    fake_trainer.fail, fake_trainer.status = False, "interrupted"
    table = run_ablation(variants("schedule_none", "schedule_step"), [0, 1], "cpu-quick", tmp_path / "c")
    assert list(table["status"]) == ["interrupted", "pending", "pending", "pending"]
    assert run_state(tmp_path / "c" / "schedule_none" / "seed0") == "resumable"
    fake_trainer.status = "completed"
    fake_trainer.calls.clear()
    table = run_ablation(variants("schedule_none", "schedule_step"), [0, 1], "cpu-quick", tmp_path / "c")
    assert fake_trainer.calls[0][1] is True and [c[1] for c in fake_trainer.calls[1:]] == [False] * 3
    assert (table["status"] == "completed").all()


def test_tiny_grid_table_then_resume_skips_finished_runs(tmp_path, monkeypatch):
    """The real Trainer on 2 variants x 2 seeds, 1 epoch; then the resume paths."""
    grid = variants("schedule_none", "loss_dace")
    out = tmp_path / "ablation"
    table = run_ablation(grid, [0, 1], "cpu-quick", out, epochs=1, overrides=TINY)
    assert list(table.columns) == TABLE_COLUMNS
    assert list(zip(table["variant"], table["seed"])) == [("schedule_none", 0), ("schedule_none", 1),
                                                          ("loss_dace", 0), ("loss_dace", 1)]
    assert list(table["axis"]) == ["schedule", "schedule", "loss", "loss"]
    assert table["status"].isin(FINISHED_STATUSES).all() and not table["reused"].any()
    assert (table["steps"] > 0).all() and (table["epochs"] == 1).all()
    assert table["test_mae"].notna().all() and table["ratio"].notna().all()
    for run_dir in table["run_dir"]:
        assert {"log.csv", "summary.json", "last.pt", "best_mae.pt", "config.json"} <= {p.name for p in
                                                                                        Path(run_dir).iterdir()}
    on_disk = read_table(out)
    pd.testing.assert_frame_equal(on_disk[["variant", "seed", "test_mae"]], table[["variant", "seed", "test_mae"]])
    summary = summarise(table)
    assert list(summary["variant"]) == ["schedule_none", "loss_dace"] and list(summary["n"]) == [2, 2]
    assert summary["test_mae_std"].notna().all() and "±" in summary.iloc[0]["mae"]

    # Finished runs are read back: no Trainer is even constructed.
    real = train_module.Trainer

    def no_trainer(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "Trainer", no_trainer)
    again = run_ablation(grid, [0, 1], "cpu-quick", out, epochs=1, overrides=TINY)
    assert again["reused"].all()
    pd.testing.assert_series_equal(again["test_mae"], table["test_mae"])

    # A run killed after its last checkpoint (last.pt, no summary.json) is resumed, the others skipped.
    killed = out / "loss_dace" / "seed1"
    (killed / "summary.json").unlink()
    constructed = []

    def recording(config, out_dir, *, resume=False, progress=True):
        constructed.append((str(out_dir), resume))
        return real(config, out_dir, resume=resume, progress=progress)

    monkeypatch.setattr(train_module, "Trainer", recording)
    resumed = run_ablation(grid, [0, 1], "cpu-quick", out, epochs=1, overrides=TINY)
    assert constructed == [(str(killed), True)]
    assert list(resumed["reused"]) == [True, True, True, False]
    assert resumed.iloc[3]["status"] == "completed" and (killed / "summary.json").is_file()
    assert resumed.iloc[3]["steps"] == table.iloc[3]["steps"]
    assert json.loads((killed / "summary.json").read_text())["test"]["mae"] == pytest.approx(table.iloc[3]["test_mae"])


def test_command_line(tmp_path, fake_trainer, capsys):
    assert main(["--list", "--axes", "ot_mode"]) == 0
    assert "ot_exact" in capsys.readouterr().out
    code = main(["--preset", "cpu-quick", "--axes", "schedule", "--variants", "schedule_none", "--seeds", "0", "1",
                 "--out", str(tmp_path), "--set", "epochs=3"])
    assert code == 0 and "schedule_none" in capsys.readouterr().out
    table = read_table(tmp_path)
    assert list(table["seed"]) == [0, 1] and (table["epochs"] == 3).all()
    assert main(["--axes", "nope"]) == 2 and "unknown ablation axis" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


def test_versus_reference_needs_a_clear_difference():
    rows = [{"axis": "schedule", "variant": v, "seed": k, "status": "completed", "test_mae": m}
            for v, ms in (("schedule_official", (10.0, 10.2, 9.8)), ("schedule_none", (20.0, 20.5, 19.5)),
                          ("schedule_step", (10.1, 9.7, 10.4)))
            for k, m in enumerate(ms)]
    rows.append({"axis": "schedule", "variant": "schedule_linear", "seed": 0, "status": "completed", "test_mae": 1.0})
    result = versus_reference(pd.DataFrame(rows)).set_index("variant")
    assert result.loc["schedule_none", "verdict"] == "higher" and result.loc["schedule_none", "difference"] == \
        pytest.approx(10.0)
    assert result.loc["schedule_step", "verdict"] == "no clear difference"
    assert result.loc["schedule_linear", "verdict"] == "no clear difference"  # one seed: no spread
    assert "schedule_official" not in result.index
