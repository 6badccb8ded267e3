"""The minimal training step: forward, loss, backward, clipping, AdamW; autocast; the short-training helpers."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gigacount_lib.binning import BinConfig
from gigacount_lib.data.transforms import collate_crowd
from gigacount_lib.losses import AdaptiveHybridLoss, DACELoss, DMCountLoss
from gigacount_lib.evaluate import evaluate_model
from gigacount_lib.losses.experiment import evaluation_summary, short_training
from gigacount_lib.steps import (backward, check_finite, clip_gradients, configure_optimizer, forward_and_loss,
                                 train_step, train_steps)

BC = BinConfig.gigacount_qnrf()


class TinyCounter(nn.Module):
    """A stride-8 conv counter returning ``CountingOutput`` (fast stand-in for the real models)."""

    def __init__(self, bin_config: BinConfig = BC) -> None:
        super().__init__()
        from gigacount_lib.models import CountingOutput

        self._out = CountingOutput
        self.bin_config = bin_config
        self.body = nn.Sequential(nn.Conv2d(3, 16, 8, stride=8), nn.GELU(), nn.Conv2d(16, bin_config.num_bins, 1))

    def forward(self, x):
        logits = self.body(x)
        return self._out(logits, self.bin_config.expected_count(logits.float().softmax(1)))


def make_samples(n_images: int = 4, size: int = 32, seed: int = 0):
    """``(image, points, meta)`` samples: a map-style dataset for ``evaluate_model``."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n_images):
        n = int(torch.randint(0, 12, (1,), generator=gen))
        pts = torch.rand(n, 2, generator=gen) * size
        image = torch.rand(3, size, size, generator=gen)
        for p in pts:  # bright blobs where the heads are, so there is something to learn
            x, y = int(p[0].clamp(0, size - 1)), int(p[1].clamp(0, size - 1))
            image[:, max(0, y - 1):y + 2, max(0, x - 1):x + 2] = 1.0
        samples.append((image, pts, {"name": f"img_{i}"}))
    return samples


def make_loader(n_images: int = 4, size: int = 32, batch: int = 2, seed: int = 0):
    samples = make_samples(n_images, size, seed)
    return [collate_crowd(samples[i:i + batch]) for i in range(0, n_images, batch)]


