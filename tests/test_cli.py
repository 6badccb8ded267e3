"""The ``gigacount`` command line (``gigacount_lib.cli.main``)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.io import loadmat

from gigacount_lib.cli import main
from gigacount_lib.data.synthetic import SyntheticConfig, read_manifest


def _synth(out, *extra):
    return main(["synth", "--out", str(out), "--n-train", "3", "--n-test", "2", "--seed", "5",
                 "--width", "160", "--height", "120", *extra])


def test_synth_writes_the_qnrf_layout(tmp_path, capsys):
    out = tmp_path / "syn"
    assert _synth(out) == 0
    assert str(out) in capsys.readouterr().out
    assert sorted(p.name for p in (out / "Train").iterdir()) == [
        "img_0001.jpg", "img_0001_ann.mat", "img_0002.jpg", "img_0002_ann.mat", "img_0003.jpg", "img_0003_ann.mat"]
    assert sorted(p.name for p in (out / "Test").glob("*.jpg")) == ["img_0001.jpg", "img_0002.jpg"]
    manifest = read_manifest(out)
    assert SyntheticConfig.from_dict(manifest["config"]) == SyntheticConfig(
        n_train=3, n_test=2, seed=5, width=160, height=120)
    for entry in manifest["splits"]["Train"]["images"]:
        ann = loadmat(out / "Train" / f"{entry['name']}_ann.mat")["annPoints"]
        assert ann.shape == (entry["count"], 2) and np.isfinite(ann).all()


def test_synth_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "syn"
    assert _synth(out) == 0
    before = (out / "Train" / "img_0001.jpg").read_bytes()
    # refused: either an exception naming the problem or a non-zero exit status
    try:
        status = main(["synth", "--out", str(out), "--n-train", "1", "--n-test", "1", "--seed", "6"])
    except (FileExistsError, SystemExit) as exc:
        assert not isinstance(exc, SystemExit) or exc.code not in (0, None)
    else:
        assert status != 0
    assert (out / "Train" / "img_0001.jpg").read_bytes() == before
    assert main(["synth", "--out", str(out), "--n-train", "1", "--n-test", "1", "--seed", "6",
                 "--width", "160", "--height", "120", "--overwrite"]) == 0
    assert read_manifest(out)["config"]["seed"] == 6
    assert len(list((out / "Train").glob("*.jpg"))) == 1


def test_synth_requires_an_output_folder(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth"])
    assert exc.value.code != 0
    assert "--out" in capsys.readouterr().err


def test_download_uses_an_archive_fetched_by_hand_and_fails_cleanly(tmp_path, capsys):
    """``gigacount download``: an archive already in --root is verified and extracted (no network);
    a wrong --sha256 and a manual-only dataset exit with status 2 and say why."""
    import hashlib
    import json

    from test_download import _qnrf_zip

    data, _ = _qnrf_zip()
    root = tmp_path / "qnrf"
    root.mkdir()
    (root / "UCF-QNRF_ECCV18.zip").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert main(["download", "qnrf", "--root", str(root), "--sha256", digest, "--no-progress"]) == 0
    assert str(root / "UCF-QNRF_ECCV18") in capsys.readouterr().out
    assert json.loads((root / "download.json").read_text())["archive_sha256"] == digest
    assert (root / "UCF-QNRF_ECCV18" / "Train" / "img_0001_ann.mat").is_file()

    assert main(["download", "qnrf", "--root", str(root), "--sha256", "f" * 64, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHA-256 mismatch" in err and "f" * 64 in err and digest in err

    assert main(["download", "jhu", "--root", str(tmp_path / "jhu")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gigacount download: JHU-Crowd++ cannot be downloaded automatically")
    assert "http://www.crowd-counting.com/" in err and "data_root" in err
