"""A small VGG-style encoder for the ``cpu`` preset: a CPU compromise, not part of the paper.

GigaCount's encoder is ConvNeXt-Tiny, pretrained on ImageNet. This project cannot download those
weights, and from random init on 2 CPU cores in 30 minutes a ConvNeXt learns to find small heads
much more slowly than plain 3x3 convolutions do. ``benchmarks/cpu_bottleneck.py`` measured this:
with the same loss, head, batches and wall-clock budget, ConvNeXt-Atto's stem and stages 1-2 counted
worse than a 0.2 M-parameter VGG-style network (Simonyan & Zisserman, ICLR 2015; shaped like
CSRNet's front end, Li et al., CVPR 2018), and the full ``gigacount_atto`` worse still. The stem
alone does not explain it: a probe that put these full-resolution 3x3 layers in place of
ConvNeXt-Atto's 4x4 patchify stem counted no better than the preset.

:class:`VGGPyramid` exposes the maps at strides 4, 8 and 16, with the ``channels`` / ``reductions``
interface of :class:`~gigacount_lib.models.encoder.TruncatedConvNeXt`, so GigaCount's attention blocks,
multi-scale fusion, decoder and cosine text head sit on it unchanged (the ``gigacount_vgg`` variant).
Random init only: there is no checkpoint to load.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["VGGPyramid", "conv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1) -> list[nn.Module]:
    """3x3 conv (no bias) -> BatchNorm -> ReLU, padded to keep the size."""
    return [nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class VGGPyramid(nn.Module):
    """3x3 conv-BN-ReLU layers with 2x2 max pools; the maps at strides 4, 8 and 16.

    Args:
        width: channels at full resolution ``w``; the maps have ``4w``, ``4w`` and ``8w`` channels.
        dilated: dilated (2) convs at stride 8 after the plain one (1; CSRNet's back end and the
            ``VGGLite`` diagnostic of ``benchmarks/cpu_bottleneck.py`` use three, for more context).

    ``forward(x (B, 3, H, W))`` returns ``[(B, 4w, H/4, W/4), (B, 4w, H/8, W/8), (B, 8w, H/16, W/16)]``
    (``H, W`` multiples of 16). Layers: two convs at width ``w`` (stride 1), two at ``2w`` (stride 2),
    two at ``4w`` (stride 4); a plain and a dilated (2) conv at ``4w`` (stride 8); two at ``8w`` (stride 16).
    """

    def __init__(self, width: int = 16, dilated: int = 1) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"VGGPyramid: width must be >= 1, got {width}")
        if dilated < 0:
            raise ValueError(f"VGGPyramid: dilated must be >= 0, got {dilated}")
        w = int(width)
        self.stride4 = nn.Sequential(
            *conv_bn_relu(3, w), *conv_bn_relu(w, w), nn.MaxPool2d(2),
            *conv_bn_relu(w, 2 * w), *conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            *conv_bn_relu(2 * w, 4 * w), *conv_bn_relu(4 * w, 4 * w))
        self.stride8 = nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(4 * w, 4 * w),
                                     *(m for _ in range(int(dilated)) for m in conv_bn_relu(4 * w, 4 * w, 2)))
        self.stride16 = nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(4 * w, 8 * w), *conv_bn_relu(8 * w, 8 * w))
        self.width, self.dilated = w, int(dilated)
        self.channels: list[int] = [4 * w, 4 * w, 8 * w]
        self.reductions: list[int] = [4, 8, 16]
        self.weights_source = "random"

    def forward(self, x: Tensor) -> list[Tensor]:
        f4 = self.stride4(x)
        f8 = self.stride8(f4)
        return [f4, f8, self.stride16(f8)]
