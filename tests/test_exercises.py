"""The notebooks' exercise checks: every reference solution passes, plausible mistakes fail, nothing raises."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gigacount_lib import exercises as ex


@pytest.mark.parametrize("name", list(ex.EXERCISES))
def test_reference_solution_passes(name, capsys):
    check, solution = ex.EXERCISES[name]
    result = check(solution)
    assert result.ok and not result.failed, result.failed
    assert len(result.passed) >= 3, "a check should test several cases"
    assert "passed" in capsys.readouterr().out


def _stub(*args, **kwargs):
    raise NotImplementedError


def _returns_none(*args, **kwargs):
    return None


def _raises(*args, **kwargs):
    raise ValueError("a bug in the student's code")


@pytest.mark.parametrize("name", list(ex.EXERCISES))
@pytest.mark.parametrize("answer", [_stub, _returns_none, _raises, "not a function", lambda *a: "a string"],
                         ids=["stub", "none", "raises", "not-callable", "wrong-type"])
def test_unfilled_or_broken_answers_fail_without_raising(name, answer, capsys):
    check, _ = ex.EXERCISES[name]
    result = check(answer)
    assert not result.ok and result.failed and not result.passed
    out = capsys.readouterr().out
    assert "FAIL" in out
    if answer is _stub:
        assert "not filled in yet" in out and out.count("FAIL") == 1  # one line for the stub, not one per case
    if answer is _raises:
        assert "ValueError: a bug in the student's code" in out


# ---------------------------------------------------------------- plausible mistakes, one check at a time
def _floor_grid_block_counts(points, image_size, block_size):  # H // B instead of ceil(H / B)
    rows, cols = image_size[0] // block_size, image_size[1] // block_size
    counts = torch.zeros(rows, cols)
    for x, y in points.tolist():
        counts[min(int(y // block_size), rows - 1), min(int(x // block_size), cols - 1)] += 1
    return counts


def _swapped_block_counts(points, image_size, block_size):  # x used as the row, y as the column
    rows, cols = math.ceil(image_size[0] / block_size), math.ceil(image_size[1] / block_size)
    counts = torch.zeros(rows, cols)
    for x, y in points.tolist():
        counts[min(int(x // block_size), rows - 1), min(int(y // block_size), cols - 1)] += 1
    return counts


def _unclamped_block_counts(points, image_size, block_size):  # a head at x == W falls off the grid
    counts = torch.zeros(math.ceil(image_size[0] / block_size), math.ceil(image_size[1] / block_size))
    for x, y in points.tolist():
        counts[int(y // block_size), int(x // block_size)] += 1
    return counts


def _sigma_with_self(points, k=3, beta=0.3, fallback_sigma=15.0):  # the head counted as its own neighbour
    if points.shape[0] < 2:
        return torch.tensor([fallback_sigma])[: points.shape[0]]
    dist = torch.cdist(points.double(), points.double())
    return (beta * dist.topk(min(k, points.shape[0]), dim=1, largest=False).values.mean(1)).float()


def _sigma_without_beta(points, k=3, beta=0.3, fallback_sigma=15.0):
    return ex.solution_adaptive_sigma(points, k, 1.0, fallback_sigma)


def _unweighted_anchor(frequencies, low, high):  # mean of the counts, ignoring how many blocks hold them
    top = len(frequencies) - 1 if math.isinf(high) else min(int(high), len(frequencies) - 1)
    present = [c for c in range(int(low), top + 1) if frequencies[c]]
    return sum(present) / len(present)


def _exclusive_anchor(frequencies, low, high):  # range(low, high): the upper end left out
    top = len(frequencies) if math.isinf(high) else min(int(high), len(frequencies))
    cs = range(int(low), max(top, int(low) + 1))
    return sum(c * frequencies[c] for c in cs) / sum(frequencies[c] for c in cs)


def _coarse_off_by_one(truncation):  # a pair may end at T
    bins, low = [(0.0, 0.0)], 1
    while low + 1 <= truncation:
        bins.append((float(low), float(low + 1)))
        low += 2
    return bins + [(float(low), math.inf)]


def _coarse_open_at_t(truncation):  # the open bin always starts at T
    return [(0.0, 0.0)] + [(float(c), float(min(c + 1, truncation - 1))) for c in range(1, truncation, 2)] + \
        [(float(truncation), math.inf)]


def _perfect_count_all_dims(block_counts, bin_config):  # one number for the whole batch
    return ex.solution_perfect_count(block_counts, bin_config).sum()


def _perfect_count_left(block_counts, bin_config):  # bucketize with right=False: off by one
    lows = torch.tensor([lo for lo, _ in bin_config.bins], dtype=torch.float64)
    classes = (torch.searchsorted(lows, block_counts.double(), right=False) - 1).clamp_min(0)
    return torch.tensor(bin_config.anchor_points, dtype=torch.float64)[classes].sum(dim=(-2, -1))


def _logits_unnormalised_features(features, prototypes, s):
    return math.exp(s) * torch.einsum("bdhw,kd->bkhw", features, F.normalize(prototypes, dim=1))


def _logits_times_s(features, prototypes, s):
    return s * ex.solution_cosine_logits(features, prototypes, 0.0)


def _logits_wrong_axis(features, prototypes, s):
    return math.exp(s) * torch.einsum("bdhw,kd->bkhw", F.normalize(features, dim=-1), F.normalize(prototypes, dim=1))


def _prob_loss_mean_blocks(logits, classes):
    return ex.solution_prob_loss(logits, classes) / classes[0].numel()


def _prob_loss_wrong_softmax(logits, classes):
    onehot = F.one_hot(classes, logits.shape[1]).permute(0, 3, 1, 2).float()
    return ((logits.softmax(dim=-1) - onehot) ** 2).sum(dim=(1, 2, 3)).mean()


def _prob_loss_sum_batch(logits, classes):
    return ex.solution_prob_loss(logits, classes) * logits.shape[0]


def _ot_gradient_sign(beta, density):
    return -ex.solution_ot_gradient(beta, density)


def _ot_gradient_batch_axis(beta, density):  # sums over the images instead of the blocks
    total = density.sum(0, keepdim=True)
    return (beta * total - (beta * density).sum(0, keepdim=True)) / (total ** 2 + 1e-8)


def _ot_gradient_no_eps(beta, density):
    total = density.sum(1, keepdim=True)
    return (beta * total - (beta * density).sum(1, keepdim=True)) / total ** 2


def _tv_without_n(density, gt_blocks):
    s, g = density.flatten(1), gt_blocks.flatten(1)
    return (s / (s.sum(1, keepdim=True) + 1e-8) - g / (g.sum(1, keepdim=True) + 1e-8)).abs().sum(1).mean()


def _tv_sum_batch(density, gt_blocks):
    return ex.solution_tv_loss(density, gt_blocks) * density.shape[0]


def _lr_no_restart(epoch, base_lr=5e-4, warmup=20, warmup_start_lr=1e-5, t0=80, eta_min=5e-6):
    if epoch < warmup:
        return ex.solution_official_lr(epoch, base_lr, warmup, warmup_start_lr, t0, eta_min)
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (epoch - warmup) / t0)) / 2


def _lr_warmup_off_by_one(epoch, base_lr=5e-4, warmup=20, warmup_start_lr=1e-5, t0=80, eta_min=5e-6):
    if epoch < warmup:
        return warmup_start_lr + (base_lr - warmup_start_lr) * (epoch + 1) / warmup
    return ex.solution_official_lr(epoch, base_lr, warmup, warmup_start_lr, t0, eta_min)


def _clip_per_tensor(grads, max_norm):
    return [g * min(1.0, max_norm / (float(g.norm()) + 1e-6)) for g in grads]


def _clip_scales_up(grads, max_norm):
    total = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
    return [g * (max_norm / (total + 1e-6)) for g in grads]


def _errors_no_sqrt(pred, true):
    out = ex.solution_count_errors(pred, true)
    return {**out, "rmse": out["rmse"] ** 2}


def _errors_nae_all_images(pred, true):
    p, t = np.asarray(pred), np.asarray(true)
    return {**ex.solution_count_errors(pred, true), "nae": float(np.mean(np.abs(p - t) / np.maximum(t, 1e-12)))}


def _ece_unweighted(probs, classes, n_bins=10):
    conf, pred = probs.double().max(1)
    hit = (pred == classes).double()
    index = (torch.ceil(conf * n_bins) - 1).long().clamp(0, n_bins - 1)
    gaps = [abs(float(hit[index == m].mean() - conf[index == m].mean())) for m in range(n_bins) if (index == m).any()]
    return sum(gaps) / len(gaps)


def _ece_true_class_probability(probs, classes, n_bins=10):
    conf = probs.double().gather(1, classes[:, None]).squeeze(1)
    fake = torch.stack([conf, 1 - conf], 1)  # confidence = p(true bin), always "right"
    return ex.solution_top_label_ece(fake, torch.zeros_like(classes), n_bins)


def _ece_half_open_bins(probs, classes, n_bins=10):  # [m/M, (m+1)/M): a confidence of 1.0 falls off the end
    conf, pred = probs.double().max(1)
    hit = (pred == classes).double()
    index = torch.floor(conf * n_bins).long()
    totals = torch.zeros(n_bins, dtype=torch.float64)
    totals[index] += 0  # IndexError for index == n_bins
    ece = 0.0
    for m in range(n_bins):
        inside = index == m
        if inside.any():
            ece += float(inside.double().mean()) * abs(float(hit[inside].mean() - conf[inside].mean()))
    return ece


def _versus_ddof0(a, b, z=2.0):
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, "no clear difference"
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    return diff, se, ("lower" if diff < 0 else "higher") if abs(diff) > z * se else "no clear difference"


def _versus_swapped(a, b, z=2.0):
    diff, se, verdict = ex.solution_versus_reference(a, b, z)
    return -diff, se, {"lower": "higher", "higher": "lower"}.get(verdict, verdict)


WRONG = {
    "block_counts": [_floor_grid_block_counts, _swapped_block_counts, _unclamped_block_counts],
    "adaptive_sigma": [_sigma_with_self, _sigma_without_beta],
    "average_anchor": [_unweighted_anchor, _exclusive_anchor],
    "coarse_bins": [_coarse_off_by_one, _coarse_open_at_t],
    "perfect_count": [_perfect_count_all_dims, _perfect_count_left],
    "cosine_logits": [_logits_unnormalised_features, _logits_times_s, _logits_wrong_axis],
    "fused_channels": [lambda channels: sum(c // 6 for c in channels), lambda channels: sum(c // 2 for c in channels)],
    "prob_loss": [_prob_loss_mean_blocks, _prob_loss_wrong_softmax, _prob_loss_sum_batch],
    "ot_gradient": [_ot_gradient_sign, _ot_gradient_batch_axis, _ot_gradient_no_eps],
    "tv_loss": [_tv_without_n, _tv_sum_batch],
    "official_lr": [_lr_no_restart, _lr_warmup_off_by_one],
    "clip_gradients": [_clip_per_tensor, _clip_scales_up],
    "count_errors": [_errors_no_sqrt, _errors_nae_all_images],
    "top_label_ece": [_ece_unweighted, _ece_true_class_probability, _ece_half_open_bins],
    "versus_reference": [_versus_ddof0, _versus_swapped],
}
WRONG_CASES = [(name, wrong) for name, wrongs in WRONG.items() for wrong in wrongs]


def test_every_check_has_wrong_answers():
    assert set(WRONG) == set(ex.EXERCISES)


@pytest.mark.parametrize("name,wrong", WRONG_CASES,
                         ids=[f"{n}-{getattr(w, '__name__', 'lambda').strip('_')}-{i}" for i, (n, w) in enumerate(WRONG_CASES)])
def test_plausible_wrong_answer_fails(name, wrong, capsys):
    check, _ = ex.EXERCISES[name]
    result = check(wrong)
    assert not result.ok and result.failed, f"{name}: {getattr(wrong, '__name__', wrong)} passed every case"
    out = capsys.readouterr().out
    assert "hint:" in out or "FAIL" in out


def test_check_result_and_compare():
    result = ex.run_check("demo", lambda x: x + 1,
                          lambda: [ex.Case("one", (1,), 2), ex.Case("two", (2,), 4, "add one")], verbose=False)
    assert not result.ok and result.passed == ["one"] and result.failed[0].startswith("two: got 3")
    assert "1/2" in result.summary()
    assert ex.compare(torch.zeros(2, 3), torch.zeros(3, 2)).startswith("shape (2, 3)")
    assert ex.compare(float("nan"), float("nan")) is None
    assert ex.compare({"a": 1.0}, {"a": 1.0, "b": 2.0}).startswith("missing key")


def test_a_broken_case_builder_is_reported_not_raised():
    def broken():
        raise RuntimeError("oops")

    result = ex.run_check("demo", lambda x: x, broken, verbose=False)
    assert not result.ok and "oops" in result.failed[0]
