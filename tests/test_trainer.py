"""The Trainer: learning, exact resume, a bad batch, schedules, checkpoints as data, the CLI path.

Every run here is the ``cpu-quick`` preset shrunk further (the quick synthetic set, 96² crops, the
narrow ``gigacount_atto`` model, random init), so the file takes a few minutes on 2 cores.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from gigacount_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gigacount_lib.config import TrainConfig, get_preset, list_presets
from gigacount_lib.steps import build_scheduler
from gigacount_lib.train import Trainer


def tiny_config(**overrides) -> TrainConfig:
    config = get_preset("cpu-quick")
    config.epochs, config.eval_every, config.max_minutes = 2, 1, None
    config.data.batch_size, config.data.max_eval_images = 4, 3
    config.data.crop_size = 64
    settings = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return config.override(*settings)


def model_state(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_presets_and_overrides():
    assert list_presets() == ["cpu-quick", "cpu", "colab-t4", "paper"]
    paper = get_preset("paper")
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.decay_all) == (5e-4, 1e-4, True)
    assert (paper.data.batch_size, paper.data.num_crops, paper.data.crop_size) == (24, 2, 224)
    assert (paper.schedule.name, paper.schedule.warmup, paper.schedule.t0, paper.schedule.eta_min) == \
        ("official", 20, 80, 5e-6)
    assert (paper.epochs, paper.eval_every, paper.patience, paper.protocol) == (600, 5, 20, "official")
    assert (paper.eval_window, paper.eval_stride, paper.data.min_size, paper.data.max_size) == (224, 224, 448, 2048)
    assert paper.model.name == "gigacount" and paper.loss.options == {"mode": "reference"}
    changed = paper.override("optim.lr=1e-3", "data.dataset=shb", "model.options={\"clip_model\": \"RN50\"}")
    assert changed.optim.lr == 1e-3 and changed.data.dataset == "shb" and changed.model.options["clip_model"] == "RN50"
    assert paper.optim.lr == 5e-4  # the preset itself is untouched
    assert TrainConfig.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed
    with pytest.raises(ValueError, match="unknown preset 'gpu'"):
        get_preset("gpu")
    with pytest.raises(ValueError, match="no field 'optim.learning_rate'"):
        paper.override("optim.learning_rate=1")


def test_official_schedule_is_warmup_then_warm_restarts():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    sched = build_scheduler(opt, get_preset("paper").schedule, total=600)
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[10] == pytest.approx(1e-5 + (5e-4 - 1e-5) * 10 / 20)
    assert lrs[20] == pytest.approx(5e-4)
    assert lrs[20 + 40] == pytest.approx(5e-6 + (5e-4 - 5e-6) * 0.5)  # half-way down the first cosine
    assert lrs[20 + 80] == pytest.approx(5e-4)  # warm restart after T_0 = 80 epochs
    for name in ("none", "step", "cosine", "linear"):
        config = get_preset("cpu").schedule
        config.name = name
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        build_scheduler(opt, config, total=300)


def test_training_lowers_the_loss_and_beats_the_mean_count_predictor(tmp_path):
    """A short run of the cpu-quick recipe on four synthetic images lowers the training loss and
    counts those images better than the mean-count predictor (which answers their mean count) and
    than the same model before training. Evaluated with sliding windows of the crop size."""
    from torch.utils.data import Subset

    from gigacount_lib.evaluate import evaluate_model
    from gigacount_lib.models import build_model

    epochs = 150
    config = tiny_config(epochs=epochs, eval_every=epochs, protocol="official", eval_window=96, eval_stride=96,
                         **{"data.max_eval_images": 2, "data.max_train_images": 4, "schedule.warmup": 10,
                            "data.crop_size": 96, "data.augmentation": "none"})
    trainer = Trainer(config, tmp_path / "run", progress=False)
    summary = trainer.fit()
    losses = [row["train_loss"] for row in trainer.history]
    assert sum(losses[-5:]) < sum(losses[:5])
    train_images = Subset(trainer.loader.dataset.dataset, trainer.train_indices)
    result = evaluate_model(trainer.raw_model, train_images, window=96, stride=96)
    true = result.per_image["true_count"].to_numpy()
    mean_predictor = float(abs(true - true.mean()).mean())
    torch.manual_seed(config.seed)
    untrained = build_model(config.model.name, trainer.bin_config, pretrained=None, **config.model.options)
    before = evaluate_model(untrained, train_images, window=96, stride=96).metrics["mae"]
    assert result.metrics["mae"] < mean_predictor, (result.metrics["mae"], mean_predictor)
    assert result.metrics["mae"] < before
    assert summary["status"] == "completed" and math.isfinite(summary["test"]["mae"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch, num_workers):
    config = tiny_config(**{"data.num_workers": num_workers})
    Trainer(config, tmp_path / "straight", progress=False).fit()

    calls = {"n": 0}
    original = Trainer.guarded_step

    def interrupt_after_three(self, batch):
        out = original(self, batch)
        calls["n"] += 1
        if calls["n"] == 3:  # as SIGINT would, mid-epoch
            self.stop_reason = "SIGINT"
        return out

    monkeypatch.setattr(Trainer, "guarded_step", interrupt_after_three)
    summary = Trainer(config, tmp_path / "resumed", progress=False).fit()
    assert summary["status"] == "interrupted"
    blob = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert (blob["epoch"], blob["step_in_epoch"]) == (0, 3)
    monkeypatch.setattr(Trainer, "guarded_step", original)
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(config, tmp_path / "resumed", progress=False).fit()
    Trainer(config, tmp_path / "resumed", resume=True, progress=False).fit()
    assert_same_weights(model_state(tmp_path / "straight" / "last.pt"), model_state(tmp_path / "resumed" / "last.pt"))
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert straight["test"] == resumed["test"]


def test_a_nan_batch_is_skipped_without_a_trace(tmp_path, monkeypatch):
    """A batch with a NaN pixel, and one whose loss is NaN, mid-training: the run ends with the
    weights (BatchNorm statistics included) of a run that never saw those batches."""
    config = tiny_config()
    original = Trainer.guarded_step
    calls = {"n": 0}

    def skip_two(self, batch):
        calls["n"] += 1
        return None if calls["n"] in (3, 5) else original(self, batch)

    monkeypatch.setattr(Trainer, "guarded_step", skip_two)
    Trainer(config, tmp_path / "clean", progress=False).fit()

    calls["n"] = 0

    def poison_two(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            batch.images[0, 0, 0, 0] = float("nan")
        if calls["n"] == 5:
            real = self.loss_fn.forward
            self.loss_fn.forward = lambda *a, **k: (lambda r: (r[0] * float("nan"), {**r[1], "loss": float("nan")}))(real(*a, **k))
            try:
                return original(self, batch)
            finally:
                del self.loss_fn.forward
        return original(self, batch)

    monkeypatch.setattr(Trainer, "guarded_step", poison_two)
    summary = Trainer(config, tmp_path / "poisoned", progress=False).fit()
    assert math.isfinite(summary["test"]["mae"])
    assert_same_weights(model_state(tmp_path / "clean" / "last.pt"), model_state(tmp_path / "poisoned" / "last.pt"))


def test_too_many_bad_batches_stop_the_run(tmp_path, monkeypatch):
    from gigacount_lib.train import StopTraining

    config = tiny_config(max_bad_batches=2)
    monkeypatch.setattr(Trainer, "guarded_step", lambda self, batch: None)
    with pytest.raises(StopTraining, match="2 non-finite batches in a row"):
        Trainer(config, tmp_path / "run", progress=False).fit()


def test_run_folder_and_checkpoint_contents(tmp_path):
    config = tiny_config(epochs=1)
    Trainer(config, tmp_path / "run", progress=False).fit()
    run = tmp_path / "run"
    for name in ("config.json", "run.json", "last.pt", "best_mae.pt", "best_rmse.pt", "log.csv", "summary.json",
                 "test/per_image.csv", "test/metrics.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and info["weights_info"]["image"]["random_init"] is True and "torch" in info["versions"]
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == config
    blob = load_checkpoint(run / "best_mae.pt", model_name="gigacount_atto")
    assert blob["model_name"] == "gigacount_atto" and blob["config"]["preset"] == "cpu-quick"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["protocol_label"] and "mae_ratio_to_trivial" in summary
    from gigacount_lib.utils import mixed_precision_available

    assert info["autocast"] == ("bfloat16" if config.optim.amp and mixed_precision_available("cpu") else "off")


def test_amp_falls_back_to_float32_without_native_bfloat16(tmp_path, monkeypatch, caplog):
    """Emulated bfloat16 is slower than float32: on such a CPU the Trainer trains in float32 and says so."""
    import gigacount_lib.train as train_module

    monkeypatch.setattr(train_module, "mixed_precision_available", lambda device: False)
    config = tiny_config(epochs=1, **{"optim.amp": True})
    trainer = Trainer(config, tmp_path / "run", progress=False)
    with caplog.at_level("WARNING", logger="gigacount.train"):
        trainer.fit()
    assert trainer.use_amp is False and "no native bfloat16" in caplog.text
    assert json.loads((tmp_path / "run" / "run.json").read_text())["autocast"] == "off"


def test_checkpoint_errors(tmp_path):
    from gigacount_lib.binning import BinConfig

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model_name": "gigacount", "bin_config": BinConfig.gigacount_qnrf().to_dict()})
    with pytest.raises(CheckpointError, match="model 'gigacount', not 'gigacount_atto'"):
        load_checkpoint(path, model_name="gigacount_atto")
    with pytest.raises(CheckpointError, match="other bins"):
        load_checkpoint(path, bin_config=BinConfig.fine(8))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated.pt: corrupt or truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a GigaCount checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_a_checkpoint_that_carries_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "gigacount-checkpoint-v1", "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused, it is not plain data"):
        load_checkpoint(path)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint .*last.pt to resume from"):
        Trainer(tiny_config(), tmp_path / "empty", resume=True, progress=False).fit()
