"""The GigaCount image encoder: ConvNeXt-Tiny truncated after stage 3, optionally with ODConv blocks.

ConvNeXt-Tiny (Liu et al., "A ConvNet for the 2020s", CVPR 2022) has a stride-4 stem and four
stages of widths 96/192/384/768 at strides 4/8/16/32. GigaCount keeps the stem and stages 1–3
(about 12.3M parameters) and drops stage 4; the paper's ablation reports that removing stage 4
lowered the UCF-QNRF MAE from 135.05 to 116.93 (150 epochs). ``keep_stage4=True`` keeps it (the
``gigacount_stage4`` ablation). The network is timm's ``convnext_tiny``; the weights can be either
of two ImageNet-1k checkpoints (``checkpoint``):

* ``"torchvision"`` (the official code: ``torchvision.models.convnext_tiny(weights=IMAGENET1K_V1)
  .features[0:6]``; 82.52% top-1 in torchvision's table), mapped onto timm's module names by
  :func:`torchvision_to_timm_convnext`;
* ``"timm"`` (``convnext_tiny.fb_in1k``, 82.1% top-1 in timm's table), a different checkpoint.

Stochastic depth (``drop_path_rate``) follows torchvision's schedule, which timm's equals: the drop
probability rises linearly from 0 to the rate over all 18 blocks of the full network, so the last
block of stage 3 drops with ``0.1 * 14 / 17 ≈ 0.082`` at torchvision's default rate of 0.1.

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
  effective kernel is about 1/4 of the pretrained one; training has to recover the scale.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

import torch
from torch import Tensor, nn

from ..utils import get_logger
from .odconv import ODConv2d
from .pretrained import WeightsFileError, resolve_timm_weights, resolve_torchvision_convnext_weights

__all__ = ["TruncatedConvNeXt", "convert_blocks_to_odconv", "torchvision_to_timm_convnext", "DEFAULT_CONVNEXT",
           "CHECKPOINTS"]

log = get_logger("models.encoder")

DEFAULT_CONVNEXT = "convnext_tiny.fb_in1k"
CHECKPOINTS = ("torchvision", "timm")

# torchvision ``features.<i>`` index -> timm features_only module, for the stem, downsamplers and stages
_TV_STAGE = {1: 0, 3: 1, 5: 2, 7: 3}
_TV_DOWNSAMPLE = {2: 1, 4: 2, 6: 3}
_TV_BLOCK_PART = {"0": "conv_dw", "2": "norm", "3": "mlp.fc1", "5": "mlp.fc2"}


def torchvision_to_timm_convnext(state_dict: Mapping[str, Tensor], num_stages: int = 3) -> dict[str, Tensor]:
    """Rename torchvision ConvNeXt weights (``features.*`` or bare ``<i>.*`` keys) to timm's ``features_only`` names.

    torchvision's block is ``layer_scale (C, 1, 1) * Sequential(dwconv, permute, LayerNorm, Linear,
    GELU, Linear, permute)``; timm's is the same computation with ``gamma (C,)``, ``conv_dw``,
    ``norm``, ``mlp.fc1``, ``mlp.fc2``. Keys of stages beyond ``num_stages`` and of the classifier are
    dropped.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("features."):] if key.startswith("features.") else key
        m = re.fullmatch(r"(\d+)\.(.+)", key)
        if m is None:
            continue  # classifier / avgpool
        index, rest = int(m.group(1)), m.group(2)
        if index == 0:
            out[f"stem_{rest}"] = value
        elif index in _TV_DOWNSAMPLE and _TV_DOWNSAMPLE[index] < num_stages:
            out[f"stages_{_TV_DOWNSAMPLE[index]}.downsample.{rest}"] = value
        elif index in _TV_STAGE and _TV_STAGE[index] < num_stages:
            b = re.fullmatch(r"(\d+)\.(layer_scale|block\.(\d)\.(weight|bias))", rest)
            if b is None:
                raise KeyError(f"unexpected torchvision ConvNeXt key {key!r}")
            prefix = f"stages_{_TV_STAGE[index]}.blocks.{b.group(1)}"
            if b.group(2) == "layer_scale":
                out[f"{prefix}.gamma"] = value.reshape(-1)
            else:
                out[f"{prefix}.{_TV_BLOCK_PART[b.group(3)]}.{b.group(4)}"] = value
    return out


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


def _load_checkpoint(path: str) -> dict[str, Tensor]:
    """The state dict in a ``.safetensors`` or ``torch.save`` file; :class:`WeightsFileError` names the
    file when it cannot be read or is not a dict of tensors."""
    hint = ("re-download it, or pass the ConvNeXt checkpoint itself (torchvision's convnext_tiny-983f1562.pth "
            "or timm's model.safetensors)")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            blob = load_file(path)
        else:
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - torch/pickle/safetensors raise many types for a damaged file
        detail = " ".join(str(exc).split())[:200] or "empty or truncated"
        if "Weights only load failed" in detail:  # torch's advice to unpickle arbitrary objects does not apply
            detail = "neither a torch.save zip archive nor a pickle of tensors"
        raise WeightsFileError(f"{path}: cannot read the weights file ({type(exc).__name__}: {detail}); it is "
                               f"damaged or not a PyTorch checkpoint: {hint}") from exc
    state = blob.get("state_dict", blob.get("model", blob)) if isinstance(blob, dict) else blob
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise WeightsFileError(f"{path}: not a state dict (a mapping of names to tensors), got "
                               f"{type(state).__name__}; {hint}")
    return dict(state)


