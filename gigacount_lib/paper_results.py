"""Published numbers that notebook 06 sets beside our own, as data, each with its source.

Only numbers read in a source are here; ``verified`` says whether this project read the number in a
stored copy of that source (``False``: a number the project recorded earlier whose source text could
not be read again here). A number we looked for and did not find is an entry with ``mae``/``rmse``
None and a note saying where we looked, so that a table built from :data:`PUBLISHED` shows the gap
instead of hiding it. These are real-benchmark results (UCF-QNRF, NWPU-Crowd) of pretrained models
trained for hundreds of GPU epochs; our numbers are on synthetic data from random init on a CPU and
are never put in the same column.

:func:`claim_agreement` turns :func:`gigacount_lib.ablation.versus_reference` (our runs) into one
sentence per variant saying whether our runs agree with the paper's claim on that axis.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PublishedResult", "PUBLISHED", "GIGACOUNT_PAPER", "CLIP_EBC_PAPER", "CLIP_EBC_README",
           "EXPECTED_VERDICT", "published_table", "claim_agreement"]

GIGACOUNT_PAPER = ("GigaCount: Enhancing Crowd Counting by Integrating a Multi-Scale Feature Fusion Model into "
                   "CLIP-EBC (official code: github.com/AdamHermes/GigaCount)")
CLIP_EBC_PAPER = ("Ma, Sanchez, Guha, CLIP-EBC: CLIP Can Count Accurately through Enhanced Blockwise "
                  "Classification, arXiv:2403.09281")
CLIP_EBC_README = "github.com/Yiming-M/CLIP-EBC, README.md"


@dataclass(frozen=True)
class PublishedResult:
    """One published result: who, on which data, the errors (None: not found) and where it comes from."""

    method: str
    dataset: str  # e.g. "UCF-QNRF", "NWPU-Crowd"
    split: str  # e.g. "test"
    mae: float | None
    rmse: float | None
    source: str  # document and the table or section the number is in
    verified: bool  # read in a stored copy of the source by this project
    note: str = ""


_NOT_FOUND_QNRF = ("not found: the CLIP-EBC README versions we could read list NWPU-Crowd test results only, the "
                   "paper's abstracts give no UCF-QNRF MAE, and the paper's tables could not be read here")

PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult(
        "GigaCount", "UCF-QNRF", "test", 103.3, None, f"{GIGACOUNT_PAPER}; as recorded in CONTRIBUTING.md",
        verified=False,
        note="selected on the test split (the official code keeps the checkpoint with the best test MAE); "
             "RMSE not found; the paper's text could not be read again here and the official repository's "
             "README lists no results"),
    PublishedResult("CLIP-EBC (ResNet50)", "UCF-QNRF", "test", None, None, CLIP_EBC_PAPER, verified=False,
                    note=_NOT_FOUND_QNRF),
    PublishedResult("CLIP-EBC (ViT-B/16)", "UCF-QNRF", "test", None, None, CLIP_EBC_PAPER, verified=False,
                    note=_NOT_FOUND_QNRF),
    PublishedResult("DMCount-EBC (VGG-19)", "NWPU-Crowd", "test", 83.7, 376.0,
                    f"{CLIP_EBC_README}, table 'Results on NWPU Test'", verified=True),
    PublishedResult("CLIP-EBC (ResNet50)", "NWPU-Crowd", "test", 75.8, 367.3,
                    f"{CLIP_EBC_README}, table 'Results on NWPU Test'", verified=True),
    PublishedResult("CLIP-EBC (ViT-B/16)", "NWPU-Crowd", "test", 61.2, 278.3,
                    f"{CLIP_EBC_README}, table 'Results on NWPU Test' (later README versions)", verified=True),
    PublishedResult("CLIP-EBC", "NWPU-Crowd", "test", 58.2, 268.5,
                    f"{CLIP_EBC_PAPER}, abstract of v2 (v3: the MAE only)",
                    verified=True, note="the paper's number; the README's benchmark submission above differs"),
)


def published_table(dataset: str | None = None):
    """:data:`PUBLISHED` as a :class:`pandas.DataFrame` (one row per entry), optionally one dataset only."""
    import pandas as pd

    rows = [asdict(r) for r in PUBLISHED if dataset is None or r.dataset == dataset]
    table = pd.DataFrame(rows, columns=[f for f in PublishedResult.__dataclass_fields__])
    for column in ("mae", "rmse"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


# What the paper's claims predict for a variant against its axis's reference (the paper's model) on the
# test MAE: "higher" = the variant should be worse. Variants without a stated claim are absent.
EXPECTED_VERDICT: dict[str, str] = {
    "stage4": "higher",  # removing stage 4 lowers the MAE
    "aug_none": "higher",  # augmentation helps
    "schedule_none": "higher",  # a learning-rate schedule is needed
    "loss_dace": "higher",  # the Adaptive Hybrid loss improves on DACE
    "no_fusion": "higher",  # fusing the three scales beats the deepest map alone
}


def _fmt(value: Any, digits: int = 2) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{value:+.{digits}f}" if math.isfinite(value) else "n/a"


def claim_agreement(versus, *, label: str = "our runs"):
    """Whether each variant's result agrees with the paper's claim, as data and as a sentence.

    Args:
        versus: the table of :func:`gigacount_lib.ablation.versus_reference` (columns ``axis``,
            ``variant``, ``reference``, ``n``, ``n_reference``, ``difference``, ``standard_error``, ``verdict``).
        label: how the sentences name our runs (e.g. ``"our runs (synthetic, short budget)"``).

    Returns:
        The rows of ``versus`` with ``claim`` (the axis's claim from :data:`gigacount_lib.ablation.AXES`),
        ``expected`` (:data:`EXPECTED_VERDICT`, "" when the paper states none), ``agreement``
        (``"agrees"``, ``"disagrees"``, ``"inconclusive"`` when the difference is within the noise, or
        ``"no claim"``) and ``sentence``.
    """
    from .ablation import AXES

    out = versus.copy()
    claims, expected, agreement, sentences = [], [], [], []
    for row in versus.itertuples(index=False):
        claim = AXES[row.axis].claim if row.axis in AXES else ""
        want = EXPECTED_VERDICT.get(row.variant, "")
        if not want:
            agree = "no claim"
        elif row.verdict == "no clear difference":
            agree = "inconclusive"
        else:
            agree = "agrees" if row.verdict == want else "disagrees"
        measured = (f"{row.variant} minus {row.reference}: test MAE {_fmt(row.difference)} "
                    f"(standard error {_fmt(row.standard_error).lstrip('+')}, seeds {row.n} vs {row.n_reference})")
        if agree == "no claim":
            tail = f"the paper states no direction for this variant; {label} find {row.verdict}"
        elif agree == "inconclusive":
            tail = (f"the paper expects {want}; {label} show no clear difference (within 2 standard errors), "
                    "so they neither confirm nor contradict it")
        else:
            tail = f"the paper expects {want}; {label} find {row.verdict}, so they {agree.rstrip('s')} with it"
        claims.append(claim)
        expected.append(want)
        agreement.append(agree)
        sentences.append(f"[{row.axis}] {measured}: {tail}.")
    out["claim"], out["expected"], out["agreement"], out["sentence"] = claims, expected, agreement, sentences
    return out
