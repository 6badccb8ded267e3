"""CLIP-EBC baselines (Ma, Sanchez, Guha, arXiv:2403.09281) with open_clip image towers.

Both use the same head and outputs as GigaCount (:class:`~gigacount_lib.models.head.CosineBinHead`,
stride-8 blocks), following the CLIP-EBC recipe for reduction 8:

* ``clip_ebc_resnet50``: CLIP's modified ResNet-50 without its attention pool; the first block of
  ``layer4`` loses its 2x2 average pools (weights unchanged), so the 2048-channel map is at
  stride 16. It is upsampled x2 (bilinear) to stride 8, decoded by a bottleneck block
  (2048 -> 2048 with inner width 2048, as CLIP-EBC's ``Bottleneck(..., expansion=1)`` in
  ``models/utils.py``: 46M parameters, not the 4.5M of a ResNet-style width 512) and projected
  (1x1) to the RN50 CLIP width 1024. The image tower is fine-tuned.
* ``clip_ebc_vit_b16``: CLIP's ViT-B/16 patch tokens (768 channels, stride 16) after ``ln_post``;
  the position embeddings are interpolated (bicubic) to the input's patch grid, so any multiple of
  16 works. As in CLIP-EBC the tower is frozen and tuned by deep visual prompt tuning (``num_vpt``
  learnable tokens per layer, Jia et al., ECCV 2022). Then x2 bilinear upsampling, a BasicBlock
  (768 -> 768) and a 1x1 projection to the ViT-B/16 CLIP width 512.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..binning import BinConfig
from .base import CLIP_MEAN, CLIP_STD, BasicBlock, Bottleneck, CountingModel, init_decoder_weights

__all__ = ["CLIPResNetFeatures", "CLIPViTFeatures", "CLIPEBC"]


class CLIPResNetFeatures(nn.Module):
    """Dense stride-16 features ``(B, 2048, H/16, W/16)`` from an open_clip ``ModifiedResNet``."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        first = visual.layer4[0]
        first.avgpool = nn.Identity()
        if first.downsample is not None:
            first.downsample[0] = nn.Identity()  # the "-1" AvgPool2d of the shortcut
        first.stride = 1
        self.visual = visual
        self.visual.attnpool = nn.Identity()  # unused, dropped from the parameters
        self.channels, self.stride = visual.layer4[-1].conv3.out_channels, 16

    def forward(self, x: Tensor) -> Tensor:
        v = self.visual
        x = v.stem(x.to(v.conv1.weight.dtype))
        return v.layer4(v.layer3(v.layer2(v.layer1(x))))


