"""``gigacount train / eval / predict`` end to end on the synthetic data, and their bad-input messages."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

from gigacount_lib.cli import main

QUICK = ["--set", "epochs=1", "--set", "data.crop_size=64", "--set", "data.max_eval_images=2", "--no-progress"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--preset", "cpu-quick", "--out", str(out), *QUICK]) == 0
    return out


def test_train_writes_a_run_folder(trained_run, capsys):
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["status"] == "completed" and "mae_ratio_to_trivial" in summary
    assert (trained_run / "best_mae.pt").is_file() and (trained_run / "config.json").is_file()


def test_predict_counts_images_and_skips_an_unreadable_one(trained_run, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray((torch.rand(100, 140, 3) * 255).byte().numpy()).save(photos / "street.jpg")
    (photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "pred"
    assert main(["predict", str(trained_run / "best_mae.pt"), str(photos), "--out", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader((out / "counts.csv").open()))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["street.jpg"]
    assert float(rows[0]["count"]) >= 0 and (out / "street_density.png").stat().st_size > 5000
    assert "street.jpg" in capsys.readouterr().out


def test_predict_fast_path_matches_float32(trained_run, tmp_path, caplog):
    """predict runs under bfloat16 autocast where it is native (the fast path) and in float32 with --fp32;
    the counts agree up to bfloat16 rounding."""
    from gigacount_lib.utils import native_bf16

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(120, 160, 3, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()
                        ).save(photos / f"p{i}.png")
    counts = {}
    for flag in ([], ["--fp32"]):
        out = tmp_path / f"pred{len(flag)}"
        caplog.clear()
        with caplog.at_level("INFO", logger="gigacount.predict"):
            assert main(["predict", str(trained_run / "best_mae.pt"), str(photos), "--out", str(out),
                         "--device", "cpu", *flag]) == 0
        fast = not flag and native_bf16("cpu")
        assert ("bfloat16 autocast" if fast else "float32") in caplog.text
        counts[bool(flag)] = [float(r["count"]) for r in csv.DictReader((out / "counts.csv").open())]
    for bf, fp in zip(counts[False], counts[True]):
        assert bf == pytest.approx(fp, rel=0.03, abs=0.05)


def test_eval_reports_the_test_metrics(trained_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(trained_run / "best_mae.pt"), "--full-image", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "MAE" in printed and "held-out" in printed
    assert (out / "per_image.csv").is_file() and (out / "metrics.json").is_file()


def test_eval_uses_the_runs_window_and_protocol_unless_told(trained_run, tmp_path, capsys):
    config = json.loads((trained_run / "config.json").read_text())
    assert main(["eval", str(trained_run / "best_mae.pt"), "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    settings = json.loads((tmp_path / "a" / "metrics.json").read_text())["settings"]
    assert settings["window"] == config["eval_window"] and settings["protocol"] == config["protocol"]
    assert "warning" not in capsys.readouterr().err
    assert main(["eval", str(trained_run / "best_mae.pt"), "--window", "64", "--protocol", "official",
                 "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "selected on test" in captured.out and "was selected under the 'heldout' protocol" in captured.err
    settings = json.loads((tmp_path / "b" / "metrics.json").read_text())["settings"]
    assert (settings["window"], settings["stride"]) == (64, 64)


def test_bad_input_messages(trained_run, tmp_path, capsys):
    assert main(["train", "--preset", "cpu-quick", "--out", str(tmp_path / "none"), "--resume", *QUICK]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse lists the presets
        main(["train", "--preset", "gpu-fast"])
    assert "invalid choice: 'gpu-fast'" in capsys.readouterr().err
    assert main(["train", "--preset", "cpu-quick", "--set", "optim.learningrate=1", *QUICK]) == 2
    assert "no field 'optim.learningrate'" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes((trained_run / "best_mae.pt").read_bytes()[:1000])
    assert main(["predict", str(broken), str(tmp_path)]) == 2
    assert "broken.pt: corrupt or truncated" in capsys.readouterr().err
    assert main(["eval", str(trained_run / "best_mae.pt"), "--dataset", "qnrf", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
