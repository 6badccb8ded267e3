"""The per-scale attention block of GigaCount ("ccsm" in the official code).

The block comes from FFNet (Focus for Free in density-based counting, arXiv:2404.07847), which
GigaCount applies to each ConvNeXt scale. With input width ``C``, hidden width ``C_h`` and output
width ``C_o`` (96/48/16, 192/96/32, 384/192/64 for the three GigaCount scales) it computes::

    x1 = x ⊙ σ(ReLU(W_c · avgpool(x)))      channel attention, W_c: C -> C (1x1, no bias); range [0.5, 1)
    x2 = U_1(x1) + x1                        C -> C, residual
    x3 = U_2(x2)                             C -> C_h
    x4 = U_3(x3) + x3                        C_h -> C_h, residual
    x5 = U_4(x4)                             C_h -> C_o
    y  = x5 ⊙ σ(conv7x7(mean_c(x5)))         spatial attention, 1 -> 1 channel (no bias); range (0, 1)

where each unit ``U_i = BN(ReLU(ODConv_1x1(·)))`` is a 1x1
:class:`~gigacount_lib.models.odconv.ODConv2d` (Li et al., ICLR 2022) with 4 candidate kernels,
followed by ReLU and BatchNorm, as in the official code (``models/clip/feature_fusion.py`` and
``models/clip/blocks.py`` of AdamHermes/GigaCount). The ReLU inside the channel attention means a
channel is never scaled below one half; the BatchNorm after every unit keeps the block's output at
unit scale (a linear chain of ODConvs without it shrinks the signal about five-fold at initialisation).

About the paper vs. the code: the GigaCount paper's text says the ConvNeXt blocks of the encoder
were replaced by ODConv blocks; the official code keeps the ConvNeXt blocks and uses ODConv *only
here*, inside these attention blocks. ``gigacount`` follows the code; ``gigacount_odconv_blocks``
follows the text (see :mod:`gigacount_lib.models.encoder`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .odconv import ODAttention, ODConv2d

__all__ = ["ChannelAttention", "SpatialAttention", "ODConvUnit", "ScaleAttentionBlock"]


class ChannelAttention(nn.Module):
    """``x ⊙ σ(ReLU(W · avgpool(x)))`` with a bias-free 1x1 conv ``W`` (C -> C). Shape-preserving."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, bias=False)

    def attention(self, x: Tensor) -> Tensor:
        """The channel weights ``(B, C, 1, 1)`` in [0.5, 1)."""
        return torch.sigmoid(torch.relu(self.fc(x.mean(dim=(2, 3), keepdim=True))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class SpatialAttention(nn.Module):
    """``x ⊙ σ(conv_k(mean_c(x)))`` with a bias-free ``k x k`` conv on the channel mean (1 -> 1 channel)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)

    def attention(self, x: Tensor) -> Tensor:
        """The spatial weights ``(B, 1, H, W)`` in (0, 1)."""
        return torch.sigmoid(self.conv(x.mean(dim=1, keepdim=True)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class ODConvUnit(nn.Sequential):
    """``BN(ReLU(ODConv_1x1(x)))``: one unit of the attention block. ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    Args:
        in_channels, out_channels: widths of the 1x1 ODConv.
        kernel_num: candidate kernels of the ODConv (4).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_num: int = 4) -> None:
        super().__init__(ODConv2d(in_channels, out_channels, 1, kernel_num=kernel_num),
                         nn.ReLU(inplace=True), nn.BatchNorm2d(out_channels))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, ODAttention]:
        """The unit's output and the four ODConv attentions it used (for inspection)."""
        odconv, act, norm = self
        att = odconv.compute_attention(x)
        return norm(act(odconv.forward_with_attention(x, att))), att


class ScaleAttentionBlock(nn.Module):
    """One FFNet/GigaCount attention block (see the module docstring for the equations).

    Args:
        in_channels: ``C`` (width of the encoder map at this scale).
        hidden_channels: ``C_h`` (``C / 2`` in GigaCount).
        out_channels: ``C_o`` (16/32/64 in GigaCount).
        kernel_num: candidate kernels of each ODConv (4).
        spatial_kernel: size of the spatial-attention conv (7).

    ``forward(x)`` maps ``(B, C, H, W) -> (B, C_o, H, W)``; :meth:`forward_with_maps` also returns
    the channel attention ``(B, C, 1, 1)``, the spatial attention ``(B, 1, H, W)`` and the
    :class:`~gigacount_lib.models.odconv.ODAttention` of each of the four ODConvs.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, kernel_num: int = 4,
                 spatial_kernel: int = 7) -> None:
        super().__init__()
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden_channels, out_channels
        self.channel_attention = ChannelAttention(in_channels)
        self.conv1 = ODConvUnit(in_channels, in_channels, kernel_num)
        self.conv2 = ODConvUnit(in_channels, hidden_channels, kernel_num)
        self.conv3 = ODConvUnit(hidden_channels, hidden_channels, kernel_num)
        self.conv4 = ODConvUnit(hidden_channels, out_channels, kernel_num)
        self.spatial_attention = SpatialAttention(spatial_kernel)

    def forward_with_maps(self, x: Tensor) -> tuple[Tensor, dict]:
        ca = self.channel_attention.attention(x)
        x = x * ca
        y1, a1 = self.conv1.forward_with_attention(x)
        x = y1 + x
        x, a2 = self.conv2.forward_with_attention(x)
        y3, a3 = self.conv3.forward_with_attention(x)
        x = y3 + x
        x, a4 = self.conv4.forward_with_attention(x)
        sa = self.spatial_attention.attention(x)
        return x * sa, {"channel": ca, "spatial": sa, "odconv": [a1, a2, a3, a4]}

    def forward(self, x: Tensor) -> Tensor:
        x = self.channel_attention(x)
        x = self.conv1(x) + x
        x = self.conv2(x)
        x = self.conv3(x) + x
        x = self.spatial_attention(self.conv4(x))
        return x
