"""Model registry and builder (timm-style): ``build_model(name, bin_config, pretrained=...)``.

Pretrained choices (see :mod:`gigacount_lib.models.pretrained` for the policy):

* ``pretrained=True`` (default): published weights for the image encoder (torchvision's ImageNet-1k
  ConvNeXt-Tiny for GigaCount, OpenAI CLIP for the baselines) and the text tower (OpenAI CLIP). Unavailable
  weights raise :class:`PretrainedWeightsUnavailable` within seconds.
* ``pretrained=None`` or ``False``: random init of both; logged and recorded.
* ``image_pretrained=`` / ``text_pretrained=`` override the choice for one part;
  ``image_weights=`` / ``text_weights=`` take local files (and imply pretrained for that part).

Every model carries ``model.weights_info`` (JSON-ready) describing what was loaded, so checkpoints
and run manifests can record it, and ``model.bin_config``.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import torch

from ..binning import BinConfig
from ..utils import get_logger
from .clip_ebc import CLIPEBC, CLIPResNetFeatures, CLIPViTFeatures
from .encoder import DEFAULT_CONVNEXT, TruncatedConvNeXt
from .gigacount import GigaCount
from .head import bin_prompts
from .pretrained import build_clip_visual, compute_text_prototypes, resolve_clip_weights

__all__ = ["register_model", "list_models", "build_model", "resolve_pretrained_flags"]

log = get_logger("models")

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: register a builder ``fn(bin_config, image_pretrained, text_pretrained, **kw)`` by its name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


def resolve_pretrained_flags(pretrained: Any, image_pretrained: bool | None, text_pretrained: bool | None,
                             image_weights: Any, text_weights: Any) -> tuple[bool, bool]:
    """Combine the global ``pretrained`` switch with the per-part flags and local files."""
    if pretrained not in (True, False, None):
        raise ValueError(f"pretrained must be True, False or None, got {pretrained!r}; "
                         "pass local files with image_weights=/text_weights=")
    image = bool(pretrained) if image_pretrained is None else bool(image_pretrained)
    text = bool(pretrained) if text_pretrained is None else bool(text_pretrained)
    return image or image_weights is not None, text or text_weights is not None


def build_model(name: str, bin_config: BinConfig | None = None, pretrained: bool | None = True, *,
                image_pretrained: bool | None = None, text_pretrained: bool | None = None,
                image_weights: str | os.PathLike | None = None, text_weights: str | os.PathLike | None = None,
                prompt_style: str = "word", **kwargs: Any):
    """Build a registered counting model.

    Args:
        name: one of :func:`list_models`.
        bin_config: bins/anchors (reduction 8); ``None`` = ``BinConfig.gigacount_qnrf()``.
        pretrained: True (published weights), None/False (random init; explicit and recorded).
        image_pretrained, text_pretrained: per-part overrides of ``pretrained``.
        image_weights, text_weights: local weight files (timm checkpoint / open_clip CLIP checkpoint).
        prompt_style: ``"word"`` or ``"number"`` bin prompts.
        **kwargs: builder options, e.g. for GigaCount ``clip_model`` (``"ViT-B-16"``, default, or
            ``"RN50"``), ``image_checkpoint`` (``"torchvision"``, default, or ``"timm"``),
            ``drop_path_rate`` (0.1), ``timm_name``; ``num_vpt`` for the ViT baseline.

    Returns the model, with ``bin_config`` and ``weights_info`` attributes.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if bin_config is None:
        bin_config = BinConfig.gigacount_qnrf()
    image_pre, text_pre = resolve_pretrained_flags(pretrained, image_pretrained, text_pretrained,
                                                   image_weights, text_weights)
    for part, flag in (("image encoder", image_pre), ("text tower", text_pre)):
        if not flag:
            log.info("%s: %s uses RANDOM initialisation (explicitly requested)", name, part)
    model = _REGISTRY[name](bin_config, image_pre, text_pre, image_weights=image_weights,
                            text_weights=text_weights, prompt_style=prompt_style, **kwargs)
    model.weights_info = {"model": name, "pretrained_arg": repr(pretrained), **model.weights_info}
    model.model_name = name
    return model


