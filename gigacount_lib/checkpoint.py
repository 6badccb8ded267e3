"""Checkpoints: data only, written atomically, loaded with ``weights_only=True``, checked on load.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (never pickled code):
the model name and builder options, the bin configuration, the resolved training config, the
weights policy (``model.weights_info``), the state dicts of model, optimiser, scheduler and
gradient scaler, every RNG state, and the position in training (epoch, step in epoch, global step).
So ``gigacount eval`` and ``gigacount predict`` need nothing but the file, and a resumed run
continues bit for bit.
"""
from __future__ import annotations

import io
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .utils import atomic_write_bytes

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "rng_state",
           "set_rng_state", "build_model_from_checkpoint"]

CHECKPOINT_FORMAT = "gigacount-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, truncated, not ours, or of another model/bins."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) RNG states as checkpoint-safe data."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format tag) atomically: temp file, fsync, rename.

    Until the rename, the previous file at ``path`` stays complete and in place.
    """
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, *, model_name: str | None = None,
                    bin_config=None) -> dict[str, Any]:
    """Load a checkpoint as data (``weights_only=True``: a pickle that carries code is refused).

    Args:
        path: the file.
        model_name, bin_config: when given, the checkpoint must be of this model and these bins.

    Raises :class:`CheckpointError` naming the file and the problem; ``FileNotFoundError`` if absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused, it is not plain data (it would run code when loaded: "
                              f"{str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({str(exc).splitlines()[0]}); "
                              "use another one, e.g. the best.pt / last.pt beside it") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a GigaCount checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    if model_name is not None and blob["model_name"] != model_name:
        raise CheckpointError(f"{path}: a checkpoint of model {blob['model_name']!r}, not {model_name!r}")
    if bin_config is not None and blob["bin_config"] != bin_config.to_dict():
        raise CheckpointError(f"{path}: trained with other bins ({blob['bin_config']}) than requested "
                              f"({bin_config.to_dict()})")
    return blob


def build_model_from_checkpoint(checkpoint: str | os.PathLike | dict[str, Any], device="cpu"):
    """Rebuild the model a checkpoint was trained as, with its weights; needs no network.

    The architecture is built with random init (``pretrained=None``) and then filled from the file,
    so no pretrained weights are requested.
    """
    from .binning import BinConfig
    from .models import build_model

    blob = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    bin_config = BinConfig.from_dict(blob["bin_config"])
    model = build_model(blob["model_name"], bin_config, pretrained=None, **blob.get("model_options", {}))
    try:
        model.load_state_dict(blob["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit model {blob['model_name']!r}: "
                              f"{str(exc).splitlines()[0]}") from exc
    model.weights_info = blob.get("weights_info", model.weights_info)
    return model.to(device).eval()
