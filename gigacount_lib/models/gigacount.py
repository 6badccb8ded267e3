"""GigaCount: CLIP-EBC with a truncated ConvNeXt-Tiny encoder and multi-scale attention fusion.

Pipeline (shapes for a 224 x 224 input, default configuration)::

    image (B, 3, 224, 224) in [0, 1] -> normalise (ImageNet mean/std), pad to a multiple of 32
    ConvNeXt-Tiny stem + stages 1-3        (B, 96, 56, 56)  (B, 192, 28, 28)  (B, 384, 14, 14)
    attention block per scale ("ccsm")     (B, 16, 56, 56)  (B, 32, 28, 28)   (B, 64, 14, 14)
    transposed convs to stride 4, concat   (B, 112, 56, 56)
    2x2 average pool to stride 8           (B, 112, 28, 28)
    BasicBlock 112 -> 768                  (B, 768, 28, 28)
    1x1 projection to the CLIP width D     (B, D, 28, 28)       D = 512 (ViT-B/16 text, default) or 1024 (RN50)
    cosine head vs. K text prototypes      logits (B, K, 28, 28), density (B, 1, 28, 28)

See :mod:`.encoder` (ConvNeXt, stage 4, the paper-vs-code ODConv discrepancy), :mod:`.attention`
(the FFNet attention block with ODConv), :mod:`.fusion` and :mod:`.head`.

Variants (built by :func:`gigacount_lib.models.build_model`):

* ``gigacount``: the above (the official code's architecture).
* ``gigacount_stage4``: stage 4 kept; its 768-channel stride-32 map gets its own attention block
  (768 -> 384 -> 128, continuing the halving pattern; our choice) and a k8 s8 transposed conv, so the
  fused map has 16 + 32 + 64 + 128 = 240 channels.
* ``gigacount_odconv_blocks``: the paper-text encoder (ODConv inside every ConvNeXt block).
* ``gigacount_no_fusion``: only the deepest (stride-16) attention output, upsampled like in the
  fusion (k4 s4, then 2x2 pool): 64 channels into the decoder.
* ``gigacount_atto``: a CPU compromise, not a paper model: the same structure on timm's
  ConvNeXt-Atto (40/80/160 channels) with a 256-wide decoder.
* ``gigacount_vgg``: a CPU compromise, not a paper model: the same attention blocks, fusion, 256-wide
  decoder and head on a small VGG-style encoder (:mod:`.vgg`, random init only), which learns faster
  from scratch on 2 cores than ConvNeXt does (``benchmarks/cpu_bottleneck.py``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from torch import Tensor, nn

from ..binning import BinConfig
from .attention import ScaleAttentionBlock
from .base import IMAGENET_MEAN, IMAGENET_STD, BasicBlock, CountingModel, init_decoder_weights
from .encoder import TruncatedConvNeXt
from .fusion import MultiScaleFusion

__all__ = ["GigaCount", "ATTENTION_WIDTHS", "attention_widths"]

def attention_widths(channels: int) -> tuple[int, int, int]:
    """(in, hidden, out) widths of the attention block on a ``channels``-wide map: ``(C, C/2, C/6)``.

    For ConvNeXt-Tiny this is the official 96/48/16, 192/96/32, 384/192/64; the stage-4 block
    (768/384/128) and narrower encoders follow the same ratios (our extrapolation).
    """
    return channels, channels // 2, max(channels // 6, 4)


ATTENTION_WIDTHS = tuple(attention_widths(c) for c in (96, 192, 384, 768))


class GigaCount(CountingModel):
    """The GigaCount counting model (see the module docstring).

    Args:
        bin_config: bins and anchors (reduction 8).
        text_prototypes: ``(K, D)`` CLIP text embeddings of the bin prompts.
        encoder: a :class:`TruncatedConvNeXt`, or any module with its ``channels`` / ``reductions``
            lists that returns one map per stride (:class:`~gigacount_lib.models.vgg.VGGPyramid`).
        scales: indices of the encoder maps that are fused (``(0, 1, 2)``; ``(2,)`` = no fusion).
        decoder_channels: width of the BasicBlock decoder (768).
        kernel_num: ODConv candidate kernels in the attention blocks (4).
        weights_info, text_tower_params: bookkeeping (see :class:`CountingModel`).
        logit_scale_init: the cosine head's initial ``s`` (``log(1 / 0.07)``, CLIP's).
        attention_out: output widths of the attention blocks, one per fused scale; ``None`` = ``C / 6``
            of each encoder map (:func:`attention_widths`: the official 16/32/64 on ConvNeXt-Tiny).
    """

    def __init__(self, bin_config: BinConfig, text_prototypes: Tensor, encoder: TruncatedConvNeXt | nn.Module,
                 scales: Sequence[int] = (0, 1, 2), decoder_channels: int = 768, kernel_num: int = 4,
                 weights_info: dict[str, Any] | None = None, text_tower_params: int = 0,
                 logit_scale_init: float = math.log(1 / 0.07),
                 attention_out: Sequence[int] | None = None) -> None:
        super().__init__(bin_config, text_prototypes, mean=IMAGENET_MEAN, std=IMAGENET_STD, pad_multiple=32,
                         weights_info=weights_info, text_tower_params=text_tower_params,
                         logit_scale_init=logit_scale_init)
        self.encoder = encoder
        self.scales = tuple(int(s) for s in scales)
        if not self.scales or any(s < 0 or s >= len(encoder.channels) for s in self.scales):
            raise ValueError(f"GigaCount: scales {scales} must index the encoder's {len(encoder.channels)} maps")
        widths = [attention_widths(encoder.channels[s]) for s in self.scales]
        if attention_out is not None:
            if len(attention_out) != len(widths):
                raise ValueError(f"GigaCount: attention_out {tuple(attention_out)} needs one width per fused "
                                 f"scale ({len(widths)})")
            widths = [(c, h, int(o)) for (c, h, _), o in zip(widths, attention_out)]
        self.attention = nn.ModuleList(ScaleAttentionBlock(*w, kernel_num=kernel_num) for w in widths)
        self.fusion = MultiScaleFusion([w[2] for w in widths],
                                       [encoder.reductions[s] for s in self.scales], out_stride=8)
        self.decoder = BasicBlock(self.fusion.out_channels, decoder_channels)
        self.projection = nn.Conv2d(decoder_channels, self.head.embed_dim, kernel_size=1)
        init_decoder_weights(self.fusion)
        init_decoder_weights(self.decoder)
        init_decoder_weights(self.projection)

    def forward_intermediates(self, x: Tensor) -> dict[str, Any]:
        """Every intermediate of ``forward_features`` on a prepared batch (for inspection / the notebook).

        Keys: ``encoder`` (list of maps), ``attended`` (list), ``channel_attention`` (list of
        ``(B, C, 1, 1)``), ``spatial_attention`` (list of ``(B, 1, h, w)``), ``odconv_attention``
        (per scale, the four ODConvs' :class:`~gigacount_lib.models.odconv.ODAttention`),
        ``fused_stride4``, ``fused``, ``decoded``, ``features``.
        """
        feats = self.encoder(x)
        attended, channel_maps, spatial_maps, odconv_maps = [], [], [], []
        for block, s in zip(self.attention, self.scales):
            y, maps = block.forward_with_maps(feats[s])
            attended.append(y)
            channel_maps.append(maps["channel"])
            spatial_maps.append(maps["spatial"])
            odconv_maps.append(maps["odconv"])
        fused4 = self.fusion.forward_stride4(attended)
        fused = self.fusion.to_output_stride(fused4)
        decoded = self.decoder(fused)
        return {"encoder": feats, "attended": attended, "channel_attention": channel_maps,
                "spatial_attention": spatial_maps, "odconv_attention": odconv_maps, "fused_stride4": fused4, "fused": fused,
                "decoded": decoded, "features": self.projection(decoded)}

    def forward_features(self, x: Tensor) -> Tensor:
        feats = self.encoder(x)
        attended = [block(feats[s]) for block, s in zip(self.attention, self.scales)]
        return self.projection(self.decoder(self.fusion(attended)))