class CLIPViTFeatures(nn.Module):
    """Dense stride-16 patch features ``(B, 768, H/16, W/16)`` from an open_clip ViT, with deep VPT.

    Args:
        visual: open_clip ``VisionTransformer``.
        num_vpt: prompt tokens per layer (0 disables VPT).
        deep_vpt: new prompts at every layer (True) or only before the first (False).
        vpt_drop: dropout on the prompts.
        freeze: freeze the pretrained tower (prompts stay trainable).
    """

    def __init__(self, visual: nn.Module, num_vpt: int = 32, deep_vpt: bool = True, vpt_drop: float = 0.0,
                 freeze: bool = True) -> None:
        super().__init__()
        self.visual = visual
        self.visual.proj = None  # dense features are taken before the pooled projection
        self.patch = int(visual.patch_size[0])
        self.width = int(visual.conv1.out_channels)
        self.grid = tuple(int(g) for g in visual.grid_size)
        self.depth = len(visual.transformer.resblocks)
        # The blocks run on sequence-first (L, B, D) tokens. Batch-first attention transposes its input
        # to (L, B, D) itself, and the in-projection of that strided view falls off PyTorch's CPU matmul
        # fast path under bfloat16 autocast (a 229 x 768 x 2304 weight copy per layer, 2.7x slower
        # training steps in benchmarks/bench_step.py). Every other op of a block is per token.
        for block in visual.transformer.resblocks:
            block.attn.batch_first = False
        self.channels, self.stride = self.width, self.patch
        if freeze:
            for p in self.visual.parameters():
                p.requires_grad_(False)
        self.num_vpt, self.deep_vpt = int(num_vpt), bool(deep_vpt)
        n_layers = (self.depth if deep_vpt else 1) if num_vpt > 0 else 0
        # Uniform init of the prompts in +-sqrt(6 / (3 p + width)), as CLIP-EBC's models/clip/model.py
        # (patch side p). The VPT code (Jia et al.) uses the patch area, 3 p^2, i.e. a bound 1.4x smaller
        # for ViT-B/16; we follow CLIP-EBC, whose baseline this is.
        bound = math.sqrt(6.0 / float(3 * self.patch + self.width))
        self.vpt = nn.ParameterList([nn.Parameter(torch.empty(num_vpt, self.width).uniform_(-bound, bound))
                                     for _ in range(n_layers)])
        self.vpt_drop = nn.Dropout(vpt_drop) if vpt_drop > 0 else nn.Identity()

    def position_embedding(self, grid_h: int, grid_w: int) -> Tensor:
        """``(1 + gh * gw, width)`` position embeddings, bicubically resized from the pretraining grid."""
        pos = self.visual.positional_embedding
        if (grid_h, grid_w) == self.grid:
            return pos
        cls, patches = pos[:1], pos[1:]
        patches = patches.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)], dim=0)

    def forward(self, x: Tensor) -> Tensor:
        v = self.visual
        tokens = v.conv1(x)  # (B, width, gh, gw)
        batch, _, gh, gw = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(tokens.dtype).expand(batch, 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.position_embedding(gh, gw).to(tokens.dtype)
        tokens = v.ln_pre(tokens)
        tokens = tokens.transpose(0, 1).contiguous()  # (L, B, width), see __init__
        n = self.num_vpt
        # deep VPT: fresh prompts before every layer, removed after it; shallow VPT: prompts inserted
        # before the first layer travel through all layers and are removed after the last one.
        for i, block in enumerate(v.transformer.resblocks):
            if n and (self.deep_vpt or i == 0):
                prompts = self.vpt_drop(self.vpt[i]).unsqueeze(1).expand(-1, batch, -1).to(tokens.dtype)
                tokens = torch.cat([tokens[:1], prompts, tokens[1:]], dim=0)
            tokens = block(tokens)
            if n and (self.deep_vpt or i == self.depth - 1):
                tokens = torch.cat([tokens[:1], tokens[1 + n:]], dim=0)
        tokens = v.ln_post(tokens)[1:]  # (gh * gw, B, width)
        return tokens.permute(1, 2, 0).reshape(batch, self.width, gh, gw)


class CLIPEBC(CountingModel):
    """CLIP-EBC: CLIP image tower -> stride 8 -> decoder -> projection -> cosine head.

    Args:
        bin_config, text_prototypes: as :class:`~gigacount_lib.models.gigacount.GigaCount`.
        features: :class:`CLIPResNetFeatures` or :class:`CLIPViTFeatures` (stride 16).
        decoder: ``"bottleneck"`` (RN50) or ``"basic"`` (ViT); width = the feature width.
    """

    def __init__(self, bin_config: BinConfig, text_prototypes: Tensor, features: nn.Module, decoder: str,
                 weights_info: dict[str, Any] | None = None, text_tower_params: int = 0) -> None:
        super().__init__(bin_config, text_prototypes, mean=CLIP_MEAN, std=CLIP_STD, pad_multiple=features.stride,
                         weights_info=weights_info, text_tower_params=text_tower_params)
        self.features = features
        c = features.channels
        if decoder == "bottleneck":
            self.decoder = Bottleneck(c, c, width=c)
        elif decoder == "basic":
            self.decoder = BasicBlock(c, c)
        else:
            raise ValueError(f"CLIPEBC: decoder must be 'bottleneck' or 'basic', got {decoder!r}")
        self.projection = nn.Conv2d(c, self.head.embed_dim, kernel_size=1)
        init_decoder_weights(self.decoder)
        init_decoder_weights(self.projection)

    def forward_features(self, x: Tensor) -> Tensor:
        f = self.features(x)
        f = F.interpolate(f, scale_factor=self.features.stride / self.reduction, mode="bilinear",
                          align_corners=False)
        return self.projection(self.decoder(f))
