"""The notebooks' exercises: one ``check_*`` per exercise that asks for code, and its reference ``solution_*``.

A notebook's exercise cell holds a stub the student fills in, then runs
``answer = solution_x if solutions else student_x`` and ``check_x(answer)``: the check compares the answer
with the library on several cases (edge cases included), prints what passed and what failed with a short
hint, and returns a :class:`CheckResult`. It never raises: an unfilled stub or an exception in the answer
is a failure message, so a notebook runs end to end either way. ``solutions = True`` (the notebooks'
parameter; the reproduction sets it) checks the reference solutions instead.

One module per notebook: :mod:`.ex01_data`, :mod:`.ex02_binning`, :mod:`.ex03_models`, :mod:`.ex04_losses`,
:mod:`.ex05_training`, :mod:`.ex06_evaluation`; :mod:`._check` is the machinery they share.
"""
from ._check import Case, CheckResult, compare, run_check
from .ex01_data import check_adaptive_sigma, check_block_counts, solution_adaptive_sigma, solution_block_counts
from .ex02_binning import (EXAMPLE_HISTOGRAM, check_average_anchor, check_coarse_bins, check_perfect_count,
                           solution_average_anchor, solution_coarse_bins, solution_perfect_count)
from .ex03_models import check_cosine_logits, check_fused_channels, solution_cosine_logits, solution_fused_channels
from .ex04_losses import (check_ot_gradient, check_prob_loss, check_tv_loss, solution_ot_gradient,
                          solution_prob_loss, solution_tv_loss)
from .ex05_training import check_clip_gradients, check_official_lr, solution_clip_gradients, solution_official_lr
from .ex06_evaluation import (check_count_errors, check_top_label_ece, check_versus_reference,
                              solution_count_errors, solution_top_label_ece, solution_versus_reference)

# (check, reference solution) of every exercise, in notebook order: the tests run each pair.
EXERCISES = {
    "block_counts": (check_block_counts, solution_block_counts),
    "adaptive_sigma": (check_adaptive_sigma, solution_adaptive_sigma),
    "average_anchor": (check_average_anchor, solution_average_anchor),
    "coarse_bins": (check_coarse_bins, solution_coarse_bins),
    "perfect_count": (check_perfect_count, solution_perfect_count),
    "cosine_logits": (check_cosine_logits, solution_cosine_logits),
    "fused_channels": (check_fused_channels, solution_fused_channels),
    "prob_loss": (check_prob_loss, solution_prob_loss),
    "ot_gradient": (check_ot_gradient, solution_ot_gradient),
    "tv_loss": (check_tv_loss, solution_tv_loss),
    "official_lr": (check_official_lr, solution_official_lr),
    "clip_gradients": (check_clip_gradients, solution_clip_gradients),
    "count_errors": (check_count_errors, solution_count_errors),
    "top_label_ece": (check_top_label_ece, solution_top_label_ece),
    "versus_reference": (check_versus_reference, solution_versus_reference),
}

__all__ = ["Case", "CheckResult", "compare", "run_check", "EXERCISES", "EXAMPLE_HISTOGRAM"] + [
    f"{kind}_{name}" for name in EXERCISES for kind in ("check", "solution")]
