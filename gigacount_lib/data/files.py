"""Reading the files of crowd datasets: images and the annotation formats of the benchmarks.

Images are converted to 8-bit RGB: grayscale (``L``, ``1``), ``LA``, palette (``P``), ``RGBA`` (alpha
is discarded), ``CMYK`` and 16-bit/32-bit grayscale (``I;16``, ``I``, ``F``; rescaled to 8 bits, not
clipped). EXIF orientation is deliberately *not* applied: the annotations refer to the stored pixels.
Annotations are returned as float64 ``(N, 2)`` arrays of ``(x, y)``, as stored: no 0/1-based
(MATLAB) shift is applied.

Bad input raises an error that names the file: ``FileNotFoundError``, :class:`CorruptImageError`
(an image that cannot be decoded, e.g. truncated; :class:`ImageTooLargeError` for a header beyond
Pillow's decompression-bomb limit) or :class:`AnnotationError` (an annotation that cannot be read,
without the expected key or of the wrong shape); :class:`DatasetNotFoundError` is raised by the readers.
"""
from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils import get_logger

__all__ = ["DatasetNotFoundError", "CorruptImageError", "ImageTooLargeError", "AnnotationError", "read_image_size",
           "decode_image", "load_rgb_image", "load_mat", "as_point_array", "read_mat_points", "read_shanghaitech_mat",
           "read_jhu_txt", "read_nwpu_json", "read_text_lines"]

_log = get_logger("data.datasets")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root is missing, empty, or not in the expected layout."""


class CorruptImageError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated or not an image)."""


class ImageTooLargeError(CorruptImageError):
    """An image whose header announces more pixels than Pillow's decompression-bomb limit allows."""


class AnnotationError(ValueError):
    """An annotation file that cannot be read or lacks the expected content."""


# Pillow raises these (besides OSError/ValueError) on damaged headers or data
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
                  struct.error)


def _too_large(path: Path, err: Exception) -> ImageTooLargeError:
    return ImageTooLargeError(f"{path}: the image header announces more pixels than Pillow decodes by default "
                              f"({err}); a corrupt or malicious file is likely. If the image is genuine, raise "
                              "PIL.Image.MAX_IMAGE_PIXELS before reading it; otherwise re-download or remove it")


@contextlib.contextmanager
def _open_image(path: Path, action: str, cause: str) -> Iterator[Image.Image]:
    """``Image.open(path)`` whose errors (also those raised in the ``with`` body) name the file;
    a corrupt file's message says which ``action`` failed and its likely ``cause``."""
    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except Image.DecompressionBombError as err:
        raise _too_large(path, err) from err
    except _DECODE_ERRORS as err:
        raise CorruptImageError(f"{path}: {action} ({err}); {cause} -- re-download or re-extract it") from err


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` from the image header only (PIL opens lazily; no pixel is decoded)."""
    path = Path(path)
    with _open_image(path, "cannot read the image header", "the file is corrupt or not an image") as img:
        width, height = img.size
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


def decode_image(path: Path) -> tuple[Image.Image, str]:
    """Decode an image fully: ``(8-bit RGB image, PIL mode stored in the file)``."""
    with _open_image(path, "cannot decode the image", "the file is corrupt or truncated") as img:
        img.load()  # force decoding now so that truncated files fail here, with the file name
        # leaving the block only closes the file; the decoded pixels stay with ``img``
        return _to_rgb(img, path), img.mode


def load_rgb_image(path: str | Path) -> Image.Image:
    """Decode an image fully and return it as 8-bit RGB (see the module notes on modes).

    Raises ``FileNotFoundError`` or :class:`CorruptImageError` naming the file.
    """
    return decode_image(Path(path))[0]



def load_mat(path: Path) -> dict[str, Any]:
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


def as_point_array(value: Any, path: Path, what: str, *, columns: str = "exact") -> np.ndarray:
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
    mat = load_mat(path)
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise AnnotationError(f"{path}: no key {key!r} in the .mat file (found {found})")
    return as_point_array(mat[key], path, f"{key!r}")


def read_shanghaitech_mat(path: Path) -> np.ndarray:
    mat = load_mat(path)
    if "image_info" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise AnnotationError(f"{path}: no key 'image_info' in the .mat file (found {found})")
    try:
        location = mat["image_info"][0, 0][0, 0][0]
    except (IndexError, TypeError, ValueError, KeyError) as err:
        raise AnnotationError(f"{path}: 'image_info' does not have the ShanghaiTech structure "
                              f"image_info[0, 0][0, 0][0] = (N, 2) points ({err})") from err
    return as_point_array(location, path, "image_info[0,0][0,0][0]")


def read_text_lines(path: str | Path, what: str = "text file") -> list[str]:
    """The lines of a UTF-8 text file (a BOM is ignored); a file in another encoding raises
    :class:`AnnotationError` naming it and the first bad byte."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: {what} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                              "re-extract it from the official archive, or re-save it as UTF-8") from err
    return text.splitlines()


def read_jhu_txt(path: Path) -> np.ndarray:
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


def read_nwpu_json(path: Path) -> np.ndarray:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise AnnotationError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(data, dict) or "points" not in data:
        found = sorted(data) if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise AnnotationError(f"{path}: no key 'points' in the JSON file (found {found})")
    return as_point_array(data["points"], path, "'points'", columns="first")


