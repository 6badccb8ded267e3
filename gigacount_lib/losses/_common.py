"""What the losses share: the ``loss_fn(output, batch)`` interface, input checks, block counts, logging.

Every training loss is a :class:`CountingLoss`:

* ``loss_fn(output, batch) -> (loss, terms)``: ``output`` a
  :class:`~gigacount_lib.models.head.CountingOutput` (``logits (B, K, h, w)``, ``density (B, 1, h, w)``),
  ``batch`` a :class:`~gigacount_lib.data.transforms.CrowdBatch` (its ``points`` and ``image_size``);
* ``loss_fn.compute(logits, density, points, image_size) -> (loss, terms)``: the same on raw tensors,
  where ``points`` is a list of ``(N_i, 2)`` tensors (or NumPy arrays) or a ``(padded, mask)`` pair.
  A loss ignores the input it does not use (DM-Count the logits, CE and L_Prob the density), which
  may then be ``None``.

``terms`` is a dict of floats for logging, made with one host sync that also resolves the input checks
(:func:`finish_terms`). The block size is never a call argument: it is the loss's (the bin
configuration's ``reduction``, or DM-Count's ``reduction``), and :func:`check_loss_inputs` checks it
against the output grid and the image size.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "LOSS_EPS", "PointsLike", "CountingLoss", "unpack_output_batch", "as_padded_points", "block_counts_padded",
    "check_image_size", "check_loss_inputs", "resolve_checks", "finish_terms",
]

LOSS_EPS = 1e-8  # CLIP-EBC's guard in the normalisations and in the OT gradient
PointsLike = Union[Sequence[Tensor], tuple[Tensor, Tensor]]

_STRIDES = (1, 2, 4, 8, 16, 32, 64)  # output strides tried when explaining a grid mismatch


# ---------------------------------------------------------------------------------------------- interface
def unpack_output_batch(output, batch, where: str) -> tuple[Tensor, Tensor, list, tuple[int, int]]:
    """``(logits, density, points, image_size)`` from a ``CountingOutput`` and a ``CrowdBatch``.

    Raises ``TypeError`` (pointing at ``compute``) when called with raw tensors instead.
    """
    if torch.is_tensor(output) or not (hasattr(output, "logits") and hasattr(output, "density")):
        raise TypeError(f"{where}: expected loss_fn(output, batch) with a CountingOutput (logits, density) and a "
                        f"CrowdBatch, got a {type(output).__name__} as output; for raw tensors call "
                        f"loss_fn.compute(logits, density, points, image_size)")
    if not (hasattr(batch, "points") and hasattr(batch, "image_size")):
        raise TypeError(f"{where}: expected a CrowdBatch (points, image_size) as batch, got a "
                        f"{type(batch).__name__}; for raw tensors call "
                        f"loss_fn.compute(logits, density, points, image_size)")
    return output.logits, output.density, batch.points, batch.image_size


class CountingLoss(nn.Module):
    """Base of the training losses: ``forward(output, batch)`` unpacks and calls :meth:`compute`."""

    def forward(self, output, batch) -> tuple[Tensor, dict[str, float]]:
        """``(loss, terms)`` for a model output (``CountingOutput``) and its ``CrowdBatch``."""
        return self.compute(*unpack_output_batch(output, batch, type(self).__name__))

    def compute(self, logits: Tensor | None, density: Tensor | None, points: PointsLike,
                image_size: tuple[int, int]) -> tuple[Tensor, dict[str, float]]:  # pragma: no cover
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- inputs
def as_padded_points(points: PointsLike, batch: int, device) -> tuple[Tensor, Tensor]:
    """A list of ``(N_i, 2)`` tensors (or NumPy arrays) or a ``(padded (B, N, 2), mask (B, N))`` pair ->
    the padded pair."""
    if isinstance(points, tuple) and len(points) == 2 and torch.is_tensor(points[0]) and points[0].ndim == 3:
        padded, mask = points
        if mask.shape != padded.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"points: the mask must be a bool tensor of shape {tuple(padded.shape[:2])}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
    else:
        from ..data.transforms import pad_points

        if torch.is_tensor(points) or isinstance(points, np.ndarray):
            raise ValueError(f"points: expected a list of (N_i, 2) tensors, one per image, or a (padded, mask) "
                             f"pair, got a single {type(points).__name__} of shape {tuple(points.shape)}")
        points = [torch.from_numpy(np.asarray(p, dtype=np.float32)) if isinstance(p, np.ndarray) else p
                  for p in points]
        for i, p in enumerate(points):
            if not torch.is_tensor(p):
                raise ValueError(f"points[{i}]: expected an (N, 2) tensor of (x, y), got a {type(p).__name__}; "
                                 "convert it with torch.as_tensor(..., dtype=torch.float32)")
            if p.ndim != 2 or p.shape[-1] != 2:
                raise ValueError(f"points[{i}]: expected an (N, 2) tensor of (x, y), got shape {tuple(p.shape)}")
        if not points:
            raise ValueError("points: empty list")
        padded, mask = pad_points(points)
    if padded.shape[0] != batch:
        raise ValueError(f"points: {padded.shape[0]} point sets for a batch of {batch} predictions")
    return padded.to(device=device, dtype=torch.float32), mask.to(device)


def block_counts_padded(points: Tensor, mask: Tensor, grid_size: tuple[int, int], reduction: int) -> Tensor:
    """Heads per block from padded points, ``(B, 1, h, w)`` float32, without a loop over images.

    Same convention as :func:`gigacount_lib.data.density.block_count_map` (floor, border points in the
    last block).
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    batch = points.shape[0]
    col = (points[..., 0] / reduction).floor().long().clamp(0, w - 1)
    row = (points[..., 1] / reduction).floor().long().clamp(0, h - 1)
    counts = torch.zeros(batch, h * w, dtype=torch.float32, device=points.device)
    counts.scatter_add_(1, row * w + col, mask.float())
    return counts.view(batch, 1, h, w)


