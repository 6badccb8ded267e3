"""Readers for the crowd-counting benchmarks, exactly as their owners ship them, and the factory that
picks one by name.

=================  ================================================================================
UCF-QNRF           ``Train/img_0001.jpg`` + ``Train/img_0001_ann.mat`` (key ``annPoints``, ``(N, 2)``
                   ``x, y``); same for ``Test/``. Also accepted: ``root/UCF-QNRF_ECCV18/Train``.
ShanghaiTech A/B   ``part_A/train_data/images/IMG_1.jpg`` + ``part_A/train_data/ground-truth/GT_IMG_1.mat``
                   with the points in ``image_info[0, 0][0, 0][0]``; ``test_data`` likewise; ``part_B``.
                   ``part_A_final``/``part_B_final`` (an older archive) are accepted too.
NWPU-Crowd         ``images/0001.jpg`` (or ``images_part1..5/``), ``mats/0001.mat`` (``annPoints``;
                   ``jsons/0001.json`` with ``"points"`` as a fallback) and ``train.txt``,
                   ``val.txt``, ``test.txt`` whose lines start with the image id. The **test split
                   has no public labels**: its samples come back with no points and
                   ``meta["labelled"] = False`` (predict on them and submit to the benchmark).
JHU-Crowd++        ``train/images/0001.jpg`` + ``train/gt/0001.txt`` with one head per line
                   ``x y w h o b`` (position, box size, occlusion, blur); ``val/``, ``test/`` alike.
=================  ================================================================================

``root`` is the folder the download was unpacked into. The embedded synthetic dataset is written in
the UCF-QNRF layout, so ``QNRFDataset`` reads it (``build_dataset("synthetic", None)`` generates it
on first use). Every reader is a :class:`~.base.CrowdDataset` (the sample format, resizing and the
preprocessing cache are described there); names, homepages and layouts come from :mod:`.registry`.
The file readers and the resize rule (``target_size``, ``clean_points``, ``resize_sample``, ...) are
re-exported here too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..utils import get_logger
from .base import CrowdDataset, SampleRecord, list_images, paired_records
from .files import (AnnotationError, CorruptImageError, DatasetNotFoundError, load_rgb_image, read_image_size,
                    read_jhu_txt, read_mat_points, read_nwpu_json, read_shanghaitech_mat, read_text_lines)
from .preprocess import clean_points, resize_sample, target_size
from .registry import DATASETS, lookup

__all__ = [
    "DatasetNotFoundError", "CorruptImageError", "AnnotationError", "SampleRecord", "CrowdDataset",
    "QNRFDataset", "SyntheticDataset", "ShanghaiTechDataset", "NWPUDataset", "JHUDataset", "build_dataset",
    "DATASET_NAMES", "target_size", "load_rgb_image", "read_image_size", "clean_points",
    "resize_sample", "read_mat_points", "resolve_data_root",
]

_log = get_logger("data.datasets")


class QNRFDataset(CrowdDataset, dataset="qnrf"):
    """UCF-QNRF (Idrees et al., ECCV 2018): ``Train|Test/img_XXXX.jpg`` + ``img_XXXX_ann.mat``
    (``annPoints``). Also reads the embedded synthetic dataset, which uses this layout."""

    key = "qnrf"
    splits = ("train", "test")

    def _split_dir(self) -> Path:
        name = {"train": "Train", "test": "Test"}[self.split]
        for base in (self.root, self.root / "UCF-QNRF_ECCV18"):
            for candidate in (name, name.lower()):
                if (base / candidate).is_dir():
                    return base / candidate
        raise self._not_found(self.root, f"no {name}/ folder")

    def _list_samples(self) -> list[SampleRecord]:
        folder = self._split_dir()
        return paired_records(folder, lambda image: folder / f"{image.stem}_ann.mat", folder.glob("*_ann.mat"))

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        return read_mat_points(record.ann_path, "annPoints")


class SyntheticDataset(QNRFDataset, dataset="synthetic"):
    """The embedded synthetic crowd dataset: UCF-QNRF layout, read by :class:`QNRFDataset`; only
    its name differs (``meta["dataset"] == "synthetic"``)."""

    key = "synthetic"


class ShanghaiTechDataset(CrowdDataset, dataset="shanghaitech"):
    """ShanghaiTech part A or B (Zhang et al., CVPR 2016, the MCNN paper):
    ``part_X/{train,test}_data/images/IMG_N.jpg`` + ``ground-truth/GT_IMG_N.mat``
    (points in ``image_info[0, 0][0, 0][0]``)."""

    key = "sht"  # an instance's key is its part: "sha" or "shb"
    splits = ("train", "test")

    def __init__(self, root: str | Path, part: str = "A", split: str = "train",
                 transform: Callable | None = None, **kwargs: Any) -> None:
        part = str(part).upper().replace("PART_", "")
        if part not in ("A", "B"):
            raise ValueError(f"ShanghaiTech: part must be 'A' or 'B', got {part!r}")
        self.part = part
        self.key = f"sh{part.lower()}"
        super().__init__(root, split, transform, **kwargs)

    def _split_dir(self) -> Path:
        sub = f"{self.split}_data"
        candidates = [self.root / f"part_{self.part}" / sub, self.root / f"part_{self.part}_final" / sub,
                      self.root / "ShanghaiTech" / f"part_{self.part}" / sub]
        if self.root.name.lower().startswith(f"part_{self.part.lower()}"):
            candidates.insert(0, self.root / sub)
        for candidate in candidates:
            if (candidate / "images").is_dir():
                return candidate
        raise self._not_found(self.root, f"no part_{self.part}/{sub}/images folder")

    def _list_samples(self) -> list[SampleRecord]:
        folder = self._split_dir()
        return paired_records(folder / "images", lambda image: folder / "ground-truth" / f"GT_{image.stem}.mat",
                              (folder / "ground-truth").glob("GT_*.mat"))

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        return read_shanghaitech_mat(record.ann_path)


class NWPUDataset(CrowdDataset, dataset="nwpu"):
    """NWPU-Crowd (Wang et al., TPAMI 2020): ``images/NNNN.jpg`` (or ``images_part*/``),
    ``mats/NNNN.mat`` (``annPoints``) and ``train.txt``/``val.txt``/``test.txt``.

    The test split has **no public labels**: its samples are unlabelled (no points,
    ``meta["labelled"] = False``); predict on them and submit the counts to the benchmark server.
    """

    key = "nwpu"
    splits = ("train", "val", "test")

    def _list_samples(self) -> list[SampleRecord]:
        list_file = self.root / f"{self.split}.txt"
        if not list_file.is_file():
            raise self._not_found(self.root, f"no {list_file.name}")
        ids = [line.split()[0] for line in read_text_lines(list_file, "NWPU-Crowd split list") if line.strip()]
        image_dirs = [self.root / "images"] + sorted(self.root.glob("images_part*"))
        index: dict[str, Path] = {}
        for folder in image_dirs:
            for image in list_images(folder):
                index.setdefault(image.stem, image)
        records = []
        for image_id in ids:
            image_id = Path(image_id).stem
            if image_id not in index:
                raise FileNotFoundError(f"image {image_id} listed in {list_file} not found under "
                                        f"{', '.join(str(d) for d in image_dirs if d.is_dir()) or self.root}")
            if self.split == "test":
                records.append(SampleRecord(image_id, index[image_id], None))
                continue
            ann = self.root / "mats" / f"{image_id}.mat"
            if not ann.is_file():
                alt = self.root / "jsons" / f"{image_id}.json"
                if not alt.is_file():
                    raise FileNotFoundError(f"annotation file not found: {ann} (for image {index[image_id]})")
                ann = alt
            records.append(SampleRecord(image_id, index[image_id], ann))
        if self.split == "test":
            _log.info("NWPU-Crowd test split: %d images without public labels (unlabelled samples)", len(records))
        return records

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        if record.ann_path.suffix.lower() == ".json":
            return read_nwpu_json(record.ann_path)
        return read_mat_points(record.ann_path, "annPoints")


class JHUDataset(CrowdDataset, dataset="jhu"):
    """JHU-Crowd++ (Sindagi et al., TPAMI 2020): ``{train,val,test}/images/NNNN.jpg`` and
    ``gt/NNNN.txt`` with one head per line, ``x y w h o b``; only ``x y`` are used."""

    key = "jhu"
    splits = ("train", "val", "test")

    def _list_samples(self) -> list[SampleRecord]:
        folder = self.root / self.split
        if not (folder / "images").is_dir():
            raise self._not_found(self.root, f"no {self.split}/images folder")
        return paired_records(folder / "images", lambda image: folder / "gt" / f"{image.stem}.txt",
                              (folder / "gt").glob("*.txt"))

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        return read_jhu_txt(record.ann_path)




# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------
DATASET_NAMES: tuple[str, ...] = ("qnrf", "sha", "shb", "nwpu", "jhu", "synthetic")
_READERS: dict[str, type[CrowdDataset]] = {"qnrf": QNRFDataset, "nwpu": NWPUDataset, "jhu": JHUDataset}


def build_dataset(name: str, root: str | Path | None, split: str = "train", **kwargs: Any) -> CrowdDataset:
    """Build a reader by name: ``"qnrf"``, ``"sha"``, ``"shb"``, ``"nwpu"``, ``"jhu"`` or ``"synthetic"``.

    Any alias of :data:`.registry.ALIASES` works too (``"UCF-QNRF"``, ``"ShanghaiTech-B"``, ...);
    ``"shanghaitech"`` alone needs ``part="A"`` or ``"B"``. ``"synthetic"`` is the embedded dataset in
    UCF-QNRF layout: with ``root=None`` it is generated (once, cached) by :func:`resolve_data_root`,
    which takes the extra keyword arguments ``quick`` and ``seed``. Other keyword arguments go to the
    reader (``transform``, ``min_size``, ``max_size``, ``preprocess``, ``cache_root``).
    """
    found = lookup(name)
    if found is None:
        raise ValueError(f"build_dataset: unknown dataset {name!r}; choose one of {list(DATASET_NAMES)}")
    info, part = found
    if info.key == "synthetic":
        synth_kw = {k: kwargs.pop(k) for k in ("quick", "seed") if k in kwargs}
        return SyntheticDataset(resolve_data_root(root, **synth_kw), split, **kwargs)
    if info.key == "shanghaitech":
        part = part or kwargs.pop("part", None)
        if part is None:
            raise ValueError(f"build_dataset: {name!r} names both parts of ShanghaiTech; choose 'sha' or 'shb' "
                             "(or pass part='A' or 'B')")
        return ShanghaiTechDataset(root, part=part, split=split, **kwargs)
    return _READERS[info.key](root, split, **kwargs)


def resolve_data_root(data_root: str | Path | None = None, quick: bool = False, seed: int = 0) -> Path:
    """The dataset root a notebook or test should use.

    ``data_root`` given: it is returned as a ``Path`` after checking that it exists. ``None``: the
    embedded synthetic dataset (``quick=True``: 48 train / 16 test images; else 300 / 100), generated
    once and cached by :func:`gigacount_lib.data.synthetic.dataset.cached_synthetic_root`.
    """
    if data_root is not None:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"data_root={str(data_root)!r} does not exist or is not a folder. Download the dataset from its "
                f"official page (e.g. UCF-QNRF: {DATASETS['qnrf'].homepage}) and unpack it there, "
                "or pass data_root=None to use the embedded synthetic dataset.")
        return root
    from .synthetic.dataset import cached_synthetic_root

    return cached_synthetic_root(quick=quick, seed=seed)
