"""Bad input, as a hostile but realistic user would give it: every case ends in an error of a known
type whose message names the file or option, or is handled (a damaged cache is rebuilt), and no file
of the user's changes. ``_tree`` hashes a folder before and after."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_zip_with_bad_crc
import scipy.io
import torch
from PIL import Image

from gigacount_lib.binning import BinConfig, validate_bins
from gigacount_lib.cli import main
from gigacount_lib.data.datasets import (AnnotationError, CorruptImageError, DatasetNotFoundError, NWPUDataset,
                                         QNRFDataset)
from gigacount_lib.data.download import (MANIFEST_NAME, ChecksumError, CorruptArchiveError, download_dataset,
                                         download_file, extract_archive, verify_file)
from gigacount_lib.data.files import ImageTooLargeError, read_image_size
from gigacount_lib.data.synthetic import SyntheticConfig, generate_synthetic_dataset
from gigacount_lib.data.synthetic.dataset import cached_synthetic_root
from gigacount_lib.data.transforms import to_image_tensor
from gigacount_lib.losses import AdaptiveHybridLoss, DMCountLoss
from gigacount_lib.utils import _host_tag, cache_dir

TINY = SyntheticConfig(n_train=2, n_test=1, seed=1, width=64, height=48)
CLOSED_URL = "http://127.0.0.1:9/UCF-QNRF_ECCV18.zip"  # never contacted: the archive is already there


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256 (files) or "dir"}`` of everything under ``root`` (links not followed)."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _image(path: Path, size=(24, 32), seed=0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)).save(path)


def _qnrf(root: Path, n: int = 2, split: str = "Train") -> Path:
    for i in range(1, n + 1):
        _image(root / split / f"img_{i:04d}.jpg", seed=i)
        scipy.io.savemat(root / split / f"img_{i:04d}_ann.mat", {"annPoints": np.array([[3.0, 4.0], [10.0, 8.0]])})
    return root


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header announces ``width`` x ``height`` (no real pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _gigacount_log(caplog):
    return caplog.at_level(logging.INFO, logger="gigacount")


# --------------------------------------------------------------------------------------------------
# synthetic dataset: overwrite, leftovers, values (harmful case 1)
# --------------------------------------------------------------------------------------------------
def test_overwrite_refuses_a_dataset_folder_holding_user_files(tmp_path):
    out = generate_synthetic_dataset(tmp_path / "D", TINY)
    (out / "exp").mkdir()
    (out / "exp" / "run1.json").write_text('{"mae": 1.0}')
    (out / "model_best.pt").write_bytes(b"weights")
    before = _tree(tmp_path)
    with pytest.raises(FileExistsError) as err:
        generate_synthetic_dataset(out, TINY, overwrite=True)
    msg = str(err.value)
    assert str(out / "exp") in msg and "--out" in msg and "synthetic.json" in msg
    assert _tree(tmp_path) == before


def test_overwrite_refuses_a_folder_whose_manifest_is_not_ours(tmp_path):
    user = tmp_path / "holiday"
    (user / "photos").mkdir(parents=True)
    (user / "photos" / "beach.jpg").write_bytes(b"jpeg")
    (user / "synthetic.json").write_text("{}")
    before = _tree(tmp_path)
    with pytest.raises(FileExistsError, match="not a synthetic dataset") as err:
        generate_synthetic_dataset(user, TINY, overwrite=True)
    assert str(user) in str(err.value) and "--out" in str(err.value)
    assert _tree(tmp_path) == before


def test_overwrite_refuses_a_link_inside_the_dataset(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"precious")
    out = generate_synthetic_dataset(tmp_path / "D", TINY)
    (out / "Train" / "mine").symlink_to(photos, target_is_directory=True)
    before = _tree(tmp_path)
    with pytest.raises(FileExistsError) as err:
        generate_synthetic_dataset(out, TINY, overwrite=True)
    assert str(out / "Train" / "mine") in str(err.value)
    assert _tree(tmp_path) == before


def test_overwrite_replaces_exactly_the_listed_files(tmp_path):
    neighbour = tmp_path / "notes.txt"
    neighbour.write_text("keep")
    out = generate_synthetic_dataset(tmp_path / "D", dataclasses.replace(TINY, n_train=3))
    generate_synthetic_dataset(out, TINY, overwrite=True)
    assert sorted(p.name for p in (out / "Train").iterdir()) == [
        "img_0001.jpg", "img_0001_ann.mat", "img_0002.jpg", "img_0002_ann.mat"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D", "notes.txt"]  # no temporary folders left
    assert neighbour.read_text() == "keep"


def test_stale_temp_folder_of_a_killed_run_is_removed(tmp_path):
    stale = tmp_path / f".D.tmp-{_host_tag()}-{_dead_pid()}-abc123"
    (stale / "Train").mkdir(parents=True)
    (stale / "Train" / "img_0001.jpg").write_bytes(b"half")
    (stale / "Train" / "img_0001_ann.mat").write_bytes(b"half")
    generate_synthetic_dataset(tmp_path / "D", TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]


def test_stale_temp_folder_with_foreign_files_is_named_and_kept(tmp_path, caplog):
    stale = tmp_path / f".D.tmp-{_host_tag()}-{_dead_pid()}-abc123"
    (stale / "Train").mkdir(parents=True)
    (stale / "Train" / "img_0001.jpg").write_bytes(b"half")
    (stale / "thesis.tex").write_text("precious")
    with _gigacount_log(caplog):
        generate_synthetic_dataset(tmp_path / "D", TINY)
    assert (stale / "thesis.tex").read_text() == "precious"
    assert not (stale / "Train").exists()  # what we wrote went
    assert str(stale) in caplog.text and "thesis.tex" in caplog.text


def test_temp_folder_of_a_running_process_is_left_alone(tmp_path):
    live = tmp_path / f".D.tmp-{_host_tag()}-{os.getpid()}-abc123"
    (live / "Train").mkdir(parents=True)
    (live / "Train" / "img_0001.jpg").write_bytes(b"in progress")
    before = _tree(live)
    generate_synthetic_dataset(tmp_path / "D", TINY)
    assert _tree(live) == before


def test_kill_9_during_synth_leaves_nothing_behind_after_the_next_run(tmp_path):
    out = tmp_path / "D"
    env = dict(os.environ, GIGACOUNT_LOGLEVEL="ERROR")
    proc = subprocess.Popen([sys.executable, "-m", "gigacount_lib.cli", "synth", "--out", str(out), "--n-train",
                             "400", "--n-test", "1", "--width", "256", "--height", "192"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not list(tmp_path.glob(".D.tmp-*/Train/img_0001.jpg")):
            assert proc.poll() is None, "synth ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert list(tmp_path.glob(".D.tmp-*")) and not out.exists()
    assert main(["synth", "--out", str(out), "--n-train", "1", "--n-test", "1", "--width", "64", "--height", "48"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]


def test_legacy_temp_folder_is_named(tmp_path, caplog):
    legacy = tmp_path / ".D.tmp-a1b2c3d4"
    legacy.mkdir()
    (legacy / "x").write_text("?")
    with _gigacount_log(caplog):
        generate_synthetic_dataset(tmp_path / "D", TINY)
    assert str(legacy) in caplog.text and (legacy / "x").read_text() == "?"


@pytest.mark.parametrize("field, value, allowed", [
    ("n_train", -3, ">= 0"), ("width", 0, "between 32 and 4096"), ("width", 100_000, "between 32 and 4096"),
    ("height", 2.5, "integer"), ("seed", -5, ">= 0"), ("workers", 0, ">= 1"),
])
def test_synthetic_config_refuses_out_of_range_values(tmp_path, field, value, allowed):
    with pytest.raises(ValueError) as err:
        if field == "workers":
            generate_synthetic_dataset(tmp_path / "D", TINY, workers=value)
        else:
            SyntheticConfig(**{field: value})
    assert field in str(err.value) and allowed in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_synthetic_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="n_train \\+ n_test must be >= 1"):
        SyntheticConfig(n_train=0, n_test=0)
    with pytest.raises(ValueError, match="seed"):
        cached_synthetic_root(quick=True, seed=-5)


def test_reader_of_a_synthetic_dataset_without_test_images_says_so(tmp_path):
    out = generate_synthetic_dataset(tmp_path / "D", dataclasses.replace(TINY, n_test=0))
    before = _tree(tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        QNRFDataset(out, "test")
    msg = str(err.value)
    assert str(out) in msg and "synthetic" in msg and "--n-test" in msg and "crcv" not in msg
    assert _tree(tmp_path) == before


def test_out_is_a_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    with pytest.raises(FileExistsError, match="not a folder") as err:
        generate_synthetic_dataset(target, TINY)
    assert str(target) in str(err.value)
    with pytest.raises(NotADirectoryError, match="--out") as err:
        generate_synthetic_dataset(target / "sub", TINY)
    assert str(target) in str(err.value) and "Errno" not in str(err.value)
    assert target.read_text() == "mine"


# --------------------------------------------------------------------------------------------------
# data: images, annotations, caches
# --------------------------------------------------------------------------------------------------
def test_image_header_announcing_a_decompression_bomb(tmp_path):
    root = _qnrf(tmp_path / "q", n=1)
    bomb = root / "Train" / "img_0001.jpg"
    _png_header(bomb, 100_000, 100_000)
    before = _tree(tmp_path)
    with pytest.raises(ImageTooLargeError) as err:
        read_image_size(bomb)
    assert str(bomb) in str(err.value) and "MAX_IMAGE_PIXELS" in str(err.value)
    with pytest.raises(CorruptImageError, match=str(bomb)):
        QNRFDataset(root, "train")[0]
    assert _tree(tmp_path) == before


def test_truncated_image(tmp_path):
    root = _qnrf(tmp_path / "q", n=1)
    img = root / "Train" / "img_0001.jpg"
    img.write_bytes(img.read_bytes()[:200])
    before = _tree(tmp_path)
    with pytest.raises(CorruptImageError, match=str(img)):
        QNRFDataset(root, "train")[0]
    assert _tree(tmp_path) == before


def test_truncated_mat_annotation(tmp_path):
    root = _qnrf(tmp_path / "q", n=1)
    ann = root / "Train" / "img_0001_ann.mat"
    ann.write_bytes(ann.read_bytes()[:150])
    before = _tree(tmp_path)
    with pytest.raises(AnnotationError, match=str(ann)):
        QNRFDataset(root, "train")[0]
    assert _tree(tmp_path) == before


def _nwpu(root: Path) -> Path:
    _image(root / "images" / "0001.jpg")
    (root / "mats").mkdir()
    scipy.io.savemat(root / "mats" / "0001.mat", {"annPoints": np.array([[1.0, 2.0]])})
    (root / "train.txt").write_text("0001 1 1\n")
    return root


def test_non_utf8_nwpu_list(tmp_path):
    root = _nwpu(tmp_path / "nwpu")
    (root / "train.txt").write_bytes("0001 1 1\ncaf\xe9\n".encode("latin-1"))
    before = _tree(tmp_path)
    with pytest.raises(AnnotationError) as err:
        NWPUDataset(root, "train")
    assert str(root / "train.txt") in str(err.value) and "UTF-8" in str(err.value)
    assert _tree(tmp_path) == before


def test_invalid_nwpu_json(tmp_path):
    root = _nwpu(tmp_path / "nwpu")
    (root / "mats" / "0001.mat").unlink()
    (root / "jsons").mkdir()
    (root / "jsons" / "0001.json").write_text('{"points": [[1, 2], ')
    before = _tree(tmp_path)
    with pytest.raises(AnnotationError, match=str(root / "jsons" / "0001.json")):
        NWPUDataset(root, "train")[0]
    assert _tree(tmp_path) == before


def test_bad_jhu_line(tmp_path):
    from gigacount_lib.data.datasets import JHUDataset

    root = tmp_path / "jhu"
    _image(root / "train" / "images" / "0001.jpg")
    (root / "train" / "gt").mkdir()
    (root / "train" / "gt" / "0001.txt").write_text("3 4 1 1 0 0\nnot a number\n")
    before = _tree(tmp_path)
    with pytest.raises(AnnotationError, match=re.escape(f"{root / 'train' / 'gt' / '0001.txt'}:2")):
        JHUDataset(root, "train")[0]
    assert _tree(tmp_path) == before


def test_annotation_whose_image_is_missing_is_reported(tmp_path, caplog):
    root = _qnrf(tmp_path / "q", n=3)
    (root / "Train" / "img_0002.jpg").unlink()  # a partial extraction
    before = _tree(tmp_path)
    with _gigacount_log(caplog):
        ds = QNRFDataset(root, "train")
    assert ds.names == ["img_0001", "img_0003"]
    assert "img_0002_ann.mat" in caplog.text and "extracted completely" in caplog.text
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("kwargs", [{"min_size": 0}, {"max_size": -4}, {"min_size": 2.5}, {"max_size": True}])
def test_dataset_sizes_must_be_positive_whole_numbers(tmp_path, kwargs):
    root = _qnrf(tmp_path / "q", n=1)
    before = _tree(tmp_path)
    with pytest.raises(ValueError) as err:
        QNRFDataset(root, "train", **kwargs)
    assert next(iter(kwargs)) in str(err.value) and "positive" in str(err.value)
    assert _tree(tmp_path) == before


def test_truncated_preprocessing_index_is_rebuilt(tmp_path, caplog):
    root = _qnrf(tmp_path / "q", n=2)
    cache = tmp_path / "cache"
    first = QNRFDataset(root, "train", max_size=16, preprocess=True, cache_root=cache)
    index = first._cache / "index.json"
    index.write_text(index.read_text()[:40])
    before = _tree(root)
    with _gigacount_log(caplog):
        again = QNRFDataset(root, "train", max_size=16, preprocess=True, cache_root=cache)
    assert str(index) in caplog.text and "rebuilding" in caplog.text
    assert json.loads(index.read_text())["version"] == 1
    assert again[1][0].shape == first[1][0].shape and _tree(root) == before
    assert [p.name for p in cache.iterdir()] == [first._cache.name]  # no temporary folders left


def test_damaged_preprocessing_cache_entry_is_rebuilt(tmp_path, caplog):
    root = _qnrf(tmp_path / "q", n=2)
    ds = QNRFDataset(root, "train", preprocess=True, cache_root=tmp_path / "cache")
    expected = ds[0][1].clone()
    npy = ds._cache / "points" / "img_0001.npy"
    npy.write_bytes(npy.read_bytes()[:20])
    before = _tree(root)
    with _gigacount_log(caplog):
        points = ds[0][1]
    torch.testing.assert_close(points, expected)
    assert "img_0001" in caplog.text and "damaged cache entry" in caplog.text
    assert _tree(root) == before


def test_cache_dir_that_is_a_file(tmp_path, monkeypatch):
    blocker = tmp_path / "cache.txt"
    blocker.write_text("mine")
    monkeypatch.setenv("GIGACOUNT_CACHE", str(blocker))
    with pytest.raises(NotADirectoryError) as err:
        cache_dir()
    assert "$GIGACOUNT_CACHE" in str(err.value) and str(blocker) in str(err.value)
    assert "Errno" not in str(err.value) and blocker.read_text() == "mine"


@pytest.mark.parametrize("image, match", [
    (torch.full((3, 4, 4), 200.0), "divide by 255"),
    (np.full((8, 6, 3), 128.0, np.float32), "divide by 255"),
    (torch.full((3, 4, 4), float("nan")), r"\[0, 1\]"),
    (torch.full((3, 4, 4), -0.5), r"\[0, 1\]"),
])
def test_float_images_outside_0_1(image, match):
    with pytest.raises(ValueError, match=match) as err:
        to_image_tensor(image)
    assert "image" in str(err.value)


# --------------------------------------------------------------------------------------------------
# bins (harmful case 3)
# --------------------------------------------------------------------------------------------------
def test_fractional_bin_bounds(tmp_path):
    path = tmp_path / "bins.json"
    path.write_text(json.dumps({"bins": [[0, 0.5], [1.5, "inf"]], "anchor_points": [0, 2]}))
    before = _tree(tmp_path)
    with pytest.raises(ValueError) as err:
        BinConfig.load(path)
    msg = str(err.value)
    assert str(path) in msg and "bins[0]" in msg and "whole number" in msg
    with pytest.raises(ValueError, match=r"bins\[1\]: low bound 1.5"):
        validate_bins([[0, 1], [1.5, "inf"]])
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("anchor", ["inf", float("nan"), "-inf"])
def test_non_finite_anchor(tmp_path, anchor):
    path = tmp_path / "bins.json"
    path.write_text(json.dumps({"bins": [[0, 0], [1, "inf"]], "anchor_points": [0, anchor]}))
    with pytest.raises(ValueError) as err:
        BinConfig.load(path)
    assert str(path) in str(err.value) and "anchor_points[1]" in str(err.value)


def test_anchor_outside_its_bin():
    with pytest.raises(ValueError, match=r"anchor_points\[0\]=0.5 lies outside its bin"):
        BinConfig(bins=((0, 0), (1, float("inf"))), anchor_points=(0.5, 1.0))


@pytest.mark.parametrize("reduction", [8.7, 12, "8", float("nan"), True])
def test_reduction_must_be_an_allowed_whole_number(tmp_path, reduction):
    path = tmp_path / "bins.json"
    path.write_text(json.dumps({"bins": [[0, 0], [1, "inf"]], "anchor_points": [0, 1], "reduction": reduction}))
    with pytest.raises(ValueError) as err:
        BinConfig.load(path)
    assert str(path) in str(err.value) and "reduction must be one of 4, 8, 16, 32, 64" in str(err.value)
    assert BinConfig.fine(4, reduction=16.0).reduction == 16  # a whole float is fine


@pytest.mark.parametrize("bins", [[[0, "many"], [1, "inf"]], [[0, None], [1, "inf"]], ["ab", [1, "inf"]]])
def test_non_numeric_bin_bounds(bins):
    with pytest.raises(ValueError, match=r"bins\[0\]"):
        validate_bins(bins)


def test_truncated_bin_file(tmp_path):
    path = tmp_path / "bins.json"
    path.write_text('{"bins": [[0, 0], [1, ')
    with pytest.raises(ValueError, match=re.escape(str(path))):
        BinConfig.load(path)


# --------------------------------------------------------------------------------------------------
# models: weights files and the text-prototype cache
# --------------------------------------------------------------------------------------------------
def _encoder(path):
    from gigacount_lib.models.encoder import TruncatedConvNeXt

    return TruncatedConvNeXt(weights_file=str(path))


@pytest.mark.parametrize("content", [b"", os.urandom(3000), b"PK\x03\x04" + os.urandom(500)],
                         ids=["empty", "random", "broken-zip"])
def test_unreadable_weights_file(tmp_path, content):
    from gigacount_lib.models.pretrained import WeightsFileError

    path = tmp_path / "convnext.pth"
    path.write_bytes(content)
    before = _tree(tmp_path)
    with pytest.raises(WeightsFileError) as err:
        _encoder(path)
    assert str(path) in str(err.value) and "re-download" in str(err.value)
    assert _tree(tmp_path) == before


def test_weights_file_of_another_model(tmp_path):
    from gigacount_lib.models.pretrained import WeightsFileError

    path = tmp_path / "other.pth"
    torch.save({"0.weight": torch.zeros(3), "1.0.weight": torch.zeros(3)}, path)  # numbered like torchvision
    before = _tree(tmp_path)
    with pytest.raises(WeightsFileError) as err:
        _encoder(path)
    assert str(path) in str(err.value) and "ConvNeXt" in str(err.value)
    assert _tree(tmp_path) == before


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    from gigacount_lib.models.pretrained import WeightsFileError

    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsFileError, match=re.escape(f"{path}: not a state dict")):
        _encoder(path)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.pth"))):
        _encoder(tmp_path / "nope.pth")


@pytest.fixture(scope="module")
def prototype_cache(tmp_path_factory):
    """One computed text-prototype cache (random RN50 text tower), copied by the tests that damage it."""
    from gigacount_lib.models import pretrained as P

    folder = tmp_path_factory.mktemp("proto_cache")
    old = os.environ.get("GIGACOUNT_CACHE")
    os.environ["GIGACOUNT_CACHE"] = str(folder)
    try:
        protos, info = P.compute_text_prototypes("RN50", ["no one", "one person", "two people"], pretrained=False)
    finally:
        if old is None:
            del os.environ["GIGACOUNT_CACHE"]
        else:
            os.environ["GIGACOUNT_CACHE"] = old
    return folder, Path(info["cache_path"]), protos


@pytest.mark.parametrize("damage", ["truncated", "wrong-shape"])
def test_damaged_text_prototype_cache_is_recomputed(tmp_path, monkeypatch, caplog, prototype_cache, damage):
    import shutil

    from gigacount_lib.models import pretrained as P

    folder, cached, protos = prototype_cache
    shutil.copytree(folder, tmp_path / "cache")
    monkeypatch.setenv("GIGACOUNT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cache" / cached.relative_to(folder)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:120])
    else:
        buffer = io.BytesIO()
        torch.save({"prototypes": torch.zeros(2, 4), "text_tower_params": 1}, buffer)
        path.write_bytes(buffer.getvalue())
    with _gigacount_log(caplog):
        again, info = P.compute_text_prototypes("RN50", ["no one", "one person", "two people"], pretrained=False)
    assert info["cache_hit"] is False and str(path) in caplog.text and "recomputing" in caplog.text
    torch.testing.assert_close(again, protos)
    # the file was replaced: the next build hits the cache again
    assert P.compute_text_prototypes("RN50", ["no one", "one person", "two people"], pretrained=False)[1]["cache_hit"]


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------
def _loss_inputs():
    density = torch.rand(1, 1, 4, 4)
    logits = torch.randn(1, 5, 4, 4)
    points = [torch.tensor([[3.0, 4.0], [20.0, 9.0]])]
    return density, logits, points


def test_nan_logits_are_refused():
    density, logits, points = _loss_inputs()
    logits[0, 2, 1, 1] = float("nan")
    with pytest.raises(ValueError) as err:
        AdaptiveHybridLoss(BinConfig.gigacount_qnrf()).compute(logits, density, points, (32, 32))
    assert "AdaptiveHybridLoss" in str(err.value) and "NaN or infinite logits" in str(err.value)


def test_nan_density_is_refused():
    density, _, points = _loss_inputs()
    density[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="DMCountLoss: NaN or infinite predicted density"):
        DMCountLoss(8).compute(None, density, points, (32, 32))


@pytest.mark.parametrize("image_size", [32, (32,), (32, -8), (32.5, 32), "32x32", None])
def test_image_size_must_be_two_positive_integers(image_size):
    density, logits, points = _loss_inputs()
    for call in (lambda: DMCountLoss(8).compute(None, density, points, image_size),
                 lambda: AdaptiveHybridLoss(BinConfig.gigacount_qnrf()).compute(logits, density, points, image_size)):
        with pytest.raises(ValueError) as err:
            call()
        assert "image_size must be (H, W)" in str(err.value)


def test_numpy_points_are_accepted():
    density, _, points = _loss_inputs()
    loss = DMCountLoss(8)
    expected, _ = loss.compute(None, density, points, (32, 32))
    got, _ = loss.compute(None, density, [points[0].numpy().astype(np.float64)], (32, 32))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("points, match", [
    ([[[3.0, 4.0]]], "points\\[0\\]: expected an \\(N, 2\\) tensor of \\(x, y\\), got a list"),
    ([torch.zeros(5, 3)], "points\\[0\\]: expected an \\(N, 2\\) tensor of \\(x, y\\), got shape \\(5, 3\\)"),
    (torch.zeros(5, 2), "a single Tensor of shape \\(5, 2\\)"),
])
def test_malformed_points(points, match):
    density, _, _ = _loss_inputs()
    with pytest.raises(ValueError, match=match):
        DMCountLoss(8).compute(None, density, points, (32, 32))


# --------------------------------------------------------------------------------------------------
# downloads and archives (harmful case 4)
# --------------------------------------------------------------------------------------------------
def _archive(root: Path, data: bytes = b"the archive the user fetched by hand") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "UCF-QNRF_ECCV18.zip"
    path.write_bytes(data)
    return path


def test_mistyped_sha256_keeps_the_hand_fetched_archive(tmp_path):
    archive = _archive(tmp_path / "q")
    actual = hashlib.sha256(archive.read_bytes()).hexdigest()
    wrong = actual[:-1] + ("0" if actual[-1] != "0" else "1")
    before = _tree(tmp_path)
    with pytest.raises(ChecksumError) as err:
        download_dataset("qnrf", tmp_path / "q", sha256=wrong, url=CLOSED_URL, progress=False)
    msg = str(err.value)
    assert str(archive) in msg and wrong in msg and actual in msg and "left in place" in msg
    assert _tree(tmp_path) == before  # not renamed, no manifest, nothing extracted


def test_recorded_mismatch_moves_aside_without_overwriting_an_earlier_copy(tmp_path):
    root = tmp_path / "q"
    good = b"A" * 64
    archive = _archive(root, good)
    (root / MANIFEST_NAME).write_text(json.dumps({"archive_sha256": hashlib.sha256(good).hexdigest(),
                                                  "archive_size": len(good), "source_url": CLOSED_URL}))
    archive.write_bytes(b"B" * 64)
    with pytest.raises(ChecksumError, match="moved aside") as err:
        download_dataset("qnrf", root, url=CLOSED_URL, progress=False)
    assert str(root / "UCF-QNRF_ECCV18.zip.corrupt") in str(err.value)
    archive.write_bytes(b"C" * 64)
    with pytest.raises(ChecksumError) as err:
        download_dataset("qnrf", root, url=CLOSED_URL, progress=False)
    assert str(root / "UCF-QNRF_ECCV18.zip.corrupt-2") in str(err.value)
    assert (root / "UCF-QNRF_ECCV18.zip.corrupt").read_bytes() == b"B" * 64
    assert (root / "UCF-QNRF_ECCV18.zip.corrupt-2").read_bytes() == b"C" * 64


def test_pinned_hash_that_contradicts_the_record_says_so(tmp_path):
    root = tmp_path / "q"
    archive = _archive(root)
    actual = hashlib.sha256(archive.read_bytes()).hexdigest()
    (root / MANIFEST_NAME).write_text(json.dumps({"archive_sha256": actual, "archive_size": archive.stat().st_size}))
    before = _tree(tmp_path)
    with pytest.raises(ChecksumError) as err:
        download_dataset("qnrf", root, sha256="f" * 64, url=CLOSED_URL, progress=False)
    assert str(root / MANIFEST_NAME) in str(err.value) and "check the value you passed" in str(err.value)
    assert _tree(tmp_path) == before


def test_verify_file_with_a_given_hash_keeps_the_file(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"data")
    with pytest.raises(ChecksumError, match=re.escape(str(path))):
        verify_file(path, sha256="0" * 64)
    assert path.read_bytes() == b"data" and sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]


def test_zip_member_with_a_bad_crc(tmp_path):
    archive = write_zip_with_bad_crc(tmp_path / "broken.zip")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    before = _tree(tmp_path)
    with pytest.raises(CorruptArchiveError) as err:
        extract_archive(archive, tmp_path / "out")
    assert str(archive) in str(err.value) and "download it again" in str(err.value)
    assert _tree(tmp_path) == before


def test_stale_extraction_folder_with_foreign_files_is_kept(tmp_path, caplog):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a.txt", "a")
    dest = tmp_path / "out"
    stale = dest / f".good.zip.extracting-{_host_tag()}-{_dead_pid()}-xyz"
    (stale / "top").mkdir(parents=True)
    (stale / "top" / "a.txt").write_text("half")
    (stale / "notes.txt").write_text("mine")
    with _gigacount_log(caplog):
        assert extract_archive(archive, dest) == [dest / "top"]
    assert (stale / "notes.txt").read_text() == "mine" and not (stale / "top").exists()
    assert str(stale) in caplog.text


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_timeout_must_be_positive(tmp_path, timeout):
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        download_file(CLOSED_URL, tmp_path / "f.zip", timeout=timeout)
    assert list(tmp_path.iterdir()) == []


def test_damaged_download_manifest(tmp_path):
    root = tmp_path / "q"
    _archive(root)
    (root / MANIFEST_NAME).write_text('{"archive_sha256": ')
    before = _tree(tmp_path)
    with pytest.raises(ValueError) as err:
        download_dataset("qnrf", root, url=CLOSED_URL, progress=False)
    assert str(root / MANIFEST_NAME) in str(err.value) and "move it away" in str(err.value)
    assert _tree(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def _synth(out, *extra):
    return main(["synth", "--out", str(out), "--n-train", "2", "--n-test", "1", "--width", "64", "--height", "48",
                 *extra])


def test_cli_synth_overwrite_keeps_user_files(tmp_path, capsys):
    out = tmp_path / "D"
    assert _synth(out) == 0
    (out / "exp").mkdir()
    (out / "exp" / "run1.json").write_text("{}")
    (out / "model_best.pt").write_bytes(b"weights")
    before = _tree(tmp_path)
    capsys.readouterr()
    assert _synth(out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert str(out / "exp") in err and "--out" in err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("option, value, allowed", [
    ("--n-train", "0", ">= 1"), ("--n-test", "0", ">= 1"), ("--n-train", "-3", ">= 1"),
    ("--width", "0", "between 32 and 4096"), ("--width", "100000", "between 32 and 4096"),
    ("--height", "12.5", "integer"), ("--seed", "-5", ">= 0"), ("--workers", "0", ">= 1"),
])
def test_cli_synth_refuses_out_of_range_options(tmp_path, capsys, option, value, allowed):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path / "D"), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and allowed in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_synth_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    assert _synth(target) == 2
    assert str(target) in capsys.readouterr().err
    assert _synth(target / "sub") == 2
    err = capsys.readouterr().err
    assert "--out" in err and str(target) in err and "Errno" not in err
    assert target.read_text() == "mine"


def test_cli_download_mistyped_sha256(tmp_path, capsys):
    archive = _archive(tmp_path / "q")
    actual = hashlib.sha256(archive.read_bytes()).hexdigest()
    before = _tree(tmp_path)
    assert main(["download", "qnrf", "--root", str(tmp_path / "q"), "--sha256", "a" * 64, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(archive) in err and "a" * 64 in err and actual in err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("option, value, message", [
    ("--timeout", "0", "must be a number > 0 seconds"), ("--timeout", "soon", "must be a number > 0 seconds"),
    ("--sha256", "abc123", "64 hexadecimal characters"),
])
def test_cli_download_refuses_bad_options(tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["download", "qnrf", "--root", str(tmp_path / "q"), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and message in err
    assert list(tmp_path.iterdir()) == []


def test_cli_download_root_is_a_file(tmp_path, capsys):
    target = tmp_path / "root.txt"
    target.write_text("mine")
    assert main(["download", "qnrf", "--root", str(target), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--root" in err and str(target) in err and "Errno" not in err
    assert target.read_text() == "mine"
