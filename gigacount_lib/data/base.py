"""The base class of the dataset readers: listing, loading, preprocessing, caching and transforms.

``ds[i] -> (image, points, meta)`` with ``image`` a float32 ``(3, H, W)`` tensor in ``[0, 1]``,
``points`` a float32 ``(N, 2)`` tensor of head positions ``(x, y)`` in pixels (continuous
coordinates, ``0 <= x <= W``), and ``meta`` a dict with ``name``, ``path``, ``orig_size`` (``(H, W)``
of the file on disk), ``size`` (``(H, W)`` of the returned image), ``count`` (number of returned
points), ``labelled`` and ``dataset``/``split``. Images with no people are fine: their points are a
``(0, 2)`` tensor. ``preprocess=True`` writes the resized images and cleaned points once to a cache
folder (progress bar) and reads from it afterwards; otherwise it is done on the fly.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..utils import (atomic_write_bytes, atomic_write_json, cache_dir, clean_stale_temp_dirs, ensure_dir, get_logger,
                     make_temp_dir, read_json, remove_owned, replace_dir)
from .files import DatasetNotFoundError, decode_image, load_rgb_image, read_image_size
from .preprocess import clean_points, resize_image, scale_points, target_size
from .registry import DATASETS

__all__ = ["IMAGE_EXTENSIONS", "CACHE_VERSION", "SampleRecord", "CrowdDataset", "list_images",
           "paired_records", "image_to_tensor"]

_log = get_logger("data.datasets")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
CACHE_VERSION = 1


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]



def image_to_tensor(img: Image.Image) -> Tensor:
    """8-bit RGB PIL image -> contiguous float32 ``(3, H, W)`` in ``[0, 1]``.

    PIL stores pixels as ``(H, W, 3)``; the float conversion writes them channel-first in the
    same pass (without ``memory_format`` the result would keep ``(H, W, 3)`` strides, and e.g.
    ``image.view(3, -1)`` would fail).
    """
    arr = np.array(img, dtype=np.uint8)  # one writable copy of the pixels
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    return chw.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)



@dataclass(frozen=True)
class SampleRecord:
    """One image of a split: its name (file stem), image path and annotation path (None: unlabelled)."""

    name: str
    image_path: Path
    ann_path: Path | None


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def paired_records(image_folder: Path, annotation_for, annotations=()) -> list[SampleRecord]:
    """Records for every image in ``image_folder``, each paired with ``annotation_for(image)``.

    A missing annotation file is an error naming both files. ``annotations``: the annotation files
    present; those that no image claims (an image lost in a partial extraction) are logged as a
    warning naming the first of them.
    """
    records = []
    for image in list_images(image_folder):
        ann = annotation_for(image)
        if not ann.is_file():
            raise FileNotFoundError(f"annotation file not found: {ann} (for image {image})")
        records.append(SampleRecord(image.stem, image, ann))
    claimed = {r.ann_path for r in records}
    orphans = sorted((a for a in annotations if a not in claimed and not a.name.startswith(".")),
                     key=lambda p: _natural_key(p.name))
    if orphans:
        _log.warning("%d annotation file(s) have no image in %s and are not used (first: %s); was the archive "
                     "extracted completely? Re-extract it, or remove those files", len(orphans), image_folder,
                     orphans[0])
    return records


class CrowdDataset(Dataset):
    """Base class of the readers: listing, loading, preprocessing, caching and transforms.

    Subclasses name their dataset in the registry (``class QNRFDataset(CrowdDataset, dataset="qnrf")``),
    which gives them :attr:`display_name`, :attr:`homepage` and :attr:`layout`; they set :attr:`key`
    (``meta["dataset"]`` and the cache folder name) and :attr:`splits`, and implement
    :meth:`_list_samples` and :meth:`_read_points`.

    Args:
        root: folder the official archive was unpacked into.
        split: one of :attr:`splits`.
        transform: callable ``(image, points, meta) -> sample`` (e.g.
            :func:`gigacount_lib.data.transforms.train_transforms`); its result is returned as is
            (a list of crops is fine).
        min_size, max_size: the resize rule of :func:`target_size` (``None``: no limit).
        preprocess: write the resized images and cleaned points once to a cache folder
            (``cache_root`` or ``cache_dir()/preprocessed``) and read from there.
    """

    display_name: ClassVar[str] = "crowd dataset"
    key: ClassVar[str] = "crowd"
    homepage: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init_subclass__(cls, dataset: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if dataset is not None:
            info = DATASETS[dataset]
            cls.display_name, cls.homepage, cls.layout = info.display_name, info.homepage, info.layout

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None, *,
                 min_size: int | None = None, max_size: int | None = None, preprocess: bool = False,
                 cache_root: str | Path | None = None) -> None:
        if root is None:
            raise self._not_found(None, "no data root was given")
        self.root = Path(root).expanduser()
        split = str(split).lower()
        if split not in self.splits:
            raise ValueError(f"{self.display_name}: unknown split {split!r}; choose one of {list(self.splits)}")
        self.split = split
        self.transform = transform
        for name, value in (("min_size", min_size), ("max_size", max_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                                      or not float(value).is_integer() or value <= 0):
                raise ValueError(f"{self.display_name}: {name} must be a positive whole number of pixels or None, "
                                 f"got {value!r}")
        min_size = None if min_size is None else int(min_size)
        max_size = None if max_size is None else int(max_size)
        target_size((1, 1), min_size, max_size)  # validates min_size <= max_size
        self.min_size, self.max_size = min_size, max_size
        if not self.root.is_dir():
            raise self._not_found(self.root, "the folder does not exist")
        self.records: list[SampleRecord] = self._list_samples()
        if not self.records:
            if (self.root / "synthetic.json").is_file():
                raise DatasetNotFoundError(f"{self.root}: this synthetic dataset has no {split} images (see its "
                                           "synthetic.json); generate one with at least one image per split, e.g. "
                                           "`gigacount synth --out DIR --n-train 300 --n-test 100`")
            raise self._not_found(self.root, f"no images found for split {split!r}")
        self._reported: set[str] = set()
        self._cache: Path | None = None
        self._cache_index: dict[str, dict[str, Any]] = {}
        if preprocess:
            self.build_cache(cache_root)

    # -- to implement -------------------------------------------------------------------------------
    def _list_samples(self) -> list[SampleRecord]:
        raise NotImplementedError

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        raise NotImplementedError

    # -- errors -------------------------------------------------------------------------------------
    @classmethod
    def _not_found(cls, root: Path | None, problem: str) -> DatasetNotFoundError:
        where = f" at {root}" if root is not None else ""
        fetch = (" It can also be fetched and verified with `gigacount download qnrf --root DIR`."
                 if cls.key == "qnrf" else "")
        return DatasetNotFoundError(
            f"{cls.display_name} not found{where}: {problem}.\n"
            f"Expected layout under the root folder:\n{cls.layout}\n"
            f"Get the dataset from its official page, {cls.homepage} (registration may be required; "
            f"nothing is downloaded automatically), unpack it and pass the folder as root.{fetch} "
            "To work offline, use the embedded synthetic dataset: build_dataset('synthetic', None)."
        )

    # -- size ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"min_size={self.min_size}, max_size={self.max_size}, cached={self._cache is not None})")

    # -- annotation path ----------------------------------------------------------------------------
    def _raw_points(self, record: SampleRecord) -> np.ndarray:
        if record.ann_path is None:
            return np.zeros((0, 2), dtype=np.float64)
        return self._read_points(record)

    def _clean(self, record: SampleRecord, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        kept, n_nan, n_out = clean_points(points, size)
        if (n_nan or n_out) and record.name not in self._reported:
            self._reported.add(record.name)
            if n_nan:
                _log.warning("%s: dropped %d annotation(s) with NaN/inf coordinates", record.ann_path, n_nan)
            if n_out:
                _log.info("%s: dropped %d of %d point(s) outside the %dx%d image", record.ann_path,
                          n_out, len(points), size[1], size[0])
        return kept

    def _scaled_points(self, record: SampleRecord, orig: tuple[int, int]
                       ) -> tuple[np.ndarray, tuple[int, int], int]:
        """The one place where annotations are prepared (needs the image size, not its pixels).

        Returns ``(points float32 (M, 2), size (H', W') of the preprocessed image, N raw points)``:
        the points are cleaned against the original image (what "outside" means for the annotation),
        rescaled to the size of :func:`target_size` and cleaned again at that size.
        """
        size = target_size(orig, self.min_size, self.max_size)
        raw = self._raw_points(record)
        kept = self._clean(record, raw, orig)
        if size != orig:
            kept, _, _ = clean_points(scale_points(kept, orig, size), size)
        return kept, size, len(raw)

    def _meta(self, record: SampleRecord, orig: tuple[int, int], size: tuple[int, int], count: int) -> dict:
        return {"name": record.name, "path": str(record.image_path), "orig_size": orig, "size": size,
                "count": int(count), "labelled": record.ann_path is not None, "dataset": self.key,
                "split": self.split}

    def iter_annotations(self) -> Iterator[tuple[str, Tensor, tuple[int, int]]]:
        """Yield ``(name, points (N, 2) float32, (H, W))`` per image, as ``ds[i]`` would return them
        before the transform (after resizing/cleaning), reading only image headers and annotations."""
        for record in self.records:
            if self._cache is not None:
                _, pts, _, size = self._read_cached(record, with_image=False)
                yield record.name, torch.from_numpy(pts), size
                continue
            pts, size, _ = self._scaled_points(record, read_image_size(record.image_path))
            yield record.name, torch.from_numpy(pts), size

    # -- full sample --------------------------------------------------------------------------------
    def load_sample(self, index: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """``(image, points, meta)`` before the transform."""
        record = self.records[index]
        if self._cache is not None:
            img, pts, orig, size = self._read_cached(record)
        else:
            img = load_rgb_image(record.image_path)
            orig = (img.height, img.width)
            pts, size, _ = self._scaled_points(record, orig)
            img = resize_image(img, size)
        image = image_to_tensor(img)
        points = torch.from_numpy(np.asarray(pts, dtype=np.float32).reshape(-1, 2))
        return image, points, self._meta(record, orig, size, points.shape[0])

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image, points, meta = self.load_sample(index % len(self))
        if self.transform is not None:
            return self.transform(image, points, meta)
        return image, points, meta

    # -- cache --------------------------------------------------------------------------------------
    def _cache_key(self) -> str:
        ident = json.dumps([CACHE_VERSION, type(self).__name__, str(self.root.resolve()), self.split,
                            self.min_size, self.max_size, getattr(self, "part", None)])
        return hashlib.sha256(ident.encode()).hexdigest()[:12]

    def build_cache(self, cache_root: str | Path | None = None, *, progress: bool = True) -> Path:
        """Preprocess every sample once into ``cache_root/<dataset>_<split>_<key>/`` and use it.

        The folder holds ``images/<name>.jpg`` (the original file copied when no resize or mode
        change is needed, else re-encoded as JPEG quality 95), ``points/<name>.npy`` and an
        ``index.json``. It is built in a temporary folder beside it and renamed into place when
        complete; a damaged or outdated cache is rebuilt (and then only the files it consists of are
        deleted), and so is a damaged entry found when reading. Returns the folder.

        The folder name hashes the root, split, ``min_size``/``max_size`` (and ShanghaiTech part),
        not the files' contents: after editing images or annotations in place, delete the folder.
        """
        from tqdm.auto import tqdm

        base = Path(cache_root) if cache_root is not None else cache_dir() / "preprocessed"
        folder = base / f"{self.key}_{self.split}_{self._cache_key()}"
        samples = self._read_cache_index(folder)
        if samples is not None:
            self._cache, self._cache_index = folder, samples
            return folder
        ensure_dir(base, "preprocessing cache folder (cache_root)")
        clean_stale_temp_dirs(folder, _is_cache_file)
        tmp = make_temp_dir(folder)
        try:
            (tmp / "images").mkdir()
            (tmp / "points").mkdir()
            samples = {}
            dropped = 0
            for record in tqdm(self.records, desc=f"preprocess {self.key}/{self.split}", disable=not progress):
                samples[record.name] = self._write_cache_entry(tmp, record)
                dropped += samples[record.name]["raw_count"] - samples[record.name]["count"]
            self._write_cache_index(tmp, samples)
            replace_dir(tmp, folder, _is_cache_file)
        except BaseException:
            if tmp.exists():
                remove_owned(tmp, _is_cache_file)
            raise
        _log.info("preprocessed %d %s/%s images into %s (%d point(s) dropped in total)",
                  len(samples), self.key, self.split, folder, dropped)
        self._cache, self._cache_index = folder, samples
        return folder

    def _write_cache_entry(self, folder: Path, record: SampleRecord) -> dict[str, Any]:
        # every image is decoded once here, so that a corrupt or truncated file fails now, named,
        # rather than later from its copy in the cache
        img, stored_mode = decode_image(record.image_path)
        orig = (img.height, img.width)
        pts, size, n_raw = self._scaled_points(record, orig)
        file = f"{record.name}.jpg"
        if size == orig and stored_mode == "RGB" and record.image_path.suffix.lower() in (".jpg", ".jpeg"):
            data = record.image_path.read_bytes()  # unchanged: keep the original bytes
        else:
            buf = io.BytesIO()
            resize_image(img, size).save(buf, format="JPEG", quality=95)
            data = buf.getvalue()
        atomic_write_bytes(folder / "images" / file, data)
        buf = io.BytesIO()
        np.save(buf, pts)
        atomic_write_bytes(folder / "points" / f"{record.name}.npy", buf.getvalue())
        return {"file": file, "orig_size": list(orig), "size": list(size), "count": int(len(pts)),
                "raw_count": int(n_raw), "labelled": record.ann_path is not None}

    def _write_cache_index(self, folder: Path, samples: dict[str, dict[str, Any]]) -> None:
        atomic_write_json(folder / "index.json", {"version": CACHE_VERSION, "dataset": self.key, "split": self.split,
                                                  "root": str(self.root), "min_size": self.min_size,
                                                  "max_size": self.max_size, "samples": samples})

    def _read_cache_index(self, folder: Path) -> dict[str, dict[str, Any]] | None:
        """The samples of the cache in ``folder``, or None when it is absent, outdated or damaged."""
        path = folder / "index.json"
        if not path.is_file():
            return None
        try:
            index = read_json(path, "preprocessing cache index")
            samples = index["samples"]
            valid = index["version"] == CACHE_VERSION and set(samples) == set(self.names) and all(
                isinstance(e["file"], str) and len(e["orig_size"]) == 2 and len(e["size"]) == 2
                for e in samples.values())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("%s: damaged preprocessing cache index (%s); rebuilding the cache", path, exc)
            return None
        return samples if valid else None

    def _read_cached(self, record: SampleRecord, with_image: bool = True, retry: bool = True):
        """``(image or None, points float32 (N, 2), orig_size, size)`` from the cache; a damaged entry is
        rebuilt from the original files (once)."""
        assert self._cache is not None
        entry = self._cache_index[record.name]
        try:
            pts = np.load(self._cache / "points" / f"{record.name}.npy", allow_pickle=False)
            if pts.dtype != np.float32 or pts.ndim != 2 or pts.shape[1] != 2:
                raise ValueError(f"points of shape {pts.shape} and dtype {pts.dtype}")
            img = load_rgb_image(self._cache / "images" / entry["file"]) if with_image else None
        except (OSError, ValueError, EOFError) as exc:
            if not retry:
                raise
            _log.warning("%s: damaged cache entry of %s (%s); rebuilding it from %s", self._cache, record.name,
                         exc, record.image_path)
            self._cache_index[record.name] = self._write_cache_entry(self._cache, record)
            self._write_cache_index(self._cache, self._cache_index)
            return self._read_cached(record, with_image, retry=False)
        return img, pts, tuple(entry["orig_size"]), tuple(entry["size"])


_CACHE_FILE = re.compile(r"^(?:images|points|index\.json|images/[^/]+\.jpg|points/[^/]+\.npy"
                         r"|(?:images/|points/)?\.[^/]+\.[0-9a-f]{12}\.tmp)$")


def _is_cache_file(rel: str) -> bool:
    """A path (relative to a cache folder) of the kind :meth:`CrowdDataset.build_cache` writes."""
    return _CACHE_FILE.match(rel) is not None
