"""Joint image + point transforms and batching for crowd counting.

A sample is ``(image, points, meta)``: a float image ``(3, H, W)`` in ``[0, 1]``, points ``(N, 2)``
as ``(x, y)`` pixels, and a metadata dict. Images in a batch share one size (after cropping), while
the number of points varies, so batches keep points as a list and offer a padded view with a mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["pad_points", "CrowdBatch", "collate_crowd"]


def pad_points(points: Sequence[Tensor], pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack a list of ``(N_i, 2)`` point sets into ``(B, N_max, 2)`` plus a bool mask ``(B, N_max)``.

    ``N_max`` is at least 1 so that downstream code never sees a zero-sized dimension; images with
    no people simply have an all-False mask row.
    """
    batch = len(points)
    n_max = max([int(p.shape[0]) for p in points] + [1])
    device = points[0].device if batch else torch.device("cpu")
    padded = torch.full((batch, n_max, 2), pad_value, dtype=torch.float32, device=device)
    mask = torch.zeros((batch, n_max), dtype=torch.bool, device=device)
    for i, p in enumerate(points):
        n = int(p.shape[0])
        if n:
            padded[i, :n] = p.to(torch.float32)
            mask[i, :n] = True
    return padded, mask


@dataclass
class CrowdBatch:
    """A collated batch: ``images (B, 3, H, W)``, ``points`` list of ``(N_i, 2)``, ``meta`` list."""

    images: Tensor
    points: list[Tensor]
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def counts(self) -> Tensor:
        """Ground-truth count per image, ``(B,)`` float."""
        return torch.tensor([float(p.shape[0]) for p in self.points], device=self.images.device)

    def padded_points(self) -> tuple[Tensor, Tensor]:
        return pad_points(self.points)

    def to(self, device, non_blocking: bool = False) -> "CrowdBatch":
        return CrowdBatch(
            images=self.images.to(device, non_blocking=non_blocking),
            points=[p.to(device, non_blocking=non_blocking) for p in self.points],
            meta=self.meta,
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def collate_crowd(samples: Sequence[tuple]) -> CrowdBatch:
    """``DataLoader`` collate function for ``(image, points, meta)`` samples of equal image size.

    A sample that is a list of crops (several crops per image) is flattened into the batch.
    """
    flat: list[tuple] = []
    for sample in samples:
        if isinstance(sample, list):
            flat.extend(sample)
        else:
            flat.append(sample)
    if not flat:
        raise ValueError("collate_crowd: empty batch")
    sizes = {tuple(s[0].shape[-2:]) for s in flat}
    if len(sizes) != 1:
        raise ValueError(
            f"collate_crowd: images in a batch must share one size, got {sorted(sizes)}; "
            "use a crop transform for training or batch_size=1 for evaluation"
        )
    images = torch.stack([torch.as_tensor(s[0]) for s in flat])
    points = [torch.as_tensor(s[1], dtype=torch.float32).reshape(-1, 2) for s in flat]
    meta = [dict(s[2]) if len(s) > 2 and s[2] is not None else {} for s in flat]
    return CrowdBatch(images=images, points=points, meta=meta)
