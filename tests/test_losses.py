"""Loss terms (CE, Prob, count, TV), DACE, the Adaptive Hybrid loss, calibration, and bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gigacount_lib.binning import BinConfig
from gigacount_lib.data.density import block_count_maps
from gigacount_lib.data.transforms import pad_points
from gigacount_lib.losses import (AdaptiveHybridLoss, CrossEntropyBlockLoss, DACELoss, DMCountLoss,
                                  ProbabilityEuclideanLoss, block_counts_padded, block_targets, count_l1,
                                  expected_calibration_error, reliability_stats, tv_term)

BC = BinConfig.gigacount_qnrf()  # 5 bins, reduction 8
SIZE = (32, 48)                  # h = 4, w = 6 blocks


def make_inputs(seed: int = 0, batch: int = 3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, BC.num_bins, 4, 6, generator=gen, dtype=dtype)
    counts = [7, 0, 1, 12][:batch]
    pts = [torch.rand(n, 2, generator=gen) * torch.tensor([SIZE[1], SIZE[0]]) for n in counts]
    return logits, pts


# ------------------------------------------------------------------------------------------ targets
def test_block_counts_padded_matches_data_layer():
    _, pts = make_inputs()
    pts[0] = torch.cat([pts[0], torch.tensor([[48.0, 32.0], [0.0, 0.0]])])  # border points
    padded, mask = pad_points(pts)
    torch.testing.assert_close(block_counts_padded(padded, mask, (4, 6), 8), block_count_maps(pts, SIZE, 8))
    counts, classes = block_targets(padded, mask, (4, 6), BC)
    assert torch.equal(classes, BC.counts_to_classes(counts.squeeze(1)))


# ------------------------------------------------------------------------------------------ terms by hand
def test_ce_and_prob_on_a_hand_example():
    # one image, 1x2 blocks, 2 bins; logits chosen so that p = (0.5, 0.5) and (e/(1+e), 1/(1+e))
    logits = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]])
    classes = torch.tensor([[[0, 1]]])
    p1 = math.e / (1 + math.e)
    ce_expected = -math.log(0.5) - math.log(1 - p1)
    prob_expected = (0.5 ** 2 + 0.5 ** 2) + ((p1 - 0) ** 2 + (1 - p1 - 1) ** 2)
    assert CrossEntropyBlockLoss()(logits, classes).item() == pytest.approx(ce_expected, rel=1e-6)
    assert ProbabilityEuclideanLoss()(logits, classes).item() == pytest.approx(prob_expected, rel=1e-6)


def test_count_and_tv_by_hand():
    density = torch.tensor([[[[1.0, 3.0]]]])      # S = 4
    gt_blocks = torch.tensor([[[[2.0, 0.0]]]])    # N = 2
    n = torch.tensor([2.0])
    assert count_l1(density, n).item() == pytest.approx(2.0)
    # |1/4 - 1| + |3/4 - 0| = 1.5, times N = 2 -> 3
    assert tv_term(density, gt_blocks, n).item() == pytest.approx(3.0, rel=1e-6)


# ------------------------------------------------------------------------------------------ gradchecks
def test_gradcheck_ce_and_prob():
    logits, pts = make_inputs(dtype=torch.float64)
    padded, mask = pad_points(pts)
    _, classes = block_targets(padded, mask, (4, 6), BC)
    logits = logits[:, :, :2, :3].clone().requires_grad_(True)
    classes = classes[:, :2, :3]
    assert torch.autograd.gradcheck(lambda z: CrossEntropyBlockLoss()(z, classes), (logits,))
    assert torch.autograd.gradcheck(lambda z: ProbabilityEuclideanLoss()(z, classes), (logits,))


def test_gradcheck_count_and_tv():
    gen = torch.Generator().manual_seed(1)
    density = (torch.rand(2, 1, 2, 3, generator=gen, dtype=torch.float64) + 0.1).requires_grad_(True)
    gt = torch.tensor([[[[1.0, 0.0, 2.0], [0.0, 0.0, 1.0]]], [[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]],
                      dtype=torch.float64)
    n = gt.flatten(1).sum(-1)
    assert torch.autograd.gradcheck(lambda d: count_l1(d, n), (density,))
    assert torch.autograd.gradcheck(lambda d: tv_term(d, gt, n), (density,))


def test_gradcheck_hybrid_without_ot_through_the_module():
    logits, pts = make_inputs(dtype=torch.float64)
    logits = logits.requires_grad_(True)
    loss_fn = AdaptiveHybridLoss(BC, weight_ot=0.0)

    def f(z):
        return loss_fn(z, BC.expected_count(z.softmax(1)), pts, SIZE)[0]

    assert torch.autograd.gradcheck(f, (logits,))


# ------------------------------------------------------------------------------------------ composite losses
@pytest.mark.parametrize("mode", ["reference", "exact"])
def test_hybrid_is_the_sum_of_its_terms_and_terms_switch_off(mode):
    logits, pts = make_inputs()
    density = BC.expected_count(logits.softmax(1))
    full, terms = AdaptiveHybridLoss(BC, mode=mode)(logits, density, pts, SIZE)
    assert set(terms) >= {"loss", "ce", "prob", "count", "dm_count", "dm_ot", "dm_tv", "dm_ot_objective"}
    padded, mask = pad_points(pts)
    _, classes = block_targets(padded, mask, (4, 6), BC)
    assert terms["ce"] == pytest.approx(CrossEntropyBlockLoss()(logits, classes).item(), rel=1e-5)
    assert terms["prob"] == pytest.approx(ProbabilityEuclideanLoss()(logits, classes).item(), rel=1e-5)
    dm, dm_terms = DMCountLoss(8, mode=mode)(density, pts, SIZE)
    assert terms["count"] == pytest.approx(dm.item(), rel=1e-5)
    assert full.item() == pytest.approx(terms["ce"] + terms["prob"] + terms["count"], rel=1e-5)
    no_prob, t2 = AdaptiveHybridLoss(BC, weight_prob=0.0, mode=mode)(logits, density, pts, SIZE)
    assert t2["prob"] == 0.0 and no_prob.item() == pytest.approx(full.item() - terms["prob"], rel=1e-5)
    gt_count = torch.tensor([7.0, 0.0, 1.0])
    assert dm_terms["count"] == pytest.approx((density.flatten(1).sum(-1) - gt_count).abs().mean().item(), rel=1e-5)


@pytest.mark.parametrize("count_loss", ["mae", "mse", "dmcount"])
def test_dace_variants(count_loss):
    logits, pts = make_inputs()
    density = BC.expected_count(logits.softmax(1))
    loss, terms = DACELoss(BC, count_loss=count_loss, weight_count=0.5)(logits, density, pts, SIZE)
    padded, mask = pad_points(pts)
    gt, classes = block_targets(padded, mask, (4, 6), BC)
    ce = F.cross_entropy(logits, classes, reduction="none").sum((1, 2)).mean()
    if count_loss == "mae":
        count = (density - gt).abs().sum((1, 2, 3)).mean()
    elif count_loss == "mse":
        count = (density - gt).pow(2).sum((1, 2, 3)).mean()
    else:
        count = DMCountLoss(8)(density, pts, SIZE)[0]
    assert loss.item() == pytest.approx((ce + 0.5 * count).item(), rel=1e-5)


def test_loss_is_float32_under_bf16_autocast_and_backward_is_finite():
    logits, pts = make_inputs()
    logits = logits.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = logits.to(torch.bfloat16)
        density = BC.expected_count(z.softmax(1)).to(torch.bfloat16)
        loss, terms = AdaptiveHybridLoss(BC, mode="exact")(z, density, pts, SIZE)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad).all() and math.isfinite(terms["loss"])


def test_zero_person_batch_and_points_as_padded_pair():
    logits, _ = make_inputs()
    density = BC.expected_count(logits.softmax(1)).requires_grad_(True)
    empty = [torch.zeros(0, 2)] * 3
    for mode in ("reference", "exact"):
        loss, terms = AdaptiveHybridLoss(BC, mode=mode)(logits, density, empty, SIZE)
        assert math.isfinite(terms["loss"]) and terms["dm_ot"] == 0.0
        grad, = torch.autograd.grad(loss, density)
        assert torch.isfinite(grad).all()
    _, pts = make_inputs()
    a = AdaptiveHybridLoss(BC)(logits, density, pts, SIZE)[1]
    b = AdaptiveHybridLoss(BC)(logits, density, pad_points(pts), SIZE)[1]
    assert a == pytest.approx(b)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    logits, pts = make_inputs()
    density = BC.expected_count(logits.softmax(1))
    loss_fn = AdaptiveHybridLoss(BC)
    with pytest.raises(ValueError, match="do not match"):
        loss_fn(logits[:, :, :3], density, pts, SIZE)
    with pytest.raises(ValueError, match="classes but the bin configuration has"):
        AdaptiveHybridLoss(BinConfig.fine(3))(logits, density, pts, SIZE)
    with pytest.raises(ValueError, match=r"outside the 48x32 crop .* \[2\]"):
        loss_fn(logits, density, pts[:2] + [torch.tensor([[60.0, 3.0]])], SIZE)
    bad = density.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite predicted density in batch image\(s\) \[1\]"):
        loss_fn(logits, bad, pts, SIZE)
    with pytest.raises(ValueError, match=r"negative predicted density in batch image\(s\) \[0\]"):
        DMCountLoss(8)(density - torch.tensor([1.0, 0, 0]).view(3, 1, 1, 1) * 10, pts, SIZE)
    with pytest.raises(ValueError, match="does not match image size"):
        loss_fn(logits, density, pts, (64, 48))
    with pytest.raises(ValueError, match="point sets for a batch of"):
        loss_fn(logits, density, pts[:2], SIZE)
    with pytest.raises(ValueError, match="mode must be one of"):
        DMCountLoss(8, mode="fast")


# ------------------------------------------------------------------------------------------ calibration
def test_ece_zero_for_calibrated_and_exact_for_overconfident_predictions():
    # 4 blocks, confidence 0.75 each (exact in binary), 3 correct -> perfectly calibrated
    probs = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    # same confidences, 1 correct -> ECE = |0.25 - 0.75| = 0.5
    assert expected_calibration_error(probs, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.5)
    # two groups: 0.95 confident & always right (gap 0.05), 0.55 confident & never right (gap 0.55)
    probs = torch.tensor([[0.95, 0.05]] * 2 + [[0.55, 0.45]] * 2)
    stats = reliability_stats(probs, torch.tensor([0, 0, 1, 1]), n_bins=10)
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


def test_bin_lower_bounds_are_made_once_per_device(monkeypatch):
    """Building the bounds from a Python list is a blocking host-to-device copy on a GPU: not per step."""
    calls = []
    original = BinConfig.lower_bounds_tensor

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("device"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BinConfig, "lower_bounds_tensor", counting)
    logits, pts = make_inputs()
    density = BC.expected_count(logits.softmax(1))
    loss_fn = AdaptiveHybridLoss(BC, weight_ot=0.0)
    first = loss_fn(logits, density, pts, SIZE)[1]
    second = loss_fn(logits, density, pts, SIZE)[1]
    assert len(calls) == 1 and first == second
