"""Small shared helpers: logging, seeding, device selection, run manifests, atomic writes.

Everything here is used by several subjects (data, models, training), so it lives in one place.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import random
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

LOGGER_NAME = "gigacount"


def get_logger(name: str | None = None) -> logging.Logger:
    """Return a logger under the ``gigacount`` namespace (configured once, to stderr)."""
    root = logging.getLogger(LOGGER_NAME)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("GIGACOUNT_LOGLEVEL", "INFO"))
        root.propagate = False
    return root if name is None else root.getChild(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def select_device(device: str = "auto"):
    """Resolve ``"auto"`` to ``cuda`` (then ``mps``) when available, else ``cpu``.

    An explicit request for an unavailable accelerator is an error, not a silent fallback.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but CUDA is not available on this machine; "
            "use device='auto' or 'cpu'."
        )
    return resolved


def autocast_dtype(device) -> "torch.dtype":  # noqa: F821
    """The mixed-precision dtype for a device: bfloat16 on CPU and recent GPUs, float16 on older GPUs."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16  # e.g. the Colab T4 (sm_75)
    return torch.bfloat16


_TRACKED_PACKAGES = (
    "torch", "torchvision", "timm", "open_clip_torch", "numpy", "scipy", "pillow",
    "matplotlib", "pandas", "papermill",
)


def library_versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a run depends on."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        versions["gigacount_lib"] = metadata.version("gigacount-lib")
    except metadata.PackageNotFoundError:
        versions["gigacount_lib"] = "source tree"
    return versions


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # O_EXCL: never write through an existing file; mode 0o666 lets the kernel apply the umask
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (used for configs, manifests and caches)."""
    text = json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file; a missing file or invalid JSON raises an error naming ``what`` and the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def cache_dir() -> Path:
    """Where derived artefacts (synthetic data, text-prototype caches) are kept.

    ``$GIGACOUNT_CACHE`` if set, else ``~/.cache/gigacount``.
    """
    root = os.environ.get("GIGACOUNT_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "gigacount"
    path.mkdir(parents=True, exist_ok=True)
    return path
