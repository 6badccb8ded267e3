"""The GigaCount image encoder: ConvNeXt-Tiny (timm) truncated after stage 3, optionally with ODConv blocks.

ConvNeXt-Tiny (Liu et al., "A ConvNet for the 2020s", CVPR 2022) has a stride-4 stem and four
stages of widths 96/192/384/768 at strides 4/8/16/32. GigaCount keeps the stem and stages 1–3
(about 12.3M parameters) and drops stage 4; the paper's ablation reports that removing stage 4
lowered the UCF-QNRF MAE from 135.05 to 116.93 (150 epochs). ``keep_stage4=True`` keeps it (the
``gigacount_stage4`` ablation).

Paper vs. code (the ``block_type`` option):

* ``"convnext"`` (default, the official code, which produced the paper's numbers): the encoder is
  the plain ConvNeXt; ODConv appears only in the per-scale attention blocks
  (:mod:`gigacount_lib.models.attention`).
* ``"odconv"`` (the paper's text, "the ConvNeXt blocks are replaced by ODConv blocks"): each
  ConvNeXt block keeps its LayerNorm / MLP / layer-scale / residual, but its depthwise 7x7 conv
  becomes a depthwise 7x7 :class:`~gigacount_lib.models.odconv.ODConv2d` with 4 candidate kernels.
  The text does not say what an "ODConv block" contains; this is our reading, chosen because it
  keeps the block's shape and lets all four candidates start from the (pretrained) depthwise kernel.
  The converted block does *not* start as the pretrained block: the channel and spatial attentions
  are sigmoids near 0.5 at initialisation (a depthwise ODConv has no filter attention), so the
  effective kernel is about 1/4 of the pretrained one (0.19-0.30 times, measured on random input);
  training has to recover the scale.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from ..utils import get_logger
from .odconv import ODConv2d
from .pretrained import resolve_timm_weights

__all__ = ["ModifiedConvNeXt", "convert_blocks_to_odconv", "DEFAULT_CONVNEXT"]

log = get_logger("models.encoder")

DEFAULT_CONVNEXT = "convnext_tiny.fb_in1k"  # ImageNet-1k weights (as torchvision's convnext_tiny)


def convert_blocks_to_odconv(model: nn.Module, kernel_num: int = 4) -> int:
    """Replace the depthwise ``conv_dw`` of every timm ``ConvNeXtBlock`` in ``model`` by a depthwise ODConv.

    The candidates are initialised from the existing kernel and the bias is copied (the attentions
    still scale the kernel by about 1/4 at first; see the module docstring). Returns the number of
    blocks converted.
    """
    from timm.models.convnext import ConvNeXtBlock

    converted = 0
    for module in model.modules():
        if isinstance(module, ConvNeXtBlock) and isinstance(module.conv_dw, nn.Conv2d):
            conv = module.conv_dw
            k = conv.kernel_size[0]
            od = ODConv2d(conv.in_channels, conv.out_channels, k, stride=conv.stride[0], padding=conv.padding[0],
                          dilation=conv.dilation[0], groups=conv.groups, kernel_num=kernel_num,
                          bias=conv.bias is not None)
            with torch.no_grad():
                od.weight.copy_(conv.weight.detach().unsqueeze(0).expand_as(od.weight))
                if conv.bias is not None:
                    od.bias.copy_(conv.bias.detach())
            module.conv_dw = od
            converted += 1
    return converted


class ModifiedConvNeXt(nn.Module):
    """ConvNeXt-Tiny feature extractor (timm ``features_only``) returning the maps of stages 1–3 (or 1–4).

    Args:
        keep_stage4: also build and return stage 4 (768 ch, stride 32).
        block_type: ``"convnext"`` (official code) or ``"odconv"`` (paper text); see the module docstring.
        pretrained: load ImageNet weights (``timm_name``); False = random init.
        weights_file: a local timm checkpoint to load instead of the hub's (implies ``pretrained``).
        timm_name: timm model name with tag.

    ``forward(x (B, 3, H, W))`` returns a list of maps ``(B, C_i, H / r_i, W / r_i)`` with
    ``C = 96, 192, 384[, 768]`` and ``r = 4, 8, 16[, 32]`` (H, W multiples of ``max(r)``).
    """

    def __init__(self, keep_stage4: bool = False, block_type: str = "convnext", pretrained: bool = False,
                 weights_file: str | os.PathLike | None = None, timm_name: str = DEFAULT_CONVNEXT,
                 odconv_kernel_num: int = 4) -> None:
        super().__init__()
        import timm

        if block_type not in ("convnext", "odconv"):
            raise ValueError(f"block_type must be 'convnext' or 'odconv', got {block_type!r}")
        out_indices = (0, 1, 2, 3) if keep_stage4 else (0, 1, 2)
        kwargs: dict = dict(features_only=True, out_indices=out_indices)
        if pretrained or weights_file is not None:
            file, source = resolve_timm_weights(timm_name, weights_file)
            if file is not None:
                kwargs["pretrained_cfg_overlay"] = dict(file=file)
            self.backbone = timm.create_model(timm_name, pretrained=True, **kwargs)
            self.weights_source = source
        else:
            self.backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
            self.weights_source = "random"
        self.block_type = block_type
        self.keep_stage4 = keep_stage4
        self.num_odconv_blocks = convert_blocks_to_odconv(self.backbone, odconv_kernel_num) \
            if block_type == "odconv" else 0
        self.channels: list[int] = list(self.backbone.feature_info.channels())
        self.reductions: list[int] = list(self.backbone.feature_info.reduction())

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.backbone(x))
