"""Dataset readers on tiny fixtures written in the official formats (scipy.io.savemat, txt, jpg)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from gigacount_lib.data.datasets import (
    AnnotationError, CorruptImageError, CrowdDataset, DatasetNotFoundError, JHUDataset, NWPUDataset,
    QNRFDataset, ShanghaiTechDataset, build_dataset, clean_points, target_size,
)


# --------------------------------------------------------------------------------------------------
# Fixture writers (official formats)
# --------------------------------------------------------------------------------------------------
def _image(path: Path, size=(40, 60), mode="RGB", seed=0) -> None:
    """Write an image of ``size = (H, W)`` with random content in the given PIL mode."""
    rng = np.random.default_rng(seed)
    h, w = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = rng.integers(0, 65536, size=(h, w), dtype=np.uint16)
        Image.fromarray(arr).save(path)  # 16-bit grayscale PNG
        return
    coarse = Image.fromarray(rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8), "RGB")
    img = coarse.resize((w, h), Image.Resampling.BILINEAR)  # smooth content: JPEG-friendly
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)


def _points(n: int, size=(40, 60), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    h, w = size
    return np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], axis=1)


def _qnrf(root: Path, split="Train", counts=(3, 0, 5), size=(40, 60)) -> dict[str, np.ndarray]:
    out = {}
    for i, n in enumerate(counts, 1):
        name = f"img_{i:04d}"
        _image(root / split / f"{name}.jpg", size, seed=i)
        pts = _points(n, size, seed=i)
        scipy.io.savemat(root / split / f"{name}_ann.mat", {"annPoints": pts})
        out[name] = pts
    return out


def _sht_mat(path: Path, pts: np.ndarray) -> None:
    """ShanghaiTech: image_info is a 1x1 cell holding a 1x1 struct with fields location, number."""
    struct = np.empty((1, 1), dtype=[("location", "O"), ("number", "O")])
    struct[0, 0]["location"] = pts
    struct[0, 0]["number"] = np.array([[float(len(pts))]])
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = struct
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"image_info": cell})


def _sht(root: Path, part="A", split="train", counts=(4, 2)) -> dict[str, np.ndarray]:
    out = {}
    base = root / f"part_{part}" / f"{split}_data"
    for i, n in enumerate(counts, 1):
        _image(base / "images" / f"IMG_{i}.jpg", seed=i)
        pts = _points(n, seed=i)
        _sht_mat(base / "ground-truth" / f"GT_IMG_{i}.mat", pts)
        out[f"IMG_{i}"] = pts
    return out


def _nwpu(root: Path) -> dict[str, np.ndarray]:
    out = {}
    splits = {"train": ["0001", "0002"], "val": ["0003"], "test": ["0004", "0005"]}
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("".join(f"{i} 1 2\n" for i in ids))
        for k, image_id in enumerate(ids):
            folder = "images_part1" if int(image_id) % 2 else "images_part2"
            _image(root / folder / f"{image_id}.jpg", seed=int(image_id))
            if split != "test":
                pts = _points(2 + k, seed=int(image_id))
                (root / "mats").mkdir(exist_ok=True)
                scipy.io.savemat(root / "mats" / f"{image_id}.mat",
                                 {"annPoints": pts, "annBoxes": np.zeros((len(pts), 4))})
                out[image_id] = pts
    return out


def _jhu(root: Path, split="train", counts=(3, 0)) -> dict[str, np.ndarray]:
    out = {}
    for i, n in enumerate(counts, 1):
        name = f"{i:04d}"
        _image(root / split / "images" / f"{name}.jpg", seed=i)
        pts = np.round(_points(n, seed=i), 2)
        (root / split / "gt").mkdir(parents=True, exist_ok=True)
        lines = [f"{x:.2f} {y:.2f} 8 9 1 0\n" for x, y in pts]
        (root / split / "gt" / f"{name}.txt").write_text("".join(lines))
        out[name] = pts
    return out


def _check_sample(sample, expected: np.ndarray, size=(40, 60)) -> None:
    image, points, meta = sample
    assert image.dtype == torch.float32 and image.shape == (3, *size)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert points.dtype == torch.float32 and points.shape == (len(expected), 2)
    np.testing.assert_allclose(points.numpy(), expected, atol=1e-3)
    assert meta["orig_size"] == size and meta["size"] == size and meta["count"] == len(expected)


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------
def test_qnrf_reader(tmp_path):
    truth = _qnrf(tmp_path)
    _qnrf(tmp_path, "Test", counts=(1,))
    ds = QNRFDataset(tmp_path, "train")
    assert isinstance(ds, CrowdDataset) and len(ds) == 3 and ds.names == list(truth)
    for i, name in enumerate(truth):
        _check_sample(ds[i], truth[name])
        assert ds[i][2]["name"] == name and ds[i][2]["labelled"] is True
    assert ds[1][1].shape == (0, 2)  # an image with 0 people
    assert len(QNRFDataset(tmp_path, "test")) == 1


def test_iter_annotations_matches_getitem_without_decoding(tmp_path, monkeypatch):
    _qnrf(tmp_path, counts=(3, 0, 5))
    ds = QNRFDataset(tmp_path, "train", min_size=50, max_size=100)
    full = [(s[2]["name"], s[1], s[2]["size"]) for s in ds]
    import gigacount_lib.data.base as mod

    def no_decode(*_a, **_k):
        raise AssertionError("iter_annotations decoded pixels")

    monkeypatch.setattr(mod, "load_rgb_image", no_decode)
    lazy = list(ds.iter_annotations())
    assert [n for n, _, _ in lazy] == [n for n, _, _ in full]
    for (_, p1, s1), (_, p2, s2) in zip(lazy, full):
        assert s1 == s2 == (50, 75)
        torch.testing.assert_close(p1, p2)


def test_shanghaitech_reader(tmp_path):
    truth_a = _sht(tmp_path, "A", "train", counts=(4, 2))
    truth_b = _sht(tmp_path, "B", "test", counts=(1,))
    ds = ShanghaiTechDataset(tmp_path, part="A", split="train")
    assert ds.names == ["IMG_1", "IMG_2"]
    for i, name in enumerate(truth_a):
        _check_sample(ds[i], truth_a[name])
    ds_b = build_dataset("shb", tmp_path, "test")
    _check_sample(ds_b[0], truth_b["IMG_1"])
    assert ds_b[0][2]["dataset"] == "shb"


def test_shanghaitech_natural_order(tmp_path):
    _sht(tmp_path, "A", "train", counts=(1,) * 11)
    assert ShanghaiTechDataset(tmp_path, "A", "train").names[:3] == ["IMG_1", "IMG_2", "IMG_3"]


def test_nwpu_reader_and_unlabelled_test(tmp_path):
    truth = _nwpu(tmp_path)
    train = NWPUDataset(tmp_path, "train")
    assert train.names == ["0001", "0002"]  # found across images_part1 / images_part2
    for i, name in enumerate(train.names):
        _check_sample(train[i], truth[name])
    assert len(build_dataset("nwpu", tmp_path, "val")) == 1
    test = NWPUDataset(tmp_path, "test")
    image, points, meta = test[0]
    assert image.shape == (3, 40, 60) and points.shape == (0, 2)
    assert meta["labelled"] is False and meta["count"] == 0


def test_jhu_reader(tmp_path):
    truth = _jhu(tmp_path)
    ds = build_dataset("jhu", tmp_path, "train")
    for i, name in enumerate(truth):
        _check_sample(ds[i], truth[name])
    assert ds[1][1].shape == (0, 2)  # empty gt file


def test_build_dataset_names(tmp_path):
    _qnrf(tmp_path)
    assert isinstance(build_dataset("qnrf", tmp_path, "train"), QNRFDataset)
    assert isinstance(build_dataset("synthetic", tmp_path, "train"), QNRFDataset)  # QNRF layout
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("mall", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset("qnrf", tmp_path, "val")


def test_transform_is_applied_jointly(tmp_path):
    _qnrf(tmp_path, counts=(6,))
    seen = {}

    def transform(image, points, meta):
        seen["args"] = (image.shape, points.shape, meta["name"])
        return image[:, :10], points[:2], meta

    ds = QNRFDataset(tmp_path, "train", transform=transform)
    image, points, _ = ds[0]
    assert seen["args"] == ((3, 40, 60), (6, 2), "img_0001")
    assert image.shape == (3, 10, 60) and points.shape == (2, 2)


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,min_size,max_size,expected", [
    ((40, 60), None, None, (40, 60)),
    ((40, 60), 80, None, (80, 120)),
    ((400, 3000), None, 2048, (273, 2048)),
    ((40, 60), 80, 100, (67, 100)),  # both cannot hold: max_size wins
    ((1000, 500), 448, 2048, (1000, 500)),
])
def test_target_size(size, min_size, max_size, expected):
    assert target_size(size, min_size, max_size) == expected


def test_resize_rescales_points_and_drops_outside(tmp_path, caplog):
    root = tmp_path
    _image(root / "Train" / "img_0001.jpg", size=(40, 60))
    pts = np.array([[30.0, 20.0], [60.0, 40.0], [-5.0, 3.0], [10.0, 41.0], [np.nan, 1.0], [0.0, 0.0]])
    scipy.io.savemat(root / "Train" / "img_0001_ann.mat", {"annPoints": pts})
    with caplog.at_level(logging.INFO, logger="gigacount"):
        ds = QNRFDataset(root, "train", min_size=80)
        image, points, meta = ds[0]
    assert image.shape == (3, 80, 120) and meta["orig_size"] == (40, 60) and meta["size"] == (80, 120)
    # kept: (30,20), the border point (60,40) pulled just inside, (0,0); scaled by 2
    np.testing.assert_allclose(points.numpy(), [[60, 40], [120, 80], [0, 0]], atol=1e-2)
    assert (points[:, 0] < 120).all() and (points[:, 1] < 80).all()
    text = caplog.text
    assert "img_0001_ann.mat" in text and "2 of 6" in text and "NaN" in text


def test_preprocess_cache(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    truth = _qnrf(data, counts=(3, 0, 5), size=(40, 60))
    ds = QNRFDataset(data, "train", max_size=30, preprocess=True, cache_root=cache)
    folders = list(cache.iterdir())
    assert len(folders) == 1 and (folders[0] / "index.json").is_file()
    assert len(list((folders[0] / "images").iterdir())) == 3
    on_the_fly = QNRFDataset(data, "train", max_size=30)
    for i, name in enumerate(truth):
        img_c, pts_c, meta_c = ds[i]
        img_f, pts_f, meta_f = on_the_fly[i]
        assert img_c.shape == img_f.shape == (3, 20, 30) and meta_c["orig_size"] == (40, 60)
        torch.testing.assert_close(pts_c, pts_f)
        np.testing.assert_allclose(pts_c.numpy(), truth[name] / 2, atol=1e-3)
        assert (img_c - img_f).abs().mean() < 0.02  # JPEG re-encoding only
    assert [n for n, _, _ in ds.iter_annotations()] == list(truth)
    # second construction reuses the cache (the source images are no longer needed)
    for f in (data / "Train").glob("*.jpg"):
        f.write_bytes(b"")
    again = QNRFDataset(data, "train", max_size=30, preprocess=True, cache_root=cache)
    assert again[2][1].shape == (5, 2)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
def test_missing_annotation_names_the_file(tmp_path):
    _qnrf(tmp_path)
    (tmp_path / "Train" / "img_0002_ann.mat").unlink()
    with pytest.raises(FileNotFoundError, match="img_0002_ann.mat"):
        QNRFDataset(tmp_path, "train")


def test_missing_annotation_shanghaitech_and_jhu(tmp_path):
    _sht(tmp_path, "A", "train")
    (tmp_path / "part_A" / "train_data" / "ground-truth" / "GT_IMG_2.mat").unlink()
    with pytest.raises(FileNotFoundError, match="GT_IMG_2.mat"):
        ShanghaiTechDataset(tmp_path, "A", "train")
    _jhu(tmp_path / "jhu")
    (tmp_path / "jhu" / "train" / "gt" / "0001.txt").unlink()
    with pytest.raises(FileNotFoundError, match="0001.txt"):
        JHUDataset(tmp_path / "jhu", "train")


def test_corrupt_and_truncated_images(tmp_path):
    _qnrf(tmp_path, counts=(1, 1))
    path = tmp_path / "Train" / "img_0001.jpg"
    path.write_bytes(b"this is not a jpeg")
    good = tmp_path / "Train" / "img_0002.jpg"
    _image(good, size=(200, 300))
    good.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # truncated
    ds = QNRFDataset(tmp_path, "train")
    with pytest.raises(CorruptImageError, match="img_0001.jpg"):
        ds[0]
    with pytest.raises(CorruptImageError, match="img_0002.jpg"):
        ds[1]


@pytest.mark.parametrize("bad_shape", [(3, 1), (2, 5), (4,)])
def test_mat_with_wrong_shape(tmp_path, bad_shape):
    _qnrf(tmp_path, counts=(2,))
    scipy.io.savemat(tmp_path / "Train" / "img_0001_ann.mat", {"annPoints": np.ones(bad_shape)})
    with pytest.raises(AnnotationError, match=r"img_0001_ann.mat.*\(N, 2\).*shape"):
        QNRFDataset(tmp_path, "train")[0]


def test_mat_without_key_and_wrong_shape(tmp_path):
    _qnrf(tmp_path, counts=(2, 2))
    scipy.io.savemat(tmp_path / "Train" / "img_0001_ann.mat", {"points": np.zeros((2, 2))})
    scipy.io.savemat(tmp_path / "Train" / "img_0002_ann.mat", {"annPoints": np.zeros((3, 1))})
    ds = QNRFDataset(tmp_path, "train")
    with pytest.raises(AnnotationError, match=r"img_0001_ann.mat.*'annPoints'.*\['points'\]"):
        ds[0]
    with pytest.raises(AnnotationError, match="img_0002_ann.mat.*shape"):
        ds[1]
    sht = tmp_path / "sht"
    _sht(sht, "A", "train", counts=(1,))
    scipy.io.savemat(sht / "part_A" / "train_data" / "ground-truth" / "GT_IMG_1.mat", {"other": 1.0})
    with pytest.raises(AnnotationError, match="GT_IMG_1.mat.*image_info"):
        ShanghaiTechDataset(sht, "A", "train")[0]


def test_corrupt_mat_and_bad_txt_line(tmp_path):
    _qnrf(tmp_path, counts=(1,))
    (tmp_path / "Train" / "img_0001_ann.mat").write_bytes(b"garbage" * 10)
    with pytest.raises(AnnotationError, match="img_0001_ann.mat"):
        QNRFDataset(tmp_path, "train")[0]
    _jhu(tmp_path / "jhu", counts=(1,))
    (tmp_path / "jhu" / "train" / "gt" / "0001.txt").write_text("10 12 3 3 1 0\nhello\n")
    with pytest.raises(AnnotationError, match=r"0001.txt:2"):
        JHUDataset(tmp_path / "jhu", "train")[0]


@pytest.mark.parametrize("mode,ext", [("L", "jpg"), ("RGBA", "png"), ("P", "png"), ("I;16", "png"),
                                      ("LA", "png"), ("CMYK", "jpg")])
def test_image_modes_converted_to_rgb(tmp_path, mode, ext):
    folder = tmp_path / "Train"
    _image(folder / f"img_0001.{ext}", mode=mode)
    scipy.io.savemat(folder / "img_0001_ann.mat", {"annPoints": _points(2)})
    image, points, _ = QNRFDataset(tmp_path, "train")[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.float32 and points.shape == (2, 2)
    assert float(image.std()) > 0.05  # content survived (16-bit is rescaled, not clipped to white)


def test_sixteen_bit_is_rescaled(tmp_path):
    folder = tmp_path / "Train"
    folder.mkdir()
    arr = np.full((10, 12), 32768, dtype=np.uint16)
    Image.fromarray(arr).save(folder / "img_0001.png")
    scipy.io.savemat(folder / "img_0001_ann.mat", {"annPoints": np.zeros((0, 2))})
    image = QNRFDataset(tmp_path, "train")[0][0]
    assert abs(float(image.mean()) - 0.5) < 0.01


@pytest.mark.parametrize("maker", ["missing", "empty", "wrong"])
def test_empty_or_wrong_root_says_how_to_get_the_data(tmp_path, maker):
    root = tmp_path / "data"
    if maker != "missing":
        root.mkdir()
    if maker == "wrong":
        (root / "something_else").mkdir()
        _image(root / "something_else" / "a.jpg")
    for name, url in [("qnrf", "crcv.ucf.edu"), ("sha", "ShanghaiTechDataset"),
                      ("nwpu", "crowdbenchmark.com"), ("jhu", "crowd-counting.com")]:
        with pytest.raises(DatasetNotFoundError, match=url) as info:
            build_dataset(name, root, "train")
        assert "synthetic" in str(info.value) and str(root) in str(info.value)


def test_clean_points_handles_empty_and_nan():
    kept, n_nan, n_out = clean_points(np.zeros((0, 2)), (10, 10))
    assert kept.shape == (0, 2) and n_nan == n_out == 0
    kept, n_nan, n_out = clean_points(np.array([[np.nan, 1], [1, np.inf], [5, 5], [11, 5]]), (10, 10))
    assert kept.tolist() == [[5, 5]] and n_nan == 2 and n_out == 1


def test_qnrf_accepts_the_archive_folder_and_nwpu_json_fallback(tmp_path):
    truth = _qnrf(tmp_path / "UCF-QNRF_ECCV18", counts=(2,))
    _check_sample(QNRFDataset(tmp_path, "train")[0], truth["img_0001"])
    nwpu = tmp_path / "nwpu"
    nwpu.mkdir()
    truth = _nwpu(nwpu)
    (nwpu / "mats" / "0002.mat").unlink()
    (nwpu / "jsons").mkdir()
    import json

    (nwpu / "jsons" / "0002.json").write_text(json.dumps({"img_id": "0002.jpg", "human_num": 3,
                                                        "points": truth["0002"].tolist(), "boxes": []}))
    _check_sample(NWPUDataset(nwpu, "train")[1], truth["0002"])


def test_images_are_contiguous_chw(tmp_path):
    """The (3, H, W) image is laid out channel-first in memory, not an (H, W, 3) array seen through
    a permutation, and decoding the same file twice gives the same tensor."""
    _qnrf(tmp_path, counts=(2,))
    ds = QNRFDataset(tmp_path, "train")
    image = ds[0][0]
    assert image.shape == (3, 40, 60) and image.is_contiguous()
    torch.testing.assert_close(ds[0][0], image, rtol=0, atol=0)


def test_nwpu_json_that_is_not_an_object_names_the_file(tmp_path):
    truth = _nwpu(tmp_path)
    (tmp_path / "mats" / "0002.mat").unlink()
    (tmp_path / "jsons").mkdir()
    import json

    (tmp_path / "jsons" / "0002.json").write_text(json.dumps([{"x": 1}, truth["0002"].tolist()]))
    with pytest.raises(AnnotationError, match=r"0002.json.*'points'.*list"):
        NWPUDataset(tmp_path, "train")[1]


def test_preprocess_rejects_a_truncated_image_naming_the_original(tmp_path):
    """Building the cache decodes every image: a truncated JPEG that needs no resize fails there,
    named by its own path, instead of being copied into the cache and failing later."""
    data = tmp_path / "data"
    _qnrf(data, counts=(1, 1))
    bad = data / "Train" / "img_0002.jpg"
    _image(bad, size=(200, 300))
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(CorruptImageError, match=re.escape(str(bad))):
        QNRFDataset(data, "train", preprocess=True, cache_root=tmp_path / "cache")
