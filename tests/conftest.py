"""Shared test fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"

# Keep caches (synthetic data, text prototypes) out of the user's home during tests.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """``../shared/reference`` beside the checkout (CLIP-EBC's published histograms and bins)."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {SHARED_REFERENCE} (the course's ../shared folder "
                    "beside the checkout); these tests compare against CLIP-EBC's published numbers")
    return SHARED_REFERENCE


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Point ``GIGACOUNT_CACHE`` at a per-session temp folder unless the caller set one."""
    if "GIGACOUNT_CACHE" not in os.environ:
        os.environ["GIGACOUNT_CACHE"] = str(tmp_path_factory.mktemp("gigacount_cache"))
    yield


def run_notebook_quick(name: str, tmp_path: Path, **extra) -> Path:
    """Execute ``notebooks/<name>`` with quick parameters; figures and output go to ``tmp_path``."""
    from gigacount_lib.reproduce import run_notebook

    params = {"data_root": None, "quick": True, "device": "cpu", "seed": 0,
              "output_dir": str(tmp_path / "figures")}
    params.update(extra)
    return run_notebook(REPO_ROOT / "notebooks" / name, tmp_path / name, parameters=params, timeout_s=1200)


def notebook_output_text(executed: Path) -> str:
    """All text an executed notebook printed or displayed (stream, text/plain and text/html outputs)."""
    import json

    parts = []
    for cell in json.loads(Path(executed).read_text())["cells"]:
        for out in cell.get("outputs", []):
            values = [out.get("text")] + [out.get("data", {}).get(k) for k in ("text/plain", "text/html")]
            parts.extend("".join(v) if isinstance(v, list) else v for v in values if v)
    return "\n".join(parts)


def run_notebook_and_check(name: str, tmp_path: Path, figures: tuple[str, ...] = (), **extra) -> str:
    """Run a notebook quickly, check that each expected figure was written and is not empty, and
    return its output text. (papermill raises if any cell fails.)"""
    executed = run_notebook_quick(name, tmp_path, **extra)
    for fig in figures:
        path = tmp_path / "figures" / f"{fig}.png"
        assert path.is_file(), f"{name}: figure {fig}.png was not written"
        assert path.stat().st_size > 5_000, f"{name}: figure {fig}.png looks empty"
    return notebook_output_text(executed)


def write_zip_with_bad_crc(archive: Path) -> Path:
    """A UCF-QNRF-like zip whose second member's data is corrupted (its CRC check fails on extraction)."""
    import zipfile

    payload = b"B" * 4096
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("UCF-QNRF_ECCV18/Train/a.txt", b"A" * 4096)
        zf.writestr("UCF-QNRF_ECCV18/Train/b.txt", payload)
    raw = archive.read_bytes()
    at = raw.index(payload)
    archive.write_bytes(raw[:at] + b"C" + raw[at + 1:])
    return archive