def test_configure_optimizer_decays_only_matrices():
    model = TinyCounter()
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_configure_optimizer_decay_all_is_the_official_choice():
    """The official code decays every parameter; a bias then shrinks under weight decay alone."""
    model = TinyCounter()
    (group,) = configure_optimizer(model, lr=1e-2, weight_decay=0.5, decay_all=True).param_groups
    assert group["weight_decay"] == 0.5 and len(group["params"]) == len(list(model.parameters()))
    bias = next(p for p in model.parameters() if p.ndim == 1)
    with torch.no_grad():
        bias.fill_(1.0)
    opt = configure_optimizer(model, lr=1e-2, weight_decay=0.5, decay_all=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert float(bias.max()) == pytest.approx(1.0 - 1e-2 * 0.5)


@pytest.mark.parametrize("loss_name", ["hybrid", "dace", "dmcount"])
def test_train_steps_reduce_the_loss_on_a_fixed_batch(loss_name):
    torch.manual_seed(0)
    model = TinyCounter()
    loss_fn = {"hybrid": AdaptiveHybridLoss(BC), "dace": DACELoss(BC), "dmcount": DMCountLoss(8)}[loss_name]
    loader = make_loader()[:1]
    opt = configure_optimizer(model, lr=3e-3)
    history = train_steps(model, loader, loss_fn, opt, steps=30)
    assert len(history) == 30
    assert all(math.isfinite(h["loss"]) and h["grad_norm"] >= 0 for h in history)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def test_gradient_clipping_bounds_the_norm_and_reports_the_unclipped_one():
    torch.manual_seed(0)
    model = TinyCounter()
    batch = make_loader()[0]
    loss, _ = forward_and_loss(model, batch, AdaptiveHybridLoss(BC))
    backward(loss)
    before = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    reported = clip_gradients(model, 0.01)
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert reported == pytest.approx(before, rel=1e-5)
    assert before > 0.01 and after == pytest.approx(0.01, rel=1e-3)


def test_train_step_with_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    model = TinyCounter()
    opt = configure_optimizer(model, lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_step(model, make_loader()[0], AdaptiveHybridLoss(BC, mode="exact"), opt, use_autocast=True,
                       grad_clip=1.0)
    assert math.isfinite(stats["loss"]) and stats["time_s"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step


@pytest.mark.skipif(not __import__("gigacount_lib.utils", fromlist=["native_bf16"]).native_bf16("cpu"),
                    reason="this CPU has no native bfloat16 kernels, so the Trainer's fast path is float32 here")
def test_fast_path_matches_the_plain_path_in_loss_and_gradients():
    """The Trainer's fast path (bfloat16 autocast) against float32, the real gigacount, same weights and batch.

    The loss agrees to bf16 rounding, and so do the gradients of the layers next to the loss (projection,
    the decoder's last BatchNorms, the head). Deeper gradients are not compared: at random init they are
    ill-conditioned, e.g. a 1e-3 relative perturbation of the images alone, in float32, leaves a cosine
    of about 0.2 between the two whole-model gradients, so bf16 rounding cannot be told apart from noise
    there; the accuracy cost of bf16 is measured by training instead (``cpu_recipes.py`` ``fp32``).
    """
    from gigacount_lib.models import build_model

    torch.manual_seed(0)
    model = build_model("gigacount", BC, pretrained=None, drop_path_rate=0.0)
    batch = collate_crowd(make_samples(2, 96, seed=3))
    loss_fn = AdaptiveHybridLoss(BC, mode="reference")
    near = ("projection.weight", "projection.bias", "decoder.bn2.weight", "decoder.bn2.bias",
            "decoder.shortcut.1.weight", "decoder.shortcut.1.bias", "head.logit_scale")
    kept = {}

    def keep_logits(module, inputs, output):
        output.logits.retain_grad()
        kept["logits"] = output.logits

    model.head.register_forward_hook(keep_logits)
    grads, losses = {}, {}
    for fast in (False, True):
        model.zero_grad(set_to_none=True)
        loss, _ = forward_and_loss(model, batch, loss_fn, use_autocast=fast)
        backward(loss)
        losses[fast] = float(loss)
        params = dict(model.named_parameters())
        grads[fast] = {n: params[n].grad.detach().clone() for n in near}
        if not fast:
            # d loss / d s = sum(g * logits) since logits = exp(s) * cos: a sum with cancellation
            logits = kept["logits"]
            scale_terms = float((logits.grad * logits.detach()).abs().sum())
    assert losses[True] == pytest.approx(losses[False], rel=5e-3)
    for name in near:
        plain, fast = grads[False][name].flatten(), grads[True][name].flatten()
        assert plain.norm() > 0, name
        if plain.numel() > 1:
            cosine = float(torch.nn.functional.cosine_similarity(plain, fast, dim=0))
            assert cosine > 0.99, (name, cosine)
            assert float(fast.norm() / plain.norm()) == pytest.approx(1.0, abs=0.05), name
        else:
            # A scalar's gradient is a sum over every block and bin whose terms cancel (about 5x here), so
            # its bf16 error is measured against the sum of the terms' magnitudes, not the net value.
            assert scale_terms > abs(float(plain))
            assert abs(float(fast) - float(plain)) < 0.03 * scale_terms, (name, float(fast), float(plain))
            assert float(fast) * float(plain) > 0, name


def test_non_finite_loss_is_refused():
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        check_finite({"loss": float("nan"), "ce": 1.0})


def test_short_training_and_evaluate_with_the_real_model():
    from gigacount_lib.models import build_model

    torch.manual_seed(0)
    model = build_model("gigacount", BC, pretrained=None)
    loader = make_loader(n_images=2, size=32)
    history = short_training(model, AdaptiveHybridLoss(BC), loader, steps=2, seed=0)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    result = evaluation_summary(evaluate_model(model, make_samples(n_images=2, size=32), bin_config=BC))
    assert result["images"] == 2 and result["mae"] >= 0 and 0 <= result["ece"] <= 1
    assert 0 <= result["classwise_ece"] <= 1 and result["reliability_classwise"].kind == "classwise"
    assert 0 <= result["block_accuracy"] <= 1


def test_loss_scaling_unscales_before_clipping_and_float16_requires_a_scaler(monkeypatch):
    """With a GradScaler the step is the same as without one (grads unscaled before the norm and clip);
    float16 autocast (older GPUs) without a scaler is refused, and make_grad_scaler enables one only then."""
    import gigacount_lib.steps as T

    batch = make_loader()[0]
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)):
        torch.manual_seed(0)
        model = TinyCounter()
        opt = configure_optimizer(model, lr=1e-3)
        stats = train_step(model, batch, AdaptiveHybridLoss(BC, weight_ot=0.0), opt, grad_clip=0.05, scaler=scaler)
        results.append((stats["grad_norm"], [p.detach().clone() for p in model.parameters()]))
    (norm_plain, params_plain), (norm_scaled, params_scaled) = results
    assert norm_plain > 0.05 and norm_scaled == pytest.approx(norm_plain, rel=1e-5)
    for a, b in zip(params_plain, params_scaled):
        torch.testing.assert_close(a, b)

    assert not T.make_grad_scaler("cpu", use_autocast=True).is_enabled()  # bfloat16 needs no scaling
    monkeypatch.setattr(T, "autocast_dtype", lambda device: torch.float16)
    assert T.make_grad_scaler("cpu", use_autocast=True).is_enabled()
    assert not T.make_grad_scaler("cpu", use_autocast=False).is_enabled()
    with pytest.raises(ValueError, match="needs loss scaling"):
        train_step(TinyCounter(), batch, AdaptiveHybridLoss(BC), configure_optimizer(TinyCounter()), use_autocast=True)


def test_configure_optimizer_uses_the_fused_adamw_where_supported():
    """Fused by default on CPU (the same update as the loop AdamW, in one kernel per tensor); off on request."""
    torch.manual_seed(0)
    fused_model, loop_model = TinyCounter(), TinyCounter()
    loop_model.load_state_dict(fused_model.state_dict())
    fused, loop = configure_optimizer(fused_model, lr=1e-2), configure_optimizer(loop_model, lr=1e-2, fused=False)
    assert all(g.get("fused") for g in fused.param_groups)
    assert not any(g.get("fused") for g in loop.param_groups)
    batch = make_loader()[0]
    for model, opt in ((fused_model, fused), (loop_model, loop)):
        for _ in range(3):
            train_step(model, batch, AdaptiveHybridLoss(BC, mode="reference"), opt)
    for a, b in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
