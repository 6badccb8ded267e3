"""Losses for blockwise crowd counting (notebook 04).

* :mod:`.ot`           batched entropic OT (Sinkhorn) for DM-Count, modes ``reference`` and ``exact``,
                       and diagnostics of its potentials (nearest-head distance, near/far statistics)
* :mod:`.dmcount`      :class:`DMCountLoss` (count L1 + 0.1 OT + 0.01 TV)
* :mod:`.hybrid`       :class:`CrossEntropyBlockLoss`, :class:`ProbabilityEuclideanLoss`,
                       :class:`DACELoss` (CLIP-EBC) and :class:`AdaptiveHybridLoss` (GigaCount eq. 1-4)
* :mod:`.calibration`  reliability statistics and expected calibration error of the bin probabilities
* :mod:`.plots`        figures: reliability diagram, transport plan, OT potentials (take ``ax``/``fig``, return it)

Every loss is called as ``loss_fn(logits, density, points, image_size) -> (loss, terms)`` (DM-Count alone
takes no logits), where ``points`` is a list of ``(N_i, 2)`` tensors or a ``(padded, mask)`` pair.
"""
from .calibration import ReliabilityStats, block_probabilities, expected_calibration_error, reliability_stats
from .dmcount import DMCountLoss, block_counts_padded, count_l1, ot_surrogate, tv_term
from .hybrid import (AdaptiveHybridLoss, CrossEntropyBlockLoss, DACELoss, ProbabilityEuclideanLoss,
                     block_targets, build_loss)
from .ot import (OTResult, block_centres, near_far_stats, nearest_head_distance, ot_gradient, ot_potentials,
                 plan_entropy, sinkhorn_exact, sinkhorn_reference, squared_distances, transport_plan)
from .plots import plot_potentials, plot_reliability, plot_transport_plan

__all__ = [
    "AdaptiveHybridLoss", "DACELoss", "DMCountLoss", "CrossEntropyBlockLoss", "ProbabilityEuclideanLoss",
    "build_loss", "block_targets", "block_counts_padded", "count_l1", "tv_term", "ot_surrogate",
    "OTResult", "block_centres", "squared_distances", "sinkhorn_reference", "sinkhorn_exact",
    "ot_potentials", "ot_gradient", "transport_plan", "plan_entropy", "nearest_head_distance", "near_far_stats",
    "ReliabilityStats", "reliability_stats", "expected_calibration_error", "block_probabilities",
    "plot_reliability", "plot_transport_plan", "plot_potentials",
]