def orthogonal_prototypes(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """``(K, D)`` orthonormal rows (QR of a seeded Gaussian matrix): equidistant class directions.

    For random-init runs (no CLIP weights): the prototypes of a random text tower are nearly collinear
    (pairwise cosines 0.73-0.96 for the five QNRF bins), so the cosine head starts with classes that
    are hard to tell apart. A CPU compromise for the search, not part of GigaCount.
    """
    if num_classes > dim:
        raise ValueError(f"orthogonal_prototypes: {num_classes} classes need at most {dim} dimensions")
    gauss = torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(gauss)
    return q.T.contiguous().float()


def _text(clip_model: str, bin_config: BinConfig, text_pre: bool, text_weights, prompt_style: str):
    prompts = bin_prompts(bin_config, prompt_style)
    protos, info = compute_text_prototypes(clip_model, prompts, pretrained=text_pre, weights_path=text_weights)
    info["prompt_style"] = prompt_style
    return protos, info


def _gigacount(bin_config: BinConfig, image_pre: bool, text_pre: bool, *, image_weights=None, text_weights=None,
               prompt_style: str = "word", clip_model: str = "ViT-B-16", keep_stage4: bool = False,
               block_type: str = "convnext", scales: tuple[int, ...] | None = None,
               timm_name: str = DEFAULT_CONVNEXT, image_checkpoint: str = "torchvision", drop_path_rate: float = 0.1,
               kernel_num: int = 4, decoder_channels: int = 768, ls_init_value: float | None = None,
               logit_scale_init: float | None = None,
               attention_out: tuple[int, ...] | None = None, prototypes: str = "clip") -> GigaCount:
    """GigaCount builder. Defaults are the official code's: ViT-B/16 text tower (512-d prototypes),
    torchvision's ConvNeXt-Tiny ImageNet weights, stochastic depth 0.1 (torchvision's default);
    ``clip_model="RN50"`` gives the 1024-d text tower of the March 2025 code and the README.
    ``prototypes="orthogonal"`` replaces the text prototypes by orthonormal vectors (not the paper; see
    :func:`orthogonal_prototypes`)."""
    protos, text_info = _text(clip_model, bin_config, text_pre, text_weights, prompt_style)
    if prototypes == "orthogonal":
        protos = orthogonal_prototypes(protos.shape[0], protos.shape[1]).to(protos.dtype)
        text_info = {**text_info, "prototypes": "orthogonal (seeded QR, the text tower's output unused)"}
    elif prototypes != "clip":
        raise ValueError(f"prototypes must be 'clip' or 'orthogonal', got {prototypes!r}")
    encoder = TruncatedConvNeXt(keep_stage4=keep_stage4, block_type=block_type, pretrained=image_pre,
                                weights_file=image_weights, timm_name=timm_name, checkpoint=image_checkpoint,
                                drop_path_rate=drop_path_rate, odconv_kernel_num=kernel_num,
                                ls_init_value=ls_init_value)
    if scales is None:
        scales = tuple(range(len(encoder.channels)))
    info = {"image": {"encoder": timm_name, "source": encoder.weights_source,
                      "random_init": encoder.weights_source == "random", "checkpoint": encoder.checkpoint,
                      "drop_path_rate": encoder.drop_path_rate, "block_type": block_type,
                      "keep_stage4": keep_stage4, "ls_init_value": ls_init_value},
            "text": text_info}
    head = {} if logit_scale_init is None else {"logit_scale_init": float(logit_scale_init)}
    info["head"] = {"logit_scale_init": head.get("logit_scale_init", "log(1/0.07)")}
    if attention_out is not None:
        info["attention_out"] = [int(o) for o in attention_out]
    return GigaCount(bin_config, protos, encoder, scales=scales, kernel_num=kernel_num,
                     decoder_channels=decoder_channels, weights_info=info,
                     text_tower_params=text_info["text_tower_params"],
                     attention_out=None if attention_out is None else tuple(attention_out), **head)


@register_model
def gigacount(bin_config, image_pre, text_pre, **kw) -> GigaCount:
    """GigaCount as in the official code: ConvNeXt-Tiny stages 1-3, ODConv attention blocks, fusion."""
    return _gigacount(bin_config, image_pre, text_pre, **kw)


@register_model
def gigacount_stage4(bin_config, image_pre, text_pre, **kw) -> GigaCount:
    """Ablation: stage 4 kept and fused too."""
    return _gigacount(bin_config, image_pre, text_pre, keep_stage4=True, **kw)


@register_model
def gigacount_odconv_blocks(bin_config, image_pre, text_pre, **kw) -> GigaCount:
    """The paper-text encoder: every ConvNeXt block's depthwise conv is an ODConv."""
    return _gigacount(bin_config, image_pre, text_pre, block_type="odconv", **kw)


@register_model
def gigacount_no_fusion(bin_config, image_pre, text_pre, **kw) -> GigaCount:
    """Ablation: only the deepest (stride-16) map, no multi-scale fusion."""
    return _gigacount(bin_config, image_pre, text_pre, scales=(2,), **kw)


@register_model
def gigacount_atto(bin_config, image_pre, text_pre, **kw) -> GigaCount:
    """CPU compromise (not a paper model): GigaCount's structure on ConvNeXt-Atto with a 256-wide decoder."""
    kw.setdefault("timm_name", "convnext_atto")
    kw.setdefault("image_checkpoint", "timm")
    kw.setdefault("decoder_channels", 256)
    return _gigacount(bin_config, image_pre, text_pre, **kw)


@register_model
def gigacount_vgg(bin_config, image_pre, text_pre, *, image_weights=None, text_weights=None, prompt_style="word",
                  clip_model: str = "ViT-B-16", width: int = 16, dilated: int = 1, decoder_channels: int = 256,
                  logit_scale_init: float | None = None, kernel_num: int = 4,
                  attention_out: tuple[int, ...] | None = None) -> GigaCount:
    """CPU compromise (not a paper model): GigaCount's attention blocks, multi-scale fusion, decoder and
    cosine text head on the small VGG-style encoder of :mod:`.vgg` (strides 4/8/16) instead of ConvNeXt.
    The image encoder has no published weights: random init only."""
    from .vgg import VGGPyramid

    if image_pre or image_weights is not None:
        raise ValueError("gigacount_vgg: its VGG-style encoder has no pretrained weights; build it with "
                         "pretrained=None (or image_pretrained=False), or use gigacount / gigacount_atto for "
                         "ImageNet weights")
    protos, text_info = _text(clip_model, bin_config, text_pre, text_weights, prompt_style)
    encoder = VGGPyramid(width, dilated=dilated)
    head = {} if logit_scale_init is None else {"logit_scale_init": float(logit_scale_init)}
    info = {"image": {"encoder": f"vgg_pyramid(width={encoder.width}, dilated={encoder.dilated})", "source": "random",
                      "random_init": True},
            "text": text_info,
            "head": {"logit_scale_init": head.get("logit_scale_init", "log(1/0.07)")}}
    if attention_out is not None:
        info["attention_out"] = [int(o) for o in attention_out]
    return GigaCount(bin_config, protos, encoder, scales=(0, 1, 2), kernel_num=kernel_num,
                     decoder_channels=decoder_channels, weights_info=info,
                     text_tower_params=text_info["text_tower_params"],
                     attention_out=None if attention_out is None else tuple(attention_out), **head)


def _clip_ebc(clip_model: str, kind: str, bin_config, image_pre, text_pre, *, image_weights=None,
              text_weights=None, prompt_style="word", **kw) -> CLIPEBC:
    if kind == "resnet" and kw:
        raise TypeError(f"clip_ebc_resnet50: unexpected options {sorted(kw)} (the ViT options such as "
                        "num_vpt belong to clip_ebc_vit_b16)")
    protos, text_info = _text(clip_model, bin_config, text_pre, text_weights, prompt_style)
    if image_pre:
        file, source = resolve_clip_weights(clip_model, "openai", image_weights, argument="image_weights")
    else:
        file, source = None, "random"
    visual = build_clip_visual(clip_model, file)
    features = CLIPResNetFeatures(visual) if kind == "resnet" else CLIPViTFeatures(visual, **kw)
    info = {"image": {"encoder": f"open_clip:{clip_model}", "source": source, "random_init": file is None},
            "text": text_info}
    if kind == "vit":
        info["image"].update(frozen=True, num_vpt=features.num_vpt, deep_vpt=features.deep_vpt)
    return CLIPEBC(bin_config, protos, features, decoder="bottleneck" if kind == "resnet" else "basic",
                   weights_info=info, text_tower_params=text_info["text_tower_params"])


@register_model
def clip_ebc_resnet50(bin_config, image_pre, text_pre, **kw) -> CLIPEBC:
    """CLIP-EBC with the CLIP ResNet-50 image tower (fine-tuned), stride 16 -> 8."""
    return _clip_ebc("RN50", "resnet", bin_config, image_pre, text_pre, **kw)


@register_model
def clip_ebc_vit_b16(bin_config, image_pre, text_pre, **kw) -> CLIPEBC:
    """CLIP-EBC with the CLIP ViT-B/16 image tower (frozen, deep VPT), stride 16 -> 8."""
    return _clip_ebc("ViT-B-16", "vit", bin_config, image_pre, text_pre, **kw)
