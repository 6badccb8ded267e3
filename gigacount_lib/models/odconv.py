"""Omni-dimensional dynamic convolution (ODConv).

Reference: C. Li, A. Zhou, A. Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022.

A dynamic convolution keeps ``n`` candidate kernels ``W_1 … W_n`` (each ``(C_out, C_in/g, k, k)``)
and mixes them per input sample with attentions computed from the globally pooled input.
ODConv uses four attentions, one per dimension of the kernel space:

* ``a_c`` channel attention over the input channels, shape ``(B, C_in)`` (sigmoid);
* ``a_f`` filter attention over the output channels, shape ``(B, C_out)`` (sigmoid);
* ``a_s`` spatial attention over the ``k x k`` kernel positions, shape ``(B, k, k)`` (sigmoid);
* ``a_w`` kernel attention over the ``n`` candidates, shape ``(B, n)`` (softmax).

The output for sample ``b`` is::

    y_b = a_f[b] ⊙ ( Σ_i a_w[b, i] · (a_s[b] ⊙ W_i) ) * (a_c[b] ⊙ x_b)

All four attentions come from one small squeeze network:
``z = ReLU(BN(FC(avgpool(x))))`` with hidden width ``max(int(C_in * reduction), min_channel)``
(``reduction = 0.0625``, ``min_channel = 16`` as in the paper), followed by one linear head per
attention. A temperature divides the pre-activation values (1.0 by default).

Efficiency. Because convolution is linear in the input channels and the output channels, the channel
and filter attentions are folded into the per-sample aggregated kernel instead of rescaling the
feature maps: ``W_b[o, i] = a_f[b, o] · a_c[b, i] · Σ_n a_w[b, n] · a_s[b] ⊙ W_n[o, i]``.
Then

* the 1x1 case is a single batched matrix product ``einsum('bgoi,bgil->bgol')`` (no grouped conv);
* the k x k case is one grouped convolution whose groups are ``B * g`` (the batch is folded into the
  channel dimension), the usual way of running per-sample kernels without a Python loop.

As in the official ODConv implementation (``OSVAI/ODConv``, ``modules/odconv.py``), attentions that
carry no information are skipped (fixed to 1): the spatial attention for a 1x1 kernel, the kernel
attention when ``n == 1``, and the filter attention of a depthwise convolution
(``groups == C_in == C_out``), whose output channels are its input channels, already scaled by the
channel attention.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ODAttention", "ODConv2d"]


class ODAttention(NamedTuple):
    """The four ODConv attentions for a batch (shapes broadcastable as documented).

    channel: ``(B, C_in)``; filter: ``(B, C_out)``; spatial: ``(B, k, k)``; kernel: ``(B, n)``.
    """

    channel: Tensor
    filter: Tensor
    spatial: Tensor
    kernel: Tensor

    @classmethod
    def uniform(cls, batch: int, in_channels: int, out_channels: int, kernel_size: int, kernel_num: int,
                device=None, dtype=torch.float32) -> "ODAttention":
        """Attentions that make ODConv a plain convolution with the mean candidate kernel."""
        ones = dict(device=device, dtype=dtype)
        return cls(torch.ones(batch, in_channels, **ones), torch.ones(batch, out_channels, **ones),
                   torch.ones(batch, kernel_size, kernel_size, **ones),
                   torch.full((batch, kernel_num), 1.0 / kernel_num, **ones))


class ODConv2d(nn.Module):
    """ODConv with ``kernel_num`` candidate kernels (Li et al., ICLR 2022); see the module docstring.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``
            (square kernels; ``padding`` defaults to ``dilation * (kernel_size // 2)``, i.e. "same").
        kernel_num: number of candidate kernels ``n`` (4 in GigaCount / FFNet).
        reduction: hidden width ratio of the attention network (0.0625).
        min_channel: lower bound of the hidden width (16).
        temperature: divides the attention logits.
        bias: add a (static) bias per output channel after the dynamic convolution.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H', W')`` as ``nn.Conv2d``.

    Note: the attention network uses ``BatchNorm1d`` on the pooled vector (as the paper), so in
    training mode a batch needs at least 2 samples.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, groups: int = 1, kernel_num: int = 4,
                 reduction: float = 0.0625, min_channel: int = 16, temperature: float = 1.0,
                 bias: bool = False) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ODConv2d: in_channels={in_channels} and out_channels={out_channels} "
                             f"must be divisible by groups={groups}")
        if kernel_num < 1 or kernel_size < 1:
            raise ValueError(f"ODConv2d: kernel_num ({kernel_num}) and kernel_size ({kernel_size}) must be >= 1")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = kernel_size, stride, dilation, groups
        self.padding = dilation * (kernel_size // 2) if padding is None else padding
        self.kernel_num = kernel_num
        self.temperature = float(temperature)
        hidden = max(int(in_channels * reduction), min_channel)
        self.hidden_channels = hidden

        # Squeeze network shared by the four attentions.
        self.fc = nn.Linear(in_channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.channel_fc = nn.Linear(hidden, in_channels)
        depthwise = groups == in_channels == out_channels
        self.filter_fc = None if depthwise else nn.Linear(hidden, out_channels)
        self.spatial_fc = nn.Linear(hidden, kernel_size * kernel_size) if kernel_size > 1 else None
        self.kernel_fc = nn.Linear(hidden, kernel_num) if kernel_num > 1 else None

        self.weight = nn.Parameter(torch.empty(kernel_num, out_channels, in_channels // groups,
                                               kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for i in range(self.kernel_num):
            nn.init.kaiming_normal_(self.weight[i], mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out", nonlinearity="relu")
        for head in (self.channel_fc, self.filter_fc, self.spatial_fc, self.kernel_fc):
            if head is not None:
                nn.init.kaiming_normal_(head.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(head.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, kernel_num={self.kernel_num}, "
                f"hidden={self.hidden_channels}")

    # ------------------------------------------------------------------ attentions
    def compute_attention(self, x: Tensor) -> ODAttention:
        """The four attentions from the globally pooled input ``x`` (B, C_in, H, W)."""
        batch = x.shape[0]
        if self.training and batch < 2:
            raise ValueError("ODConv2d: in training mode the attention's BatchNorm needs a batch of at least 2 "
                             "samples (got 1); train with batch size >= 2 or call model.eval()")
        z = F.relu(self.bn(self.fc(x.mean(dim=(2, 3)))))
        t = self.temperature
        channel = torch.sigmoid(self.channel_fc(z) / t)
        if self.filter_fc is not None:
            filt = torch.sigmoid(self.filter_fc(z) / t)
        else:
            filt = z.new_ones(batch, self.out_channels)
        k = self.kernel_size
        if self.spatial_fc is not None:
            spatial = torch.sigmoid(self.spatial_fc(z) / t).view(batch, k, k)
        else:
            spatial = z.new_ones(batch, 1, 1)
        if self.kernel_fc is not None:
            kernel = torch.softmax(self.kernel_fc(z) / t, dim=1)
        else:
            kernel = z.new_ones(batch, 1)
        return ODAttention(channel, filt, spatial, kernel)

    def aggregate_weight(self, att: ODAttention) -> Tensor:
        """Per-sample kernels ``(B, C_out, C_in/g, k, k)`` with all four attentions folded in."""
        batch = att.kernel.shape[0]
        k, g = self.kernel_size, self.groups
        cin_g, cout_g = self.in_channels // g, self.out_channels // g
        # Σ_n a_w[b, n] W_n  -> (B, C_out, C_in/g, k, k)
        w = torch.einsum("bn,noikl->boikl", att.kernel.to(self.weight.dtype), self.weight)
        w = w * att.spatial.reshape(batch, 1, 1, *att.spatial.shape[-2:])
        # filter attention on output channels, channel attention on the input channels of each group
        w = w * att.filter.reshape(batch, self.out_channels, 1, 1, 1)
        ch = att.channel.reshape(batch, g, 1, cin_g).expand(batch, g, cout_g, cin_g)
        w = w * ch.reshape(batch, self.out_channels, cin_g, 1, 1)
        return w

    # ------------------------------------------------------------------ forward
    def forward_with_attention(self, x: Tensor, att: ODAttention) -> Tensor:
        """Apply the dynamic convolution with given attentions (no Python loop over the batch)."""
        batch, _, height, width = x.shape
        w = self.aggregate_weight(att)
        g = self.groups
        if self.kernel_size == 1 and self.padding == 0:
            if self.stride > 1:
                x = x[:, :, ::self.stride, ::self.stride]
            h_out, w_out = x.shape[-2:]
            xg = x.reshape(batch, g, self.in_channels // g, h_out * w_out)
            wg = w.reshape(batch, g, self.out_channels // g, self.in_channels // g)
            y = torch.einsum("bgoi,bgil->bgol", wg, xg).reshape(batch, self.out_channels, h_out, w_out)
        else:
            y = F.conv2d(x.reshape(1, batch * self.in_channels, height, width),
                         w.reshape(batch * self.out_channels, self.in_channels // g, self.kernel_size,
                                   self.kernel_size),
                         stride=self.stride, padding=self.padding, dilation=self.dilation, groups=batch * g)
            y = y.reshape(batch, self.out_channels, *y.shape[-2:])
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ODConv2d: expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.forward_with_attention(x, self.compute_attention(x))
