"""Readers for the crowd-counting benchmarks, exactly as their owners ship them.

Every reader is a :class:`CrowdDataset`: ``ds[i] -> (image, points, meta)`` with ``image`` a float32
``(3, H, W)`` tensor in ``[0, 1]``, ``points`` a float32 ``(N, 2)`` tensor of head positions
``(x, y)`` in pixels (continuous coordinates, ``0 <= x <= W``), and ``meta`` a dict with ``name``,
``path``, ``orig_size`` (``(H, W)`` of the file on disk), ``size`` (``(H, W)`` of the returned
image), ``count`` (number of returned points), ``labelled`` and ``dataset``/``split``.

Official layouts (``root`` is the folder you unpacked the download into):

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

The embedded synthetic dataset is written in the UCF-QNRF layout, so ``QNRFDataset`` reads it
(``build_dataset("synthetic", None)`` generates it on first use).

Preprocessing (``min_size`` / ``max_size``): each image is resized, aspect ratio kept, so that its
longer side is at most ``max_size`` and its shorter side at least ``min_size`` (``max_size`` wins
when both cannot hold), points are rescaled with the image, points outside the image or with
NaN/inf coordinates are dropped (logged with their number). ``preprocess=True`` writes the result
once to a cache folder (progress bar) and reads from it afterwards; otherwise it is done on the fly.

Coordinates are used as stored in the annotation files: no 0/1-based (MATLAB) shift is applied.
Such a shift moves a head by one pixel: it can change the block of a head next to a block border,
and the image count only for a head within a pixel of the image border.

Images are converted to RGB: grayscale (``L``, ``1``), ``LA``, palette (``P``), ``RGBA`` (alpha is
discarded), ``CMYK`` and 16-bit/32-bit grayscale (``I;16``, ``I``, ``F``; rescaled to 8 bits, not
clipped). EXIF orientation is deliberately *not* applied: the annotations refer to the stored pixels.

Bad input raises an error that names the file: :class:`DatasetNotFoundError` (empty or wrong root,
with where to download the dataset), ``FileNotFoundError`` (a missing annotation file),
:class:`CorruptImageError` (an image that cannot be decoded, e.g. truncated) and
:class:`AnnotationError` (an annotation without the expected key or of the wrong shape).
Images with no people are fine: their points are a ``(0, 2)`` tensor.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from ..utils import atomic_write_bytes, atomic_write_json, cache_dir, get_logger

__all__ = [
    "DatasetNotFoundError", "CorruptImageError", "AnnotationError", "SampleRecord", "CrowdDataset",
    "QNRFDataset", "SyntheticDataset", "ShanghaiTechDataset", "NWPUDataset", "JHUDataset", "build_dataset",
    "DATASET_NAMES", "target_size", "load_rgb_image", "read_image_size", "clean_points",
    "resize_sample", "read_mat_points",
]

_log = get_logger("data.datasets")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
class DatasetNotFoundError(FileNotFoundError):
    """The dataset root is missing, empty, or not in the expected layout."""


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated or not an image)."""


class AnnotationError(ValueError):
    """An annotation file that cannot be read or lacks the expected content."""


