"""Losses for blockwise crowd counting (notebook 04).

* :mod:`.ot`           batched entropic OT (Sinkhorn) for DM-Count, modes ``reference`` and ``exact``,
                       and diagnostics of its potentials (nearest-head distance, near/far statistics)
* :mod:`.dmcount`      :class:`DMCountLoss` (count L1 + 0.1 OT + 0.01 TV)
* :mod:`.hybrid`       :class:`CrossEntropyBlockLoss`, :class:`ProbabilityEuclideanLoss`,
                       :class:`DACELoss` (CLIP-EBC) and :class:`AdaptiveHybridLoss` (GigaCount eq. 1-4),
                       ``build_loss``; the tensor functions ``cross_entropy_blocks``, ``probability_euclidean``
* :mod:`._common`      what the losses share: the interface, input checks, block counts, logging
* :mod:`.experiment`   notebook 04's short loss comparison
* :mod:`.plots`        figures: reliability diagram, transport plan, OT potentials (take ``ax``/``fig``, return it)

Every loss is called as ``loss_fn(output, batch) -> (loss, terms)`` with a ``CountingOutput`` (``logits``,
``density``) and a ``CrowdBatch`` (``points``, ``image_size``); on raw tensors,
``loss_fn.compute(logits, density, points, image_size)``, where ``points`` is a list of ``(N_i, 2)``
tensors or a ``(padded, mask)`` pair and the unused input may be ``None`` (DM-Count ignores the logits,
CE and L_Prob the density). The calibration metrics are in :mod:`gigacount_lib.calibration`
(re-exported by :mod:`gigacount_lib.evaluate`).
"""
from ._common import LOSS_EPS, CountingLoss, block_counts_padded
from .dmcount import DMCountLoss, count_l1, ot_surrogate, tv_term
from .hybrid import (LOSS_NAMES, AdaptiveHybridLoss, CrossEntropyBlockLoss, DACELoss, ProbabilityEuclideanLoss,
                     block_targets, build_loss, cross_entropy_blocks, probability_euclidean)
from .ot import (OTResult, block_centres, near_far_stats, nearest_head_distance, ot_gradient, ot_potentials,
                 plan_entropy, sinkhorn_exact, sinkhorn_reference, squared_distances, transport_plan)
from .plots import plot_potentials, plot_reliability, plot_transport_plan

__all__ = [
    "CountingLoss", "AdaptiveHybridLoss", "DACELoss", "DMCountLoss", "CrossEntropyBlockLoss",
    "ProbabilityEuclideanLoss", "build_loss", "LOSS_NAMES", "cross_entropy_blocks", "probability_euclidean",
    "block_targets", "block_counts_padded", "count_l1", "tv_term", "ot_surrogate", "LOSS_EPS",
    "OTResult", "block_centres", "squared_distances", "sinkhorn_reference", "sinkhorn_exact",
    "ot_potentials", "ot_gradient", "transport_plan", "plan_entropy", "nearest_head_distance", "near_far_stats",
    "plot_reliability", "plot_transport_plan", "plot_potentials",
]
