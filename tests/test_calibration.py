"""Calibration of the bin probabilities (gigacount_lib.calibration, re-exported by gigacount_lib.evaluate):
reliability statistics, top-label and classwise ECE, accumulation over images."""
from __future__ import annotations

import math

import pytest
import torch

from gigacount_lib.binning import BinConfig
from gigacount_lib.data.transforms import pad_points
from gigacount_lib.evaluate import (ReliabilityAccumulator, ReliabilityStats, block_probabilities,
                                    expected_calibration_error, reliability_stats)
from gigacount_lib.losses import block_targets


def test_ece_zero_for_calibrated_and_exact_for_overconfident_predictions():
    # 4 blocks, confidence 0.75 each (exact in binary), 3 correct -> perfectly calibrated
    probs = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    # same confidences, 1 correct -> ECE = |0.25 - 0.75| = 0.5
    assert expected_calibration_error(probs, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.5)
    # two groups: 0.95 confident & always right (gap 0.05), 0.55 confident & never right (gap 0.55)
    probs = torch.tensor([[0.95, 0.05]] * 2 + [[0.55, 0.45]] * 2)
    stats = reliability_stats(probs, torch.tensor([0, 0, 1, 1]), n_bins=10)
    assert isinstance(stats, ReliabilityStats)
    assert stats.count.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert stats.ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.55, rel=1e-6)


def test_classwise_ece_sees_miscalibration_that_top_label_ece_misses():
    # 100 blocks: the model says bin 0 with p = 0.9 everywhere, 0.1 for bin 1 and 0 for bin 2.
    probs = torch.tensor([[0.9, 0.1, 0.0]] * 100, dtype=torch.float64)
    classes = torch.tensor([0] * 90 + [1] * 5 + [2] * 5)
    # top-label: confidence 0.9, accuracy 0.9 -> perfectly calibrated
    assert expected_calibration_error(probs, classes) == pytest.approx(0.0, abs=1e-12)
    # classwise: bin 0 fine; bin 1 says 0.1 but occurs 0.05; bin 2 says 0 but occurs 0.05 -> mean 0.1/3
    assert expected_calibration_error(probs, classes, kind="classwise") == pytest.approx(0.1 / 3, abs=1e-12)
    with pytest.raises(ValueError, match="kind must be"):
        reliability_stats(probs, classes, kind="other")
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        reliability_stats(probs, classes, n_bins=0)
    with pytest.raises(ValueError, match="100 probability rows for 99 classes"):
        reliability_stats(probs, classes[:99])


@pytest.mark.parametrize("kind", ["top", "classwise"])
def test_accumulating_per_image_equals_all_blocks_at_once(kind):
    gen = torch.Generator().manual_seed(0)
    probs = torch.randn(3, 5, 4, 6, generator=gen).softmax(1)
    classes = torch.randint(0, 5, (3, 4, 6), generator=gen)
    whole = reliability_stats(probs, classes, n_bins=7, kind=kind)
    acc = ReliabilityAccumulator(7, kind=kind)
    assert acc.result() is None
    for i in range(3):
        acc.add(probs[i:i + 1], classes[i:i + 1])
    acc.add(probs[:0], classes[:0])  # an image without blocks changes nothing
    pooled = acc.result()
    assert acc.blocks == 3 * 4 * 6 and pooled.kind == kind
    for field in ("edges", "confidence", "accuracy", "count"):
        torch.testing.assert_close(getattr(pooled, field), getattr(whole, field))
    assert pooled.ece == pytest.approx(whole.ece, rel=1e-12)
    if kind == "top":
        hits = (probs.argmax(1) == classes).double().mean()
        assert acc.accuracy() == pytest.approx(float(hits))
    else:
        torch.testing.assert_close(pooled.class_ece, whole.class_ece)
        with pytest.raises(ValueError, match="top-label only"):
            acc.accuracy()
        with pytest.raises(ValueError, match="4 classes after 5"):
            acc.add(torch.full((2, 4), 0.25), torch.zeros(2, dtype=torch.long))


def test_empty_blocks_give_nan_ece():
    acc = ReliabilityAccumulator(10)
    acc.add(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert acc.blocks == 0 and math.isnan(acc.result().ece) and math.isnan(acc.accuracy())


def test_block_probabilities_rows_and_classes():
    bc = BinConfig.gigacount_qnrf()
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, bc.num_bins, 4, 6, generator=gen)
    points = [torch.tensor([[3.0, 4.0], [4.0, 5.0], [40.0, 30.0]]), torch.zeros(0, 2)]
    probs, classes = block_probabilities(logits, points, bc)
    assert probs.shape == (2 * 4 * 6, bc.num_bins) and classes.shape == (2 * 4 * 6,)
    torch.testing.assert_close(probs.sum(1), torch.ones(48))
    padded, mask = pad_points(points)
    _, expected = block_targets(padded, mask, (4, 6), bc)
    assert torch.equal(classes, expected.reshape(-1))
    assert int(classes[0]) == 2 and int(classes[24:].sum()) == 0  # two heads in block (0, 0); image 2 empty
