"""Counting models: GigaCount (ConvNeXt + ODConv attention + multi-scale fusion) and CLIP-EBC baselines.

Public API::

    from gigacount_lib.models import build_model, list_models, CountingOutput
    model = build_model("gigacount", BinConfig.gigacount_qnrf(), pretrained=None)  # random init, offline
    out = model(images)            # images (B, 3, H, W) in [0, 1]
    out.logits, out.density        # (B, K, ceil(H/8), ceil(W/8)), (B, 1, ceil(H/8), ceil(W/8))
    model.weights_info             # what was loaded (record it in checkpoints / manifests)
"""
from .attention import ChannelAttention, ScaleAttentionBlock, SpatialAttention
from .base import CountingModel
from .clip_ebc import CLIPEBC, CLIPResNetFeatures, CLIPViTFeatures
from .encoder import TruncatedConvNeXt
from .fusion import MultiScaleFusion
from .gigacount import GigaCount
from .head import CosineBinHead, CountingOutput, bin_prompts, format_count_prompt
from .odconv import ODAttention, ODConv2d
from .pretrained import PretrainedWeightsUnavailable, compute_text_prototypes
from .registry import build_model, list_models, register_model

__all__ = [
    "build_model", "list_models", "register_model", "CountingOutput", "CountingModel", "GigaCount", "CLIPEBC",
    "CLIPResNetFeatures", "CLIPViTFeatures", "TruncatedConvNeXt", "MultiScaleFusion", "ScaleAttentionBlock",
    "ChannelAttention", "SpatialAttention", "ODConv2d", "ODAttention", "CosineBinHead", "bin_prompts",
    "format_count_prompt", "PretrainedWeightsUnavailable", "compute_text_prototypes",
]