def check_image_size(image_size, where: str = "loss") -> tuple[int, int]:
    """``image_size`` as ``(H, W)``: two positive whole numbers (pixels); ``ValueError`` otherwise."""
    try:
        height, width = (v.item() if torch.is_tensor(v) else v for v in image_size)
        ok = all(not isinstance(v, bool) and float(v).is_integer() and v > 0 for v in (height, width))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{where}: image_size must be (H, W), two positive integers (the crop size in pixels), "
                         f"got {image_size!r}")
    return int(height), int(width)


def _grid_mismatch(where: str, got: tuple[int, int], height: int, width: int, reduction: int,
                   expected: tuple[int, int], source: str) -> ValueError:
    fits = [r for r in _STRIDES if (math.ceil(height / r), math.ceil(width / r)) == got]
    hint = f"; that grid fits an output stride of {fits[0]} px" if fits else ""
    return ValueError(f"{where}: output grid {got} does not match image size {height}x{width} at reduction "
                      f"{reduction} (expected {expected}){hint}. The loss's block size ({source}) must equal "
                      "the model's output stride")


def check_loss_inputs(density: Tensor | None, image_size: tuple[int, int], reduction: int, *,
                      logits: Tensor | None = None, where: str = "loss",
                      reduction_source: str = "the loss's reduction") -> tuple[int, int]:
    """Shape checks (no host sync): returns the block grid ``(h, w)``; raises ``ValueError`` on mismatch.

    ``density`` may be ``None`` for a loss of the logits alone (then ``logits`` set the grid).
    ``reduction_source`` names where the block size came from, for the error message.
    """
    if density is None and logits is None:
        raise ValueError(f"{where}: neither logits nor density given")
    if density is not None:
        if not torch.is_tensor(density):
            raise ValueError(f"{where}: density must be a tensor (B, 1, h, w), got a {type(density).__name__}")
        if density.ndim != 4 or density.shape[1] != 1:
            raise ValueError(f"{where}: density must have shape (B, 1, h, w), got {tuple(density.shape)}")
    if logits is not None:
        if not torch.is_tensor(logits):
            raise ValueError(f"{where}: logits must be a tensor (B, K, h, w), got a {type(logits).__name__}")
        if logits.ndim != 4:
            raise ValueError(f"{where}: logits must have shape (B, K, h, w), got {tuple(logits.shape)}")
    height, width = check_image_size(image_size, where)
    grid = (math.ceil(height / reduction), math.ceil(width / reduction))
    reference = density if density is not None else logits
    if tuple(reference.shape[-2:]) != grid:
        raise _grid_mismatch(where, tuple(reference.shape[-2:]), height, width, reduction, grid, reduction_source)
    if logits is not None and density is not None:
        if logits.shape[0] != density.shape[0] or logits.shape[-2:] != density.shape[-2:]:
            raise ValueError(f"{where}: logits {tuple(logits.shape)} and density {tuple(density.shape)} do not "
                             "match; expected logits (B, K, h, w) and density (B, 1, h, w)")
    return grid


