"""Shared pieces of the counting models: input checks, normalisation, padding, cropping, decoder blocks.

Input contract of every model: ``images (B, 3, H, W)`` float in ``[0, 1]`` (the sample convention of
:mod:`gigacount_lib.data`). The model normalises with its encoder's mean/std, zero-pads the
normalised image on the right and bottom to a multiple of ``pad_multiple`` (32 for the ConvNeXt
models, 16 for the CLIP-EBC baselines), runs, and crops the outputs back to
``(ceil(H / 8), ceil(W / 8))`` blocks, the shape of
``gigacount_lib.data.density.block_count_maps(points, (H, W), 8)``. A block that straddles the
image border is kept (its padded part is zeros, i.e. the mean colour).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..binning import BinConfig
from .head import CosineBinHead, CountingOutput

__all__ = ["CountingModel", "BasicBlock", "Bottleneck", "IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BasicBlock(nn.Module):
    """ResNet basic block ``in -> out``: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus a (1x1 conv-BN) shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    """ResNet bottleneck ``in -> out``: 1x1, 3x3, 1x1 convs of inner width ``width`` (BN, ReLU), residual.

    ``width=None`` is the usual ResNet ``out // 4``; CLIP-EBC's decoder uses ``width = out``
    (its ``Bottleneck`` with ``expansion=1``).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int | None = None) -> None:
        super().__init__()
        mid = max(out_channels // 4, 1) if width is None else int(width)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


def init_decoder_weights(module: nn.Module) -> None:
    """Kaiming-normal convs, unit BN, zero biases (CLIP-EBC initialises its decoder/projection this way)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CountingModel(nn.Module):
    """Base class: ``forward(images) -> CountingOutput`` around a subclass's ``forward_features``.

    Subclasses implement ``forward_features(x) -> (B, D, Hp / 8, Wp / 8)`` on a normalised, padded
    batch. Attributes: ``bin_config``, ``head`` (:class:`CosineBinHead`), ``weights_info`` (how the
    weights were chosen), ``reduction`` (8), ``pad_multiple``, ``text_tower_params``.
    ``logit_scale_init`` is the head's initial log temperature ``s`` (CLIP's ``log(1 / 0.07)``).
    """

    reduction: int = 8

    def __init__(self, bin_config: BinConfig, text_prototypes: Tensor, *, mean: Sequence[float],
                 std: Sequence[float], pad_multiple: int, weights_info: dict[str, Any] | None = None,
                 text_tower_params: int = 0, logit_scale_init: float = math.log(1 / 0.07)) -> None:
        super().__init__()
        if bin_config.reduction != self.reduction:
            raise ValueError(f"{type(self).__name__} outputs stride-8 blocks, but the bin configuration has "
                             f"reduction={bin_config.reduction}; use a BinConfig with reduction=8")
        bin_config.check_num_classes(text_prototypes.shape[0], where="text prototypes")
        self.bin_config = bin_config
        self.pad_multiple = int(pad_multiple)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.head = CosineBinHead(text_prototypes, bin_config.anchor_points, logit_scale_init=logit_scale_init)
        self.weights_info: dict[str, Any] = dict(weights_info or {})
        self.text_tower_params = int(text_tower_params)

    # -------------------------------------------------------------- input handling
    def check_images(self, images: Tensor) -> None:
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"{type(self).__name__}: expected images of shape (B, 3, H, W), got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"{type(self).__name__}: expected float images in [0, 1], got dtype {images.dtype}")

    def prepare(self, images: Tensor) -> Tensor:
        """Normalise and zero-pad ``images`` (B, 3, H, W) to ``(B, 3, Hp, Wp)``, multiples of ``pad_multiple``."""
        self.check_images(images)
        x = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        height, width = x.shape[-2:]
        m = self.pad_multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Number of output blocks for an ``H x W`` input: ``(ceil(H / 8), ceil(W / 8))``."""
        return math.ceil(height / self.reduction), math.ceil(width / self.reduction)

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: Tensor) -> CountingOutput:
        x = self.prepare(images)  # checks the input first
        h, w = self.output_size(*images.shape[-2:])
        out = self.head(self.forward_features(x))
        return CountingOutput(out.logits[..., :h, :w], out.density[..., :h, :w])

    # -------------------------------------------------------------- bookkeeping
    def parameter_summary(self) -> dict[str, int]:
        """Trainable / frozen parameters held by the module, and the (not held) frozen text tower."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return {"trainable": trainable, "frozen_in_model": frozen, "frozen_text_tower": self.text_tower_params,
                "total": trainable + frozen + self.text_tower_params}
