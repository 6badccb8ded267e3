"""Enhanced blockwise classification (EBC): block counts, count bins, anchor points, ``BinConfig``.

Counting becomes classification: each output block (``reduction`` x ``reduction`` pixels) is
assigned to one of K count bins, and the model predicts a distribution over the bins. A bin
``[low, high]`` is inclusive on both ends (integer counts); ``high`` may be ``inf`` for the open
last bin. Each bin is represented by an *anchor point*, and the predicted block count is
``sum_k p_k * anchor_k``. CLIP-EBC (Ma, Sanchez & Guha, arXiv:2403.09281) ships these pieces only
as precomputed JSON files; this package derives every one of them from data:

* :mod:`.histogram`: :class:`CountHistogram`, :func:`block_count_histograms` (one streaming pass
  over a dataset's annotations), :func:`check_truncation`, :func:`suggest_truncation`.
* :mod:`.rules`: :func:`validate_bins` and the bin rules :func:`fine_bins`, :func:`coarse_bins`,
  :func:`dynamic_bins` (data-driven), :func:`log_bins`, :func:`make_bins`.
* :mod:`.anchors`: :func:`middle_anchors`, :func:`average_anchors`, :func:`class_shares`.
* :mod:`.config`: :class:`BinConfig` (count -> class mapping, expected count, JSON).
* :mod:`.clip_ebc_io`: CLIP-EBC's multi-entry ``reduction_<B>.json`` files and its published
  reference data (:func:`find_shared_reference`, :func:`load_clip_ebc_histograms`,
  :data:`CLIP_EBC_ANCHOR_HISTOGRAMS`, :func:`reproduce_published_anchors`).
* :mod:`.quantisation`: :func:`quantisation_errors`, what bins and anchors cost before learning.
* :mod:`.plots`: the ``plot_*`` figures of notebook 02 (each takes an ``ax`` and returns it).
"""
from .anchors import ANCHOR_KINDS, average_anchors, class_frequencies, class_shares, compute_anchors, middle_anchors
from .clip_ebc_io import (
    CLIP_EBC_ANCHOR_HISTOGRAMS, ClipEbcKey, clip_ebc_configs_to_dict, find_shared_reference, load_clip_ebc_configs,
    load_clip_ebc_histograms, reproduce_published_anchors, save_clip_ebc_configs,
)
from .config import BinConfig
from .histogram import (
    CountHistogram, block_count_histogram, block_count_histograms, check_truncation, suggest_truncation,
)
from .plots import plot_bins, plot_class_balance, plot_count_histograms
from .quantisation import quantisation_errors, reconstruct_counts
from .rules import GRANULARITIES, Bin, coarse_bins, dynamic_bins, fine_bins, log_bins, make_bins, validate_bins

__all__ = [
    "BinConfig", "CountHistogram",
    "validate_bins", "fine_bins", "coarse_bins", "dynamic_bins", "log_bins", "make_bins",
    "block_count_histogram", "block_count_histograms", "check_truncation", "suggest_truncation",
    "middle_anchors", "average_anchors", "compute_anchors", "class_frequencies", "class_shares",
    "load_clip_ebc_configs", "clip_ebc_configs_to_dict", "save_clip_ebc_configs",
    "reconstruct_counts", "quantisation_errors", "find_shared_reference", "CLIP_EBC_ANCHOR_HISTOGRAMS",
    "load_clip_ebc_histograms", "reproduce_published_anchors",
    "plot_count_histograms", "plot_bins", "plot_class_balance",
    "Bin", "ClipEbcKey", "GRANULARITIES", "ANCHOR_KINDS",
]
