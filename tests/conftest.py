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
