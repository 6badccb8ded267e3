"""Multi-scale fusion of the per-scale attention outputs, returned at stride 8.

The official GigaCount code upsamples the stride-8 and stride-16 attention outputs to stride 4 with
transposed convolutions (k4 s2 p1 and k4 s4), concatenates them with the stride-4 output
(16 + 32 + 64 = 112 channels), then resizes the result to a fixed 28 x 28, which is only stride 8
for 224 x 224 inputs. Here the stride-4 map is downsampled by 2 for any input size with a 2x2
average pool. For a 224 x 224 input this equals the official bilinear resize exactly (bilinear
down-sampling by exactly 2 with ``align_corners=False`` samples midway between pixel pairs, i.e.
the 2x2 mean). The official code also builds a ``final`` 1x1 conv it never calls; it is left out.

A map at stride ``r > 4`` is upsampled by ``ConvTranspose2d(C, C, k, s)`` with ``s = r / 4`` and
``(k, p) = (4, 1)`` for ``s = 2``, ``(k, p) = (s, 0)`` otherwise (k4 s4 for stride 16, k8 s8 for
stride 32 in the stage-4 ablation).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiScaleFusion"]


class MultiScaleFusion(nn.Module):
    """Upsample every map to stride 4, concatenate, average-pool to stride 8.

    Args:
        channels: channels of each input map (e.g. ``(16, 32, 64)``).
        reductions: stride of each input map (e.g. ``(4, 8, 16)``); each a multiple of 4.
        out_stride: 8 (the EBC block size); 4 skips the pooling.

    ``forward(list of (B, C_i, H/r_i, W/r_i)) -> (B, ΣC_i, H/out_stride, W/out_stride)``.
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], out_stride: int = 8) -> None:
        super().__init__()
        if len(channels) != len(reductions) or not channels:
            raise ValueError(f"MultiScaleFusion: channels {channels} and reductions {reductions} must be "
                             "non-empty and of equal length")
        if out_stride not in (4, 8):
            raise ValueError(f"MultiScaleFusion: out_stride must be 4 or 8, got {out_stride}")
        self.reductions = list(reductions)
        self.out_stride = out_stride
        self.out_channels = int(sum(channels))
        ups = []
        for c, r in zip(channels, reductions):
            if r % 4:
                raise ValueError(f"MultiScaleFusion: stride {r} is not a multiple of 4")
            s = r // 4
            if s == 1:
                ups.append(nn.Identity())
            elif s == 2:
                ups.append(nn.ConvTranspose2d(c, c, kernel_size=4, stride=2, padding=1))
            else:
                ups.append(nn.ConvTranspose2d(c, c, kernel_size=s, stride=s, padding=0))
        self.upsample = nn.ModuleList(ups)

    def forward_stride4(self, features: Sequence[Tensor]) -> Tensor:
        """The concatenated stride-4 map ``(B, ΣC_i, H/4, W/4)``."""
        if len(features) != len(self.upsample):
            raise ValueError(f"MultiScaleFusion: expected {len(self.upsample)} maps, got {len(features)}")
        ups = [up(f) for up, f in zip(self.upsample, features)]
        size = ups[0].shape[-2:]
        for u, r in zip(ups, self.reductions):
            if u.shape[-2:] != size:
                raise ValueError(f"MultiScaleFusion: the stride-{r} map upsamples to {tuple(u.shape[-2:])}, "
                                 f"expected {tuple(size)}; pad inputs to a multiple of {max(self.reductions)}")
        return torch.cat(ups, dim=1)

    def to_output_stride(self, fused_stride4: Tensor) -> Tensor:
        """The stride-4 map at ``out_stride``: 2x2 average pool for 8, unchanged for 4."""
        return F.avg_pool2d(fused_stride4, 2) if self.out_stride == 8 else fused_stride4

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.to_output_stride(self.forward_stride4(features))