class TruncatedConvNeXt(nn.Module):
    """ConvNeXt (timm ``features_only``) cut after stage 3 (or 4): the maps of stages 1–3 (or 1–4).

    Args:
        keep_stage4: also build and return stage 4 (768 ch, stride 32).
        block_type: ``"convnext"`` (official code) or ``"odconv"`` (paper text); see the module docstring.
        pretrained: load ImageNet weights; False = random init.
        weights_file: a local checkpoint to load instead of downloading one (implies ``pretrained``);
            torchvision (``features.*``) and timm key layouts are both recognised.
        timm_name: timm architecture (and, for ``checkpoint="timm"``, weights tag).
        checkpoint: ``"torchvision"`` or ``"timm"`` ImageNet weights (see the module docstring);
            ``"torchvision"`` exists for ConvNeXt-Tiny only.
        drop_path_rate: stochastic depth at the last block of the full network (0.1 in torchvision).
        odconv_kernel_num: candidate kernels of the ODConv blocks (``block_type="odconv"``).
        ls_init_value: initial layer scale of every ConvNeXt block, ``None`` = timm's 1e-6. Only
            random init uses it (loaded weights bring their own); a larger value (e.g. 1.0) lets
            the residual branches act from the first step, which short runs from scratch need.

    ``forward(x (B, 3, H, W))`` returns a list of maps ``(B, C_i, H / r_i, W / r_i)`` with
    ``C = 96, 192, 384[, 768]`` and ``r = 4, 8, 16[, 32]`` for ConvNeXt-Tiny (H, W multiples of ``max(r)``).
    """

    def __init__(self, keep_stage4: bool = False, block_type: str = "convnext", pretrained: bool = False,
                 weights_file: str | os.PathLike | None = None, timm_name: str = DEFAULT_CONVNEXT,
                 checkpoint: str = "torchvision", drop_path_rate: float = 0.0, odconv_kernel_num: int = 4,
                 ls_init_value: float | None = None) -> None:
        super().__init__()
        import timm

        if block_type not in ("convnext", "odconv"):
            raise ValueError(f"block_type must be 'convnext' or 'odconv', got {block_type!r}")
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        num_stages = 4 if keep_stage4 else 3
        kwargs: dict = dict(features_only=True, out_indices=tuple(range(num_stages)), drop_path_rate=drop_path_rate)
        load = pretrained or weights_file is not None
        if ls_init_value is not None:
            if load:
                raise ValueError("ls_init_value applies to random init only; pretrained weights set the layer scales")
            if not ls_init_value > 0:
                raise ValueError(f"ls_init_value must be > 0, got {ls_init_value}")
            kwargs["ls_init_value"] = float(ls_init_value)
        if load and checkpoint == "torchvision" and not timm_name.startswith("convnext_tiny"):
            raise ValueError(f"checkpoint='torchvision' holds ConvNeXt-Tiny weights; timm_name={timm_name!r} "
                             "needs checkpoint='timm'")
        if weights_file is not None or (load and checkpoint == "torchvision"):
            if weights_file is not None:
                file, source = resolve_timm_weights(timm_name, weights_file)
            else:
                file, source = resolve_torchvision_convnext_weights()
            state = _load_checkpoint(file)  # before building: an unreadable file fails at once
            self.backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
            checkpoint = self._load_state_dict(state, num_stages, file)
        elif load:  # timm downloads (or reads its cache) itself
            _, source = resolve_timm_weights(timm_name)
            self.backbone = timm.create_model(timm_name, pretrained=True, **kwargs)
        else:
            self.backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
            source = "random"
        self.weights_source = source
        self.checkpoint = checkpoint if load else None
        self.block_type = block_type
        self.keep_stage4 = keep_stage4
        self.drop_path_rate = float(drop_path_rate)
        self.ls_init_value = ls_init_value
        self.num_odconv_blocks = convert_blocks_to_odconv(self.backbone, odconv_kernel_num) \
            if block_type == "odconv" else 0
        self.channels: list[int] = list(self.backbone.feature_info.channels())
        self.reductions: list[int] = list(self.backbone.feature_info.reduction())

    def _load_state_dict(self, state: Mapping[str, Tensor], num_stages: int, path: str) -> str:
        """Load torchvision (``features.*``) or timm (``stem.0.*``, ``stages.0.*``) weights; return which."""
        if any(k.startswith("features.") or re.match(r"\d+\.", k) for k in state):
            try:
                layout, state = "torchvision", torchvision_to_timm_convnext(state, num_stages)
            except KeyError as exc:
                raise WeightsFileError(f"{path}: not a ConvNeXt checkpoint ({exc.args[0]}); pass torchvision's "
                                       "convnext_tiny weights or timm's") from exc
        else:
            layout = "timm"
            state = {re.sub(r"^(stem|stages)\.(\d+)", r"\1_\2", k): v for k, v in state.items()}
        own = self.backbone.state_dict()
        state = {k: v for k, v in state.items() if k in own}
        missing = sorted(set(own) - set(state))
        if missing:
            raise WeightsFileError(f"{path}: not a checkpoint of this {len(own)}-tensor ConvNeXt backbone: "
                                   f"{len(missing)} weights missing (e.g. {missing[:3]}); pass the weights of "
                                   "the model named by timm_name")
        try:
            self.backbone.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsFileError(f"{path}: weights do not fit this ConvNeXt ({exc}); pass the weights of the "
                                   "model named by timm_name") from exc
        return layout

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.backbone(x))
