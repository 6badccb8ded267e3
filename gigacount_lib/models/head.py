"""The CLIP-EBC counting head: bin prompts, text prototypes, cosine-similarity logits, density.

CLIP-EBC (Ma, Sanchez, Guha, arXiv:2403.09281) turns each count bin into a sentence ("There are
three people."), embeds it once with the frozen CLIP text encoder, and classifies every output
block by the cosine similarity between its image feature and these text prototypes::

    f̂ = f / ‖f‖ per position,   t̂_k = t_k / ‖t_k‖
    logits_k = exp(s) · ⟨f̂, t̂_k⟩             s learnable, initialised to log(1 / 0.07)
    p = softmax_k(logits),   density = Σ_k p_k · anchor_k

GigaCount keeps this head unchanged. The prototypes are a (non-trainable) buffer: the text tower is
run once at construction (see :mod:`gigacount_lib.models.pretrained`), so no gradient can reach it.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..binning import BinConfig

__all__ = ["CountingOutput", "number_to_words", "format_count_prompt", "bin_prompts", "CosineBinHead"]


class CountingOutput(NamedTuple):
    """What every counting model returns.

    logits: ``(B, K, h, w)`` unnormalised bin scores per block (``h = ceil(H / 8)``, ``w = ceil(W / 8)``).
    density: ``(B, 1, h, w)`` expected count per block; the image count is ``density.sum((1, 2, 3))``.
    """

    logits: Tensor
    density: Tensor


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_to_words(n: int) -> str:
    """English words for ``0 <= n < 1_000_000`` ("twenty-one", "one hundred and five")."""
    n = int(n)
    if n < 0 or n >= 1_000_000:
        raise ValueError(f"number_to_words: {n} is outside 0 … 999999")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" and {number_to_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{number_to_words(thousands)} thousand" + (f" {number_to_words(rest)}" if rest else "")


def format_count_prompt(low: float, high: float, style: str = "word") -> str:
    """The sentence for the count bin ``[low, high]`` (``high`` may be ``inf``).

    ``style="word"`` spells numbers ("There are three people."), ``style="number"`` writes digits.
    The sentences are those of CLIP-EBC's ``format_count`` (``models/clip/utils.py``), including its
    wording of the open last bin ``[low, inf]`` as "more than ``low``" although the bin contains ``low``.
    """
    if style not in ("word", "number"):
        raise ValueError(f"prompt style must be 'word' or 'number', got {style!r}")
    say = number_to_words if style == "word" else (lambda v: str(int(v)))
    if math.isinf(high):
        return f"There are more than {say(int(low))} people."
    if low == high:
        n = int(low)
        if n == 0:
            return "There is no person." if style == "word" else "There is 0 person."
        if n == 1:
            return f"There is {say(1)} person."
        return f"There are {say(n)} people."
    return f"There are between {say(int(low))} and {say(int(high))} people."


def bin_prompts(bin_config: BinConfig, style: str = "word") -> list[str]:
    """One prompt per bin of ``bin_config``."""
    return [format_count_prompt(lo, hi, style) for lo, hi in bin_config.bins]


class CosineBinHead(nn.Module):
    """Cosine-similarity bin classifier with fixed text prototypes (see the module docstring).

    Args:
        text_prototypes: ``(K, D)`` CLIP text embeddings of the bin prompts (normalised here again).
        anchor_points: ``K`` anchor counts.
        logit_scale_init: initial ``s`` (``log(1/0.07)``, CLIP's initial temperature).

    ``forward(features (B, D, h, w)) -> CountingOutput``, computed in float32 also under autocast.
    """

    def __init__(self, text_prototypes: Tensor, anchor_points: Sequence[float] | Tensor,
                 logit_scale_init: float = math.log(1 / 0.07)) -> None:
        super().__init__()
        protos = torch.as_tensor(text_prototypes, dtype=torch.float32)
        anchors = torch.as_tensor(anchor_points, dtype=torch.float32).flatten()
        if protos.ndim != 2 or protos.shape[0] != anchors.numel():
            raise ValueError(f"CosineBinHead: text_prototypes must be (K, D) with K = {anchors.numel()} "
                             f"anchor points, got shape {tuple(protos.shape)}")
        self.register_buffer("text_prototypes", F.normalize(protos, dim=-1))
        self.register_buffer("anchor_points", anchors)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    @property
    def num_bins(self) -> int:
        return self.text_prototypes.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.text_prototypes.shape[1]

    def forward(self, features: Tensor) -> CountingOutput:
        if features.ndim != 4 or features.shape[1] != self.embed_dim:
            raise ValueError(f"CosineBinHead: expected features (B, {self.embed_dim}, h, w), "
                             f"got {tuple(features.shape)}")
        # The head runs in float32 (float64 inputs stay float64) even under autocast: it is cheap
        # (K dot products per block), and in bfloat16 the logits (up to exp(s) ~ 14) would be rounded
        # to steps of 1/16 and the density summed with an 8-bit mantissa, which biases image counts.
        dtype = torch.promote_types(features.dtype, torch.float32)
        with torch.autocast(device_type=features.device.type, enabled=False):
            f = F.normalize(features.to(dtype), dim=1)
            logits = self.logit_scale.exp().to(dtype) * torch.einsum("bdhw,kd->bkhw", f,
                                                                      self.text_prototypes.to(dtype))
            probs = logits.softmax(dim=1)
            density = (probs * self.anchor_points.to(dtype).view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        return CountingOutput(logits, density)
