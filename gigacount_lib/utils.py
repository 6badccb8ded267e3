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


def module_device(module) -> "torch.device":  # noqa: F821
    """The device of a module's first parameter (else buffer); CPU for a module holding neither."""
    import torch

    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def autocast_dtype(device) -> "torch.dtype":  # noqa: F821
    """The mixed-precision dtype for a device: bfloat16 on CPU and recent GPUs, float16 on older GPUs."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16  # e.g. the Colab T4 (sm_75)
    return torch.bfloat16


def native_bf16(device) -> bool:
    """Whether bfloat16 runs natively on ``device``: CUDA's check, or oneDNN's on CPU (AVX-512 or AMX).

    Without native kernels bfloat16 autocast is emulated and slower than float32, so the Trainer and
    :func:`gigacount_lib.predict.predict_images` fall back to float32 on such CPUs.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False
    return False


def mixed_precision_available(device) -> bool:
    """Whether autocast speeds ``device`` up: float16 on any CUDA GPU, bfloat16 where it is native."""
    import torch

    device = torch.device(device)
    return device.type == "cuda" or native_bf16(device)


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


def ensure_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create the folder ``path`` (and its parents) if needed; ``what`` names it in errors.

    A file in the way raises ``NotADirectoryError`` naming ``what`` and that file, not ``[Errno 17]``.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise NotADirectoryError(f"{what} {path}: {blocker} is a file, not a folder; choose another "
                                 "location (or move that file away)") from exc
    return path


def cache_dir() -> Path:
    """Where derived artefacts (synthetic data, text-prototype caches) are kept.

    ``$GIGACOUNT_CACHE`` if set, else ``~/.cache/gigacount``.
    """
    root = os.environ.get("GIGACOUNT_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "gigacount"
    return ensure_dir(path, "$GIGACOUNT_CACHE" if root else "cache folder")


# ----------------------------------------------------------------------------- owned temporary folders
# A folder built elsewhere and renamed into place lives first under ``.<name>.tmp-<host>-<pid>-<random>``
# (and the copy it replaces under ``.<name>.old-<host>-<pid>-<random>``) beside its destination. The
# host and pid say whose it is: a later run removes the ones whose process is gone, and only the
# files in them it recognises as its own.
def _host_tag() -> str:
    return "".join(c for c in platform.node() if c.isalnum())[:24] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def make_temp_dir(dest: str | os.PathLike, kind: str = "tmp") -> Path:
    """A new empty folder beside ``dest`` named ``.<dest name>.<kind>-<host>-<pid>-<random>``."""
    import tempfile

    dest = Path(dest)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{kind}-{_host_tag()}-{os.getpid()}-", dir=dest.parent))


def temp_dir_is_stale(dest: str | os.PathLike, name: str, kinds: tuple[str, ...] = ("tmp", "old")) -> bool | None:
    """Whether ``name`` (beside ``dest``) is a :func:`make_temp_dir` folder of a process of this host that
    has ended (True), one that may still be in use (False), or not such a name at all (None)."""
    import re

    pattern = rf"\.{re.escape(Path(dest).name)}\.(?:{'|'.join(kinds)})-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[a-z0-9_]+"
    match = re.fullmatch(pattern, name)
    if match is None:
        return None
    return match["host"] == _host_tag() and not _pid_alive(int(match["pid"]))


def remove_owned(folder: str | os.PathLike, is_owned) -> list[Path]:
    """Delete the entries under ``folder`` that ``is_owned(relative posix path)`` recognises (files, and
    sub-folders once empty), then ``folder`` itself if empty; returns what was kept, sorted. Links are
    never followed, nor deleted."""
    folder = Path(folder)
    kept: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False, followlinks=False):
        here = Path(dirpath)
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            path = here / name
            if not path.is_symlink() and is_owned(path.relative_to(folder).as_posix()):
                path.unlink()
            else:
                kept.append(path)
        if here != folder:
            if not any(here.iterdir()) and is_owned(here.relative_to(folder).as_posix()):
                here.rmdir()
            elif not any(here.iterdir()):
                kept.append(here)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return sorted(kept)


def clean_stale_temp_dirs(dest: str | os.PathLike, is_owned, kinds: tuple[str, ...] = ("tmp", "old")) -> list[Path]:
    """Remove the temporary folders of :func:`make_temp_dir` beside ``dest`` left by a killed run.

    Only folders of this host whose process no longer exists are touched, and in them only the files
    ``is_owned`` recognises; a folder that still holds anything is logged, by name, and kept. Returns the
    folders kept (of live processes, other hosts, or with foreign files).
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    kept: list[Path] = []
    for entry in sorted(dest.parent.iterdir()):
        stale = temp_dir_is_stale(dest, entry.name, kinds)
        if stale is None or entry.is_symlink() or not entry.is_dir():
            continue
        if not stale:
            kept.append(entry)
            continue
        left = remove_owned(entry, is_owned)
        if left:
            get_logger("utils").warning("%s: left by an interrupted run; kept because it holds files not "
                                        "written by gigacount (first: %s); move them and delete the folder",
                                        entry, left[0])
            kept.append(entry)
        else:
            get_logger("utils").info("removed %s, left by an interrupted run", entry)
    return kept


def replace_dir(new: str | os.PathLike, dest: str | os.PathLike, is_owned) -> None:
    """Rename the finished folder ``new`` to ``dest``; an existing ``dest`` is first renamed aside and
    then emptied of the files ``is_owned`` recognises (anything else stays there, and is logged)."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    old = make_temp_dir(dest, "old")  # reserves a unique name
    old.rmdir()
    os.replace(dest, old)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    left = remove_owned(old, is_owned)
    if left:
        get_logger("utils").warning("%s: the files of the previous copy that gigacount did not write were kept "
                                    "in %s (first: %s)", dest, old, left[0])


# ----------------------------------------------------------------------------- command-line value types
def cli_checked(parse, name: str = "value"):
    """An ``argparse`` ``type=`` from ``parse(text) -> value``: its ``ValueError`` becomes the option's
    error message (``gigacount x: error: argument --opt: <message>``, exit status 2)."""
    import argparse

    def checked(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    checked.__name__ = name
    return checked


def cli_int(low: int, high: int | None = None):
    """``type=`` for an integer option in ``[low, high]`` (``high=None``: no upper limit)."""
    allowed = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be {allowed}, got {value}")
        return value

    return cli_checked(parse, "int")


def cli_positive_float(unit: str = ""):
    """``type=`` for a finite number > 0 (``unit`` is named in the message)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value > 0 and value != float("inf")):
            raise ValueError(f"must be a number > 0{(' ' + unit) if unit else ''}, got {text!r}")
        return value

    return cli_checked(parse, "float")