def _input_flags(density: Tensor | None, points: Tensor, mask: Tensor, image_size: tuple[int, int],
                 tolerance: float = 1e-3, logits: Tensor | None = None) -> Tensor:
    """Per-image problem flags ``(B, 4)`` (bad density, negative density, bad points, bad logits),
    computed on device. A ``None`` density or logits is not checked."""
    height, width = image_size
    x, y = points[..., 0], points[..., 1]
    outside = (~torch.isfinite(points).all(-1)) | (x < -tolerance) | (x > width + tolerance) \
        | (y < -tolerance) | (y > height + tolerance)
    bad_points = (outside & mask).any(-1)
    none = torch.zeros_like(bad_points)
    if density is not None:
        d = density.detach().flatten(1)
        nonfinite, negative = ~torch.isfinite(d).all(-1), (d < 0).any(-1)
    else:
        nonfinite, negative = none, none
    bad_logits = ~torch.isfinite(logits.detach().flatten(1)).all(-1) if logits is not None else none
    return torch.stack([nonfinite, negative, bad_points, bad_logits], dim=-1)


def resolve_checks(flags: Tensor | None, values: Tensor, where: str, image_size: tuple[int, int]) -> list[float]:
    """One host sync for the flags and the logged values; raises ``ValueError`` naming the bad images.

    ``values`` keep their dtype (float32, or float64 for float64 inputs): no float64 tensor is made
    on the device (MPS has no float64).
    """
    values = values.detach().flatten()
    if flags is None:
        return values.tolist()
    merged = torch.cat([values, flags.to(values.dtype).flatten()]).tolist()
    n = values.numel()
    flag_list = merged[n:]
    texts = ("NaN or infinite predicted density", "negative predicted density",
             f"points outside the {image_size[1]}x{image_size[0]} crop (or NaN points)", "NaN or infinite logits")
    width = flags.shape[-1]
    batch = len(flag_list) // width
    problems = []
    for k, text in enumerate(texts[:width]):
        bad = [i for i in range(batch) if flag_list[width * i + k]]
        if bad:
            problems.append(f"{text} in batch image(s) {bad}")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems) + ". The model output or the crop/point "
                         "transform is broken; no loss was returned.")
    return merged[:n]


def finish_terms(loss: Tensor, named: dict[str, Tensor], flags: Tensor | None, where: str,
                 image_size: tuple[int, int]) -> tuple[Tensor, dict[str, float]]:
    """``(loss, {"loss": float, **{name: float}})`` with one host sync, which also resolves the input checks."""
    values = torch.stack([loss.detach()] + [t.detach().reshape(()).to(loss.dtype) for t in named.values()])
    return loss, dict(zip(["loss", *named], resolve_checks(flags, values, where, image_size)))
