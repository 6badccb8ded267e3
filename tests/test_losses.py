"""Loss terms (CE, Prob, count, TV), DACE, the Adaptive Hybrid loss, the loss interface, and bad input.

Calibration (reliability, ECE) is tested in ``test_calibration.py``."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gigacount_lib.binning import BinConfig
from gigacount_lib.data.density import block_count_maps
from gigacount_lib.data.transforms import CrowdBatch, pad_points
from gigacount_lib.losses import (LOSS_NAMES, AdaptiveHybridLoss, CrossEntropyBlockLoss, DACELoss, DMCountLoss,
                                  ProbabilityEuclideanLoss, block_counts_padded, block_targets, build_loss,
                                  count_l1, cross_entropy_blocks, probability_euclidean, tv_term)
from gigacount_lib.models.head import CountingOutput

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
    assert cross_entropy_blocks(logits, classes).item() == pytest.approx(ce_expected, rel=1e-6)
    assert probability_euclidean(logits, classes).item() == pytest.approx(prob_expected, rel=1e-6)


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
    assert torch.autograd.gradcheck(lambda z: cross_entropy_blocks(z, classes), (logits,))
    assert torch.autograd.gradcheck(lambda z: probability_euclidean(z, classes), (logits,))


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
        return loss_fn.compute(z, BC.expected_count(z.softmax(1)), pts, SIZE)[0]

    assert torch.autograd.gradcheck(f, (logits,))


# ------------------------------------------------------------------------------------------ composite losses
@pytest.mark.parametrize("mode", ["reference", "exact"])
def test_hybrid_is_the_sum_of_its_terms_and_terms_switch_off(mode):
    logits, pts = make_inputs()
    density = BC.expected_count(logits.softmax(1))
    full, terms = AdaptiveHybridLoss(BC, mode=mode).compute(logits, density, pts, SIZE)
    assert set(terms) >= {"loss", "ce", "prob", "count", "dm_count", "dm_ot", "dm_tv", "dm_ot_objective"}
    padded, mask = pad_points(pts)
    _, classes = block_targets(padded, mask, (4, 6), BC)
    assert terms["ce"] == pytest.approx(cross_entropy_blocks(logits, classes).item(), rel=1e-5)
    assert terms["prob"] == pytest.approx(probability_euclidean(logits, classes).item(), rel=1e-5)
    dm, dm_terms = DMCountLoss(8, mode=mode).compute(None, density, pts, SIZE)
    assert terms["count"] == pytest.approx(dm.item(), rel=1e-5)
    assert full.item() == pytest.approx(terms["ce"] + terms["prob"] + terms["count"], rel=1e-5)
    no_prob, t2 = AdaptiveHybridLoss(BC, weight_prob=0.0, mode=mode).compute(logits, density, pts, SIZE)
    assert t2["prob"] == 0.0 and no_prob.item() == pytest.approx(full.item() - terms["prob"], rel=1e-5)
    gt_count = torch.tensor([7.0, 0.0, 1.0])
    assert dm_terms["count"] == pytest.approx((density.flatten(1).sum(-1) - gt_count).abs().mean().item(), rel=1e-5)


@pytest.mark.parametrize("count_loss", ["mae", "mse", "dmcount"])
def test_dace_variants(count_loss):
    logits, pts = make_inputs()
    density = BC.expected_count(logits.softmax(1))
    loss, terms = DACELoss(BC, count_loss=count_loss, weight_count=0.5).compute(logits, density, pts, SIZE)
    padded, mask = pad_points(pts)
    gt, classes = block_targets(padded, mask, (4, 6), BC)
    ce = F.cross_entropy(logits, classes, reduction="none").sum((1, 2)).mean()
    if count_loss == "mae":
        count = (density - gt).abs().sum((1, 2, 3)).mean()
    elif count_loss == "mse":
        count = (density - gt).pow(2).sum((1, 2, 3)).mean()
    else:
        count = DMCountLoss(8).compute(None, density, pts, SIZE)[0]
    assert loss.item() == pytest.approx((ce + 0.5 * count).item(), rel=1e-5)


def test_loss_is_float32_under_bf16_autocast_and_backward_is_finite():
    logits, pts = make_inputs()
    logits = logits.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = logits.to(torch.bfloat16)
        density = BC.expected_count(z.softmax(1)).to(torch.bfloat16)
        loss, terms = AdaptiveHybridLoss(BC, mode="exact").compute(z, density, pts, SIZE)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(logits.grad).all() and math.isfinite(terms["loss"])


def test_zero_person_batch_and_points_as_padded_pair():
    logits, _ = make_inputs()
    density = BC.expected_count(logits.softmax(1)).requires_grad_(True)
    empty = [torch.zeros(0, 2)] * 3
    for mode in ("reference", "exact"):
        loss, terms = AdaptiveHybridLoss(BC, mode=mode).compute(logits, density, empty, SIZE)
        assert math.isfinite(terms["loss"]) and terms["dm_ot"] == 0.0
        grad, = torch.autograd.grad(loss, density)
        assert torch.isfinite(grad).all()
    _, pts = make_inputs()
    a = AdaptiveHybridLoss(BC).compute(logits, density, pts, SIZE)[1]
    b = AdaptiveHybridLoss(BC).compute(logits, density, pad_points(pts), SIZE)[1]
    assert a == pytest.approx(b)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    logits, pts = make_inputs()
    density = BC.expected_count(logits.softmax(1))
    loss_fn = AdaptiveHybridLoss(BC)
    with pytest.raises(ValueError, match="do not match"):
        loss_fn.compute(logits[:, :, :3], density, pts, SIZE)
    with pytest.raises(ValueError, match="classes but the bin configuration has"):
        AdaptiveHybridLoss(BinConfig.fine(3)).compute(logits, density, pts, SIZE)
    with pytest.raises(ValueError, match=r"outside the 48x32 crop .* \[2\]"):
        loss_fn.compute(logits, density, pts[:2] + [torch.tensor([[60.0, 3.0]])], SIZE)
    bad = density.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite predicted density in batch image\(s\) \[1\]"):
        loss_fn.compute(logits, bad, pts, SIZE)
    with pytest.raises(ValueError, match=r"negative predicted density in batch image\(s\) \[0\]"):
        DMCountLoss(8).compute(None, density - torch.tensor([1.0, 0, 0]).view(3, 1, 1, 1) * 10, pts, SIZE)
    with pytest.raises(ValueError, match="does not match image size"):
        loss_fn.compute(logits, density, pts, (64, 48))
    with pytest.raises(ValueError, match="point sets for a batch of"):
        loss_fn.compute(logits, density, pts[:2], SIZE)
    with pytest.raises(ValueError, match="mode must be one of"):
        DMCountLoss(8, mode="fast")


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
    first = loss_fn.compute(logits, density, pts, SIZE)[1]
    second = loss_fn.compute(logits, density, pts, SIZE)[1]
    assert len(calls) == 1 and first == second


# ------------------------------------------------------------------------------------------ one interface
def make_output_and_batch(seed: int = 0, size: tuple[int, int] = SIZE):
    logits, pts = make_inputs(seed)
    density = BC.expected_count(logits.softmax(1))
    batch = CrowdBatch(images=torch.zeros(logits.shape[0], 3, *size), points=pts)
    return CountingOutput(logits, density), batch


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_built_loss_takes_output_and_batch_and_matches_the_raw_tensor_path(name):
    output, batch = make_output_and_batch()
    loss_fn = build_loss(name, BC)
    logits = output.logits.clone().requires_grad_(True)
    density = BC.expected_count(logits.softmax(1))
    loss, terms = loss_fn(CountingOutput(logits, density), batch)
    raw_logits = output.logits.clone().requires_grad_(True)
    raw_loss, raw_terms = loss_fn.compute(raw_logits, BC.expected_count(raw_logits.softmax(1)), batch.points,
                                          batch.image_size)
    torch.testing.assert_close(loss, raw_loss)
    assert terms == pytest.approx(raw_terms) and terms["loss"] == pytest.approx(loss.item())
    (grad,) = torch.autograd.grad(loss, logits)
    (raw_grad,) = torch.autograd.grad(raw_loss, raw_logits)
    torch.testing.assert_close(grad, raw_grad)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_train_compute_loss_is_the_plain_call():
    from gigacount_lib.steps import compute_loss

    output, batch = make_output_and_batch()
    for name in LOSS_NAMES:
        loss_fn = build_loss(name, BC)
        assert compute_loss(loss_fn, output, batch)[1] == pytest.approx(loss_fn(output, batch)[1])


def test_ce_and_prob_modules_build_their_targets_from_the_batch():
    output, batch = make_output_and_batch()
    padded, mask = pad_points(batch.points)
    _, classes = block_targets(padded, mask, (4, 6), BC)
    ce, ce_terms = CrossEntropyBlockLoss(BC)(output, batch)
    prob, prob_terms = ProbabilityEuclideanLoss(BC)(output, batch)
    assert ce.item() == pytest.approx(cross_entropy_blocks(output.logits, classes).item(), rel=1e-6)
    assert prob.item() == pytest.approx(probability_euclidean(output.logits, classes).item(), rel=1e-6)
    assert set(ce_terms) == {"loss", "ce"} and set(prob_terms) == {"loss", "prob"}
    # the density is not theirs: not used, not checked (None is fine on the raw path)
    bad = CountingOutput(output.logits, torch.full_like(output.density, float("nan")))
    assert CrossEntropyBlockLoss(BC)(bad, batch)[0].item() == pytest.approx(ce.item())
    assert ProbabilityEuclideanLoss(BC).compute(output.logits, None, batch.points, SIZE)[0].item() == \
        pytest.approx(prob.item())
    # and DM-Count ignores the logits
    dm = DMCountLoss(8)
    assert dm.compute(None, output.density, batch.points, SIZE)[1] == pytest.approx(dm(output, batch)[1])


def test_a_wrong_block_size_is_a_clear_value_error():
    output, batch = make_output_and_batch()  # a stride-8 output (4 x 6 blocks) of 32 x 48 crops
    coarse = BinConfig.fine(4, reduction=16)
    for loss_fn, source in [(AdaptiveHybridLoss(coarse), r"bin_config\.reduction = 16"),
                            (DACELoss(coarse, count_loss="mae"), r"bin_config\.reduction = 16"),
                            (CrossEntropyBlockLoss(coarse), r"bin_config\.reduction = 16"),
                            (DMCountLoss(16), r"DMCountLoss\(reduction=16\)")]:
        message = (r"output grid \(4, 6\) does not match image size 32x48 at reduction 16 \(expected \(2, 3\)\); "
                   r"that grid fits an output stride of 8 px\. "
                   rf"The loss's block size \({source}\) must equal the model's output stride")
        with pytest.raises(ValueError, match=message):
            loss_fn(output, batch)
    # a batch whose images are not those the output was computed from: the grid fits stride 16
    other = CrowdBatch(images=torch.zeros(3, 3, 64, 96), points=batch.points)
    with pytest.raises(ValueError, match=r"image size 64x96 at reduction 8 .* fits an output stride of 16 px"):
        AdaptiveHybridLoss(BC)(output, other)
    with pytest.raises(ValueError, match=r"image size 64x96 at reduction 8 .* fits an output stride of 16 px"):
        DMCountLoss(8)(output, other)
    for bad in (0, -8, 2.5, True, float("nan"), "8"):
        with pytest.raises(ValueError, match="reduction must be a positive whole number of pixels"):
            DMCountLoss(bad)


def test_the_old_raw_tensor_call_points_to_compute():
    output, batch = make_output_and_batch()
    with pytest.raises(TypeError, match=r"loss_fn\.compute\(logits, density, points, image_size\)"):
        AdaptiveHybridLoss(BC)(output.logits, output.density)
    with pytest.raises(TypeError, match=r"CrowdBatch .* got a list"):
        DMCountLoss(8)(output, batch.points)
    with pytest.raises(TypeError, match="bin_config must be a BinConfig"):
        CrossEntropyBlockLoss(8)  # the block size comes from a BinConfig
    with pytest.raises(ValueError, match="unknown loss 'focal'; choose 'hybrid', 'dace', 'dmcount', 'ce', 'prob'"):
        build_loss("focal", BC)


def test_focal_cross_entropy_downweights_easy_blocks():
    """focal_gamma=0 is L_CE; gamma > 0 is sum -(1 - p_c)^gamma log p_c, smaller, most on confident blocks."""
    from gigacount_lib.losses.hybrid import cross_entropy_blocks

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, generator=gen) * 3
    classes = torch.randint(0, 5, (2, 3, 4), generator=gen)
    logp = logits.log_softmax(1).gather(1, classes.unsqueeze(1)).squeeze(1)
    plain = (-logp).flatten(1).sum(-1).mean()
    focal = (-(1 - logp.exp()).pow(2) * logp).flatten(1).sum(-1).mean()
    torch.testing.assert_close(cross_entropy_blocks(logits, classes), plain)
    torch.testing.assert_close(cross_entropy_blocks(logits, classes, focal_gamma=2.0), focal)
    assert focal < plain
    with pytest.raises(ValueError, match="focal_gamma"):
        AdaptiveHybridLoss(BinConfig.gigacount_qnrf(), focal_gamma=-1)