# --------------------------------------------------------------------------------------------------
# Image and annotation I/O
# --------------------------------------------------------------------------------------------------
def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` from the image header only (PIL opens lazily; no pixel is decoded)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise CorruptImageError(f"{path}: cannot read the image header ({err}); the file is corrupt "
                                "or not an image -- re-download or re-extract it") from err
    return int(height), int(width)


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; high-bit-depth grayscale is rescaled, not clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255
        elif mode == "I":
            arr = arr / 257.0 if arr.size and arr.max() > 255 else arr
        else:  # "F": [0, 1] floats or 0..255 values
            arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
        arr = np.nan_to_num(arr, nan=0.0).clip(0, 255).round().astype(np.uint8)
        _log.debug("%s: converted %s image to RGB (rescaled to 8 bits)", path, mode)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    _log.debug("%s: converted %s image to RGB", path, mode)
    return img.convert("RGB")


def _decode(path: Path) -> tuple[Image.Image, str]:
    """Decode an image fully: ``(8-bit RGB image, PIL mode stored in the file)``."""
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now so that truncated files fail here, with the file name
            # leaving the block only closes the file; the decoded pixels stay with ``img``
            return _to_rgb(img, path), img.mode
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise CorruptImageError(f"{path}: cannot decode the image ({err}); the file is corrupt or "
                                "truncated -- re-download or re-extract it") from err


def load_rgb_image(path: str | Path) -> Image.Image:
    """Decode an image fully and return it as 8-bit RGB (see the module notes on modes).

    Raises ``FileNotFoundError`` or :class:`CorruptImageError` naming the file.
    """
    return _decode(Path(path))[0]


def _image_to_tensor(img: Image.Image) -> Tensor:
    """8-bit RGB PIL image -> contiguous float32 ``(3, H, W)`` in ``[0, 1]``.

    PIL stores pixels as ``(H, W, 3)``; the float conversion writes them channel-first in the
    same pass (without ``memory_format`` the result would keep ``(H, W, 3)`` strides, and e.g.
    ``image.view(3, -1)`` would fail).
    """
    arr = np.array(img, dtype=np.uint8)  # one writable copy of the pixels
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    return chw.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _load_mat(path: Path) -> dict[str, Any]:
    import scipy.io

    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise AnnotationError(f"{path}: MATLAB v7.3 (HDF5) files are not supported ({err}); re-save it "
                              "with `save(..., '-v7')`") from err
    except Exception as err:  # scipy raises ValueError/TypeError/MatReadError for broken files
        raise AnnotationError(f"{path}: cannot read the .mat file ({type(err).__name__}: {err}); "
                              "the file is corrupt or truncated") from err


def _as_point_array(value: Any, path: Path, what: str, *, columns: str = "exact") -> np.ndarray:
    """``(N, 2)`` float64 from an annotation array; ``columns="exact"`` requires exactly two columns
    (MATLAB files), ``"first"`` keeps the first two of more (JSON/text rows with extra fields)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise AnnotationError(f"{path}: {what} is not numeric ({err})") from err
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    ok = arr.ndim == 2 and (arr.shape[1] == 2 if columns == "exact" else arr.shape[1] >= 2)
    if not ok:
        raise AnnotationError(f"{path}: {what} must be an (N, 2) array of (x, y), got shape {arr.shape}")
    return arr[:, :2]


def read_mat_points(path: str | Path, key: str = "annPoints") -> np.ndarray:
    """Points ``(N, 2)`` (float64, raw) stored under ``key`` in a MATLAB file (UCF-QNRF, NWPU)."""
    path = Path(path)
    mat = _load_mat(path)
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise AnnotationError(f"{path}: no key {key!r} in the .mat file (found {found})")
    return _as_point_array(mat[key], path, f"{key!r}")


def _read_shanghaitech_mat(path: Path) -> np.ndarray:
    mat = _load_mat(path)
    if "image_info" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise AnnotationError(f"{path}: no key 'image_info' in the .mat file (found {found})")
    try:
        location = mat["image_info"][0, 0][0, 0][0]
    except (IndexError, TypeError, ValueError, KeyError) as err:
        raise AnnotationError(f"{path}: 'image_info' does not have the ShanghaiTech structure "
                              f"image_info[0, 0][0, 0][0] = (N, 2) points ({err})") from err
    return _as_point_array(location, path, "image_info[0,0][0,0][0]")


def _read_jhu_txt(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            rows.append((float(fields[0]), float(fields[1])))
        except (ValueError, IndexError):
            raise AnnotationError(f"{path}:{lineno}: expected 'x y w h o b', got {line.strip()!r}") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def _read_nwpu_json(path: Path) -> np.ndarray:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AnnotationError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(data, dict) or "points" not in data:
        found = sorted(data) if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise AnnotationError(f"{path}: no key 'points' in the JSON file (found {found})")
    return _as_point_array(data["points"], path, "'points'", columns="first")


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------
def target_size(size: tuple[int, int], min_size: int | None = None,
                max_size: int | None = None) -> tuple[int, int]:
    """Size ``(H', W')`` after the resize rule: shorter side >= ``min_size``, longer <= ``max_size``.

    The scale is ``s = max(1, min_size / min(H, W))``, then ``s = min(s, max_size / max(H, W))``
    (so ``max_size`` wins when an extreme aspect ratio makes both impossible); ``H' = round(s H)``.
    Without limits the size is unchanged.
    """
    height, width = int(size[0]), int(size[1])
    if min_size is not None and max_size is not None and min_size > max_size:
        raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
    scale = 1.0
    if min_size is not None and min(height, width) < min_size:
        scale = min_size / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    if scale == 1.0:
        return height, width
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if max_size is not None:
        new_h, new_w = min(new_h, max_size), min(new_w, max_size)
    return new_h, new_w


def clean_points(points: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """Drop non-finite points and points outside ``[0, W] x [0, H]``; pull border points inside.

    Returns ``(points float32 (M, 2), n_nonfinite, n_outside)``. Points exactly on the right/bottom
    border are moved to just inside (``x = W - 1e-3``) so that half-open checks downstream
    (``SanitizeKeyPoints`` keeps ``0 <= x < W``) agree with this one.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    height, width = size
    finite = np.isfinite(pts).all(axis=1)
    inside = finite.copy()
    inside[finite] = ((pts[finite, 0] >= 0) & (pts[finite, 0] <= width)
                      & (pts[finite, 1] >= 0) & (pts[finite, 1] <= height))
    n_nonfinite, n_outside = int((~finite).sum()), int((finite & ~inside).sum())
    kept = pts[inside]
    kept[:, 0] = np.minimum(kept[:, 0], width - 1e-3)
    kept[:, 1] = np.minimum(kept[:, 1], height - 1e-3)
    return kept.astype(np.float32), n_nonfinite, n_outside


def _scale_points(points: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """``(x, y) -> (x W'/W, y H'/H)`` in float64 for ``size = (H, W)`` and ``new_size = (H', W')``
    (continuous coordinates: a point on the border stays on the border)."""
    factors = np.array([new_size[1] / size[1], new_size[0] / size[0]])
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) * factors


def _resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize a PIL image to ``size = (H', W')`` (bicubic; PIL filters over the whole footprint
    when shrinking, i.e. antialiased). Returns the image itself when the size already matches."""
    if (image.height, image.width) == tuple(size):
        return image
    return image.resize((size[1], size[0]), Image.Resampling.BICUBIC)


def resize_sample(image: Image.Image, points: np.ndarray, size: tuple[int, int]
                  ) -> tuple[Image.Image, np.ndarray]:
    """Resize a PIL image to ``size = (H', W')`` (bicubic, antialiased) and scale the points by
    ``(W'/W, H'/H)``; returns the image and float64 ``(N, 2)`` points."""
    return _resize_image(image, size), _scale_points(points, (image.height, image.width), size)


# --------------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleRecord:
    """One image of a split: its name (file stem), image path and annotation path (None: unlabelled)."""

    name: str
    image_path: Path
    ann_path: Path | None


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _paired_records(image_folder: Path, annotation_for) -> list[SampleRecord]:
    """Records for every image in ``image_folder``, each paired with ``annotation_for(image)``.

    A missing annotation file is an error naming both files.
    """
    records = []
    for image in _list_images(image_folder):
        ann = annotation_for(image)
        if not ann.is_file():
            raise FileNotFoundError(f"annotation file not found: {ann} (for image {image})")
        records.append(SampleRecord(image.stem, image, ann))
    return records


class CrowdDataset(Dataset):
    """Base class of the readers: listing, loading, preprocessing, caching and transforms.

    Subclasses set :attr:`display_name`, :attr:`key` (``meta["dataset"]`` and the cache folder name),
    :attr:`homepage`, :attr:`layout`, :attr:`splits` and
    implement :meth:`_list_samples` and :meth:`_read_points`.

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
        if min_size is not None and min_size <= 0 or max_size is not None and max_size <= 0:
            raise ValueError(f"min_size and max_size must be positive, got {min_size}, {max_size}")
        target_size((1, 1), min_size, max_size)  # validates min_size <= max_size
        self.min_size, self.max_size = min_size, max_size
        if not self.root.is_dir():
            raise self._not_found(self.root, "the folder does not exist")
        self.records: list[SampleRecord] = self._list_samples()
        if not self.records:
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
            kept, _, _ = clean_points(_scale_points(kept, orig, size), size)
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
                entry = self._cache_index[record.name]
                pts = np.load(self._cache / "points" / f"{record.name}.npy")
                yield record.name, torch.from_numpy(pts), tuple(entry["size"])
                continue
            pts, size, _ = self._scaled_points(record, read_image_size(record.image_path))
            yield record.name, torch.from_numpy(pts), size

    # -- full sample --------------------------------------------------------------------------------
    def load_sample(self, index: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """``(image, points, meta)`` before the transform."""
        record = self.records[index]
        if self._cache is not None:
            entry = self._cache_index[record.name]
            img = load_rgb_image(self._cache / "images" / entry["file"])
            pts = np.load(self._cache / "points" / f"{record.name}.npy")
            orig, size = tuple(entry["orig_size"]), tuple(entry["size"])
        else:
            img = load_rgb_image(record.image_path)
            orig = (img.height, img.width)
            pts, size, _ = self._scaled_points(record, orig)
            img = _resize_image(img, size)
        image = _image_to_tensor(img)
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
        ``index.json`` written last (a cache without it is rebuilt). Returns the folder.

        The folder name hashes the root, split, ``min_size``/``max_size`` (and ShanghaiTech part),
        not the files' contents: after editing images or annotations in place, delete the folder.
        """
        from tqdm.auto import tqdm

        base = Path(cache_root) if cache_root is not None else cache_dir() / "preprocessed"
        folder = base / f"{self.key}_{self.split}_{self._cache_key()}"
        index_path = folder / "index.json"
        if index_path.is_file():
            index = json.loads(index_path.read_text())
            if index.get("version") == CACHE_VERSION and set(index["samples"]) == set(self.names):
                self._cache, self._cache_index = folder, index["samples"]
                return folder
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "images").mkdir(parents=True)
        (folder / "points").mkdir()
        samples: dict[str, dict[str, Any]] = {}
        dropped = 0
        for record in tqdm(self.records, desc=f"preprocess {self.key}/{self.split}", disable=not progress):
            # every image is decoded once here, so that a corrupt or truncated file fails now, named,
            # rather than later from its copy in the cache
            img, stored_mode = _decode(record.image_path)
            orig = (img.height, img.width)
            pts, size, n_raw = self._scaled_points(record, orig)
            dropped += n_raw - len(pts)
            file = f"{record.name}.jpg"
            if size == orig and stored_mode == "RGB" and record.image_path.suffix.lower() in (".jpg", ".jpeg"):
                shutil.copyfile(record.image_path, folder / "images" / file)  # unchanged: keep the original bytes
            else:
                img = _resize_image(img, size)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=95)
                atomic_write_bytes(folder / "images" / file, buf.getvalue())
            np.save(folder / "points" / f"{record.name}.npy", pts)
            samples[record.name] = {"file": file, "orig_size": list(orig), "size": list(size),
                                    "count": int(len(pts)), "raw_count": int(n_raw),
                                    "labelled": record.ann_path is not None}
        atomic_write_json(index_path, {"version": CACHE_VERSION, "dataset": self.key, "split": self.split,
                                       "root": str(self.root), "min_size": self.min_size,
                                       "max_size": self.max_size, "samples": samples})
        _log.info("preprocessed %d %s/%s images into %s (%d point(s) dropped in total)",
                  len(samples), self.key, self.split, folder, dropped)
        self._cache, self._cache_index = folder, samples
        return folder


# --------------------------------------------------------------------------------------------------
# Concrete readers
# --------------------------------------------------------------------------------------------------
class QNRFDataset(CrowdDataset):
    """UCF-QNRF (Idrees et al., ECCV 2018): ``Train|Test/img_XXXX.jpg`` + ``img_XXXX_ann.mat``
    (``annPoints``). Also reads the embedded synthetic dataset, which uses this layout."""

    display_name = "UCF-QNRF"
    key = "qnrf"
    homepage = "https://www.crcv.ucf.edu/data/ucf-qnrf/"
    layout = ("  Train/img_0001.jpg, Train/img_0001_ann.mat (key 'annPoints', (N, 2) x, y)\n"
              "  Test/img_0001.jpg,  Test/img_0001_ann.mat")
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
        return _paired_records(folder, lambda image: folder / f"{image.stem}_ann.mat")

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        return read_mat_points(record.ann_path, "annPoints")


class SyntheticDataset(QNRFDataset):
    """The embedded synthetic crowd dataset: UCF-QNRF layout, read by :class:`QNRFDataset`; only
    its name differs (``meta["dataset"] == "synthetic"``)."""

    display_name = "synthetic crowd dataset (UCF-QNRF layout)"
    key = "synthetic"
    homepage = "gigacount_lib.data.synthetic (generated locally: `gigacount synth --out DIR`)"


class ShanghaiTechDataset(CrowdDataset):
    """ShanghaiTech part A or B (Zhang et al., CVPR 2016, the MCNN paper):
    ``part_X/{train,test}_data/images/IMG_N.jpg`` + ``ground-truth/GT_IMG_N.mat``
    (points in ``image_info[0, 0][0, 0][0]``)."""

    display_name = "ShanghaiTech"
    key = "sht"
    homepage = "https://github.com/desenzhou/ShanghaiTechDataset"
    layout = ("  part_A/train_data/images/IMG_1.jpg, part_A/train_data/ground-truth/GT_IMG_1.mat\n"
              "  part_A/test_data/...; part_B/... likewise")
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
        return _paired_records(folder / "images", lambda image: folder / "ground-truth" / f"GT_{image.stem}.mat")

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        return _read_shanghaitech_mat(record.ann_path)


class NWPUDataset(CrowdDataset):
    """NWPU-Crowd (Wang et al., TPAMI 2020): ``images/NNNN.jpg`` (or ``images_part*/``),
    ``mats/NNNN.mat`` (``annPoints``) and ``train.txt``/``val.txt``/``test.txt``.

    The test split has **no public labels**: its samples are unlabelled (no points,
    ``meta["labelled"] = False``); predict on them and submit the counts to the benchmark server.
    """

    display_name = "NWPU-Crowd"
    key = "nwpu"
    homepage = "https://www.crowdbenchmark.com/nwpucrowd.html"
    layout = ("  images/0001.jpg (or images_part1/ .. images_part5/), mats/0001.mat (key 'annPoints'),\n"
              "  train.txt, val.txt, test.txt (one image id per line, first field)")
    splits = ("train", "val", "test")

    def _list_samples(self) -> list[SampleRecord]:
        list_file = self.root / f"{self.split}.txt"
        if not list_file.is_file():
            raise self._not_found(self.root, f"no {list_file.name}")
        ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        image_dirs = [self.root / "images"] + sorted(self.root.glob("images_part*"))
        index: dict[str, Path] = {}
        for folder in image_dirs:
            for image in _list_images(folder):
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
            return _read_nwpu_json(record.ann_path)
        return read_mat_points(record.ann_path, "annPoints")


class JHUDataset(CrowdDataset):
    """JHU-Crowd++ (Sindagi et al., TPAMI 2020): ``{train,val,test}/images/NNNN.jpg`` and
    ``gt/NNNN.txt`` with one head per line, ``x y w h o b``; only ``x y`` are used."""

    display_name = "JHU-Crowd++"
    key = "jhu"
    homepage = "http://www.crowd-counting.com/"
    layout = "  train/images/0001.jpg, train/gt/0001.txt ('x y w h o b' per head); val/, test/ likewise"
    splits = ("train", "val", "test")

    def _list_samples(self) -> list[SampleRecord]:
        folder = self.root / self.split
        if not (folder / "images").is_dir():
            raise self._not_found(self.root, f"no {self.split}/images folder")
        return _paired_records(folder / "images", lambda image: folder / "gt" / f"{image.stem}.txt")

    def _read_points(self, record: SampleRecord) -> np.ndarray:
        return _read_jhu_txt(record.ann_path)


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------
DATASET_NAMES: tuple[str, ...] = ("qnrf", "sha", "shb", "nwpu", "jhu", "synthetic")


def build_dataset(name: str, root: str | Path | None, split: str = "train", **kwargs: Any) -> CrowdDataset:
    """Build a reader by name: ``"qnrf"``, ``"sha"``, ``"shb"``, ``"nwpu"``, ``"jhu"`` or ``"synthetic"``.

    ``"synthetic"`` is the embedded dataset in UCF-QNRF layout: with ``root=None`` it is generated
    (once, cached) by :func:`gigacount_lib.data.synthetic.resolve_data_root`, which takes the extra
    keyword arguments ``quick`` and ``seed``. Other keyword arguments go to the reader
    (``transform``, ``min_size``, ``max_size``, ``preprocess``, ``cache_root``).
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    aliases = {"ucfqnrf": "qnrf", "shanghaitecha": "sha", "shanghaitechb": "shb", "parta": "sha",
               "partb": "shb", "nwpucrowd": "nwpu", "jhucrowd": "jhu", "jhucrowd++": "jhu", "synth": "synthetic"}
    key = aliases.get(key, key)
    if key == "synthetic":
        from .synthetic import resolve_data_root

        synth_kw = {k: kwargs.pop(k) for k in ("quick", "seed") if k in kwargs}
        return SyntheticDataset(resolve_data_root(root, **synth_kw), split, **kwargs)
    if key == "qnrf":
        return QNRFDataset(root, split, **kwargs)
    if key in ("sha", "shb"):
        return ShanghaiTechDataset(root, part=key[-1].upper(), split=split, **kwargs)
    if key == "nwpu":
        return NWPUDataset(root, split, **kwargs)
    if key == "jhu":
        return JHUDataset(root, split, **kwargs)
    raise ValueError(f"build_dataset: unknown dataset {name!r}; choose one of {list(DATASET_NAMES)}")
