"""Tests of gigacount_lib.evaluate: metrics, full and sliding-window inference, evaluate_model, protocols."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gigacount_lib import evaluate as ev
from gigacount_lib.binning import BinConfig
from gigacount_lib.models.head import CountingOutput


class PoolModel(nn.Module):
    """Translation-equivariant per block: logits are a 1x1 conv of the 8x8 average pool of the image, so a
    block's output depends on its own 64 pixels only and windows cannot change it."""

    def __init__(self) -> None:
        super().__init__()
        self.bin_config = BinConfig.gigacount_qnrf()
        k = len(self.bin_config.anchor_points)
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(k, 3, 1, 1, generator=gen) * 4)
            self.conv.bias.copy_(torch.randn(k, generator=gen))
        self.register_buffer("anchors", torch.tensor(self.bin_config.anchor_points).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> CountingOutput:
        logits = self.conv(F.avg_pool2d(x, 8, ceil_mode=True))
        return CountingOutput(logits, (logits.softmax(1) * self.anchors).sum(1, keepdim=True))


class PositionModel(nn.Module):
    """Output set by the block's position in its input only: density ``10 i + j``, logits ``(i, 0)``.
    Records the shape of every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> CountingOutput:
        self.seen.append(tuple(x.shape))
        b, h, w = x.shape[0], math.ceil(x.shape[-2] / 8), math.ceil(x.shape[-1] / 8)
        i = torch.arange(h, dtype=torch.float32).view(-1, 1).expand(h, w)
        j = torch.arange(w, dtype=torch.float32).view(1, -1).expand(h, w)
        density = (10 * i + j).expand(b, 1, h, w)
        logits = torch.stack([i, torch.zeros_like(i)]).expand(b, 2, h, w)
        return CountingOutput(logits, density)


# ------------------------------------------------------------------------------------- metrics
def test_count_metrics_hand_computed():
    m = ev.count_metrics([10.0, 0.0, 5.0, 3.0], [8.0, 0.0, 10.0, 3.0])  # errors 2, 0, -5, 0
    assert m["images"] == 4
    assert m["mae"] == pytest.approx(7 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(29 / 4))
    assert m["nae"] == pytest.approx((2 / 8 + 5 / 10 + 0 / 3) / 3)  # the empty image is skipped
    assert math.isnan(ev.count_metrics([1.0], [0.0])["nae"])
    assert ev.count_metrics(torch.tensor([1.0]), torch.tensor([3.0]))["mae"] == pytest.approx(2.0)
    assert math.isnan(ev.count_metrics([], [])["mae"])
    with pytest.raises(ValueError, match="predictions"):
        ev.count_metrics([1.0, 2.0], [1.0])


def test_density_levels_tertiles_and_fixed_edges():
    assert ev.density_levels([1, 50, 400]) == ["sparse", "medium", "dense"]
    assert ev.density_levels([0, 99, 100, 1000], edges=[100, 500]) == ["sparse", "sparse", "medium", "dense"]
    with pytest.raises(ValueError, match="edges"):
        ev.density_levels([1, 2], edges=[1])


# ----------------------------------------------------------------------------------- inference
def test_predict_full_eval_mode_restored():
    model = PoolModel().train()
    out = ev.predict_full(model, torch.rand(3, 37, 50))
    assert out.density.shape == (1, 1, 5, 7) and out.logits.shape == (1, 5, 5, 7)
    assert model.training and not out.density.requires_grad


@pytest.mark.parametrize("size", [(192, 256), (197, 259)])
@pytest.mark.parametrize("stride", [64, 32])
def test_sliding_matches_full_for_translation_equivariant_model(size, stride):
    """3x4 windows of 64 pixels (more with overlap or an odd size): same blocks, same values."""
    torch.manual_seed(0)
    image = torch.rand(3, *size)
    model = PoolModel()
    full = ev.predict_full(model, image)
    slide = ev.predict_sliding(model, image, window=64, stride=stride, batch_size=5)
    assert slide.density.shape == full.density.shape == (1, 1, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
    torch.testing.assert_close(slide.density, full.density, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slide.logits.softmax(1), full.logits.softmax(1), atol=1e-5, rtol=1e-5)


def test_sliding_overlap_is_averaged():
    """56x48 pixels (7x6 blocks), window 32 (4 blocks), stride 16 (2 blocks): row windows start at blocks
    0, 2 and 3 (the last one shifted to the border), column windows at 0 and 2. By hand, the mean local
    row index of the windows covering rows 0..6 is 0, 1, (2+0)/2, (3+1+0)/3, (2+1)/2, (3+2)/2, 3 and the
    mean local column index of columns 0..5 is 0, 1, 1, 2, 2, 3."""
    model = PositionModel()
    out = ev.predict_sliding(model, torch.rand(3, 56, 48), window=32, stride=16)
    rows = torch.tensor([0, 1, 1, 4 / 3, 1.5, 2.5, 3]).view(-1, 1)
    cols = torch.tensor([0, 1, 1, 2, 2, 3], dtype=torch.float32).view(1, -1)
    torch.testing.assert_close(out.density[0, 0], 10 * rows + cols)
    # probabilities are averaged: row 3 is local row 3, 1 and 0 of its three windows (logit i vs 0)
    expected = torch.sigmoid(torch.tensor([3.0, 1.0, 0.0])).mean()
    torch.testing.assert_close(out.logits.softmax(1)[0, 0, 3], expected.expand(6))
    assert [s[0] for s in model.seen] == [6]  # 3 x 2 windows of one size, in one batch


def test_official_tiling_224():
    """window = stride = 224 on 672x896: the 3x4 non-overlapping tiles, each block seen once."""
    boxes = ev.sliding_windows(672, 896, 224, 224)
    assert boxes == [(224 * r, 224 * c, 224, 224) for r in range(3) for c in range(4)]
    model = PositionModel()
    out = ev.predict_sliding(model, torch.rand(1, 3, 672, 896), window=224, stride=224, batch_size=4)
    assert sum(s[0] for s in model.seen) == 12 and {s[-2:] for s in model.seen} == {(224, 224)}
    i = torch.arange(84).view(-1, 1) % 28
    j = torch.arange(112).view(1, -1) % 28
    torch.testing.assert_close(out.density[0, 0], (10 * i + j).float())


@pytest.mark.parametrize("height,width", [(700, 900), (1000, 1504), (224, 224), (232, 456)])
def test_window_count_matches_official_formula(height, width):
    """The official code has ceil((H - window) / stride) + 1 rows (and likewise columns)."""
    boxes = ev.sliding_windows(height, width, 224, 224)
    rows = math.ceil((height - 224) / 224) + 1
    cols = math.ceil((width - 224) / 224) + 1
    assert len(boxes) == rows * cols
    assert max(t + h for t, _, h, _ in boxes) == height and max(l + w for _, l, _, w in boxes) == width
    assert all(t % 8 == 0 and l % 8 == 0 for t, l, _, _ in boxes)


def test_bad_window_arguments():
    model, image = PositionModel(), torch.rand(3, 64, 64)
    with pytest.raises(ValueError, match="stride"):
        ev.predict_sliding(model, image, window=64, stride=20)
    with pytest.raises(ValueError, match="window"):
        ev.predict_sliding(model, image, window=100, stride=64)
    with pytest.raises(ValueError, match="stride .* must not exceed window"):
        ev.predict_sliding(model, image, window=32, stride=64)
    with pytest.raises(ValueError, match="window"):
        ev.sliding_windows(64, 64, window=0)
    with pytest.raises(ValueError, match="window"):
        ev.plan_inference(64, 64, window=True)
    with pytest.raises(ValueError, match="batch_size"):
        ev.predict_sliding(model, image, window=32, batch_size=0)
    assert model.seen == []


def test_predict_density_choice():
    assert ev.plan_inference(2048, 2048, device="cpu")["mode"] == "full"  # CPU_MAX_PIXELS
    assert ev.plan_inference(2048, 2056, device="cpu")["mode"] == "sliding"
    plan = ev.plan_inference(600, 600, max_pixels=10_000)
    assert (plan["mode"], plan["window"], plan["stride"]) == ("sliding", ev.DEFAULT_WINDOW, ev.DEFAULT_STRIDE)
    assert ev.plan_inference(64, 64, window=32)["stride"] == 32
    model = PositionModel()
    ev.predict_density(model, torch.rand(3, 64, 64), max_pixels=10_000)
    assert model.seen == [(1, 3, 64, 64)]
    model.seen.clear()
    ev.predict_density(model, torch.rand(3, 64, 64), window=32)  # an explicit window forces sliding
    assert model.seen == [(4, 3, 32, 32)]


def test_sliding_close_to_full_for_random_init_gigacount():
    """Random-init ``gigacount_no_fusion`` on a 384x512 synthetic image, 3x4 windows of 128 pixels.

    The outputs cannot agree exactly: the network's receptive field is larger than a window, so the
    zero padding at the window borders changes the features of the blocks near them (this image and
    seed: up to 11% on single blocks, mean 1.0%, count 0.5%, block correlation 0.990). The tolerances
    below (count 2%, mean block difference 4%, correlation > 0.95) leave a 2-4x margin and stay far
    from what misplaced outputs give: the sliding map shifted by one block column differs by 17% on
    average with correlation 0.09. Exact placement is tested with the equivariant PoolModel above.
    """
    from gigacount_lib.models import build_model

    torch.manual_seed(0)
    model = build_model("gigacount_no_fusion", None, pretrained=None)
    image = _synthetic("test")[0][0][:, :384, :512]
    full = ev.predict_full(model, image).density.float().flatten()
    slide = ev.predict_sliding(model, image, window=128, stride=128).density.flatten()
    assert slide.shape == full.shape == (48 * 64,)
    assert float((slide.sum() - full.sum()).abs() / full.sum()) < 0.02
    assert float((slide - full).abs().mean() / full.abs().mean()) < 0.04
    assert float(torch.corrcoef(torch.stack([full, slide]))[0, 1]) > 0.95


# ---------------------------------------------------------------------------------- evaluation
_DATASETS: dict[str, object] = {}


def _synthetic(split: str):
    if split not in _DATASETS:
        from gigacount_lib.data.datasets import QNRFDataset
        from gigacount_lib.data.synthetic import resolve_data_root

        _DATASETS[split] = QNRFDataset(resolve_data_root(None, quick=True, seed=0), split)
    return _DATASETS[split]


class _Subset:
    """The first images of a dataset; those in ``unlabelled`` lose their points and labels."""

    def __init__(self, dataset, indices, unlabelled=()) -> None:
        self.dataset, self.indices, self.unlabelled = dataset, list(indices), set(unlabelled)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        image, points, meta = self.dataset[self.indices[i]]
        if self.indices[i] in self.unlabelled:
            points, meta = torch.zeros(0, 2), {**meta, "labelled": False, "count": 0}
        return image, points, meta


def test_evaluate_model_synthetic(tmp_path):
    data = _synthetic("test")
    model = PoolModel()
    result = ev.evaluate_model(model, _Subset(data, range(4), unlabelled={1}), protocol="heldout")
    df = result.per_image
    assert len(df) == 4
    assert {"name", "true_count", "pred_count", "error", "abs_error", "density_level", "brightness"} <= set(df.columns)
    assert df["labelled"].tolist() == [True, False, True, True]
    assert math.isnan(df.loc[1, "true_count"]) and df.loc[1, "density_level"] == "unlabelled"
    assert np.isfinite(df.loc[1, "pred_count"])
    assert sorted(df.loc[[0, 2, 3], "density_level"]) == ["dense", "medium", "sparse"]
    assert df["true_count"].tolist()[0] == data[0][1].shape[0]
    assert df.loc[0, "brightness"] == pytest.approx(float(data[0][0].mean()), abs=1e-6)
    np.testing.assert_allclose(df["error"].dropna(), (df["pred_count"] - df["true_count"]).dropna())

    m = result.metrics
    assert (m["images"], m["unlabelled_images"], m["blocks"]) == (3, 1, 3 * 48 * 64)
    assert 0 < m["nonempty_blocks"] < m["blocks"]
    for key in ("mae", "rmse", "nae", "ece", "nonempty_ece", "classwise_ece", "block_accuracy",
                "nonempty_block_accuracy"):
        assert math.isfinite(m[key]), key
    assert result.reliability_classwise.kind == "classwise"
    assert m["classwise_ece"] == pytest.approx(result.reliability_classwise.ece)
    labelled = df[df["labelled"]]
    assert m["mae"] == pytest.approx(ev.count_metrics(labelled["pred_count"], labelled["true_count"])["mae"])

    # the unlabelled image changes nothing: same metrics as the three labelled images alone
    alone = ev.evaluate_model(model, _Subset(data, [0, 2, 3])).metrics
    for key in ("mae", "rmse", "nae", "ece", "nonempty_ece", "classwise_ece", "block_accuracy", "blocks",
                "nonempty_blocks"):
        assert m[key] == pytest.approx(alone[key], rel=1e-9), key

    paths = result.save(tmp_path / "eval")
    csv = pd.read_csv(paths["per_image"])
    assert len(csv) == 4 and list(csv.columns) == list(df.columns)
    saved = json.loads(paths["metrics"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert saved["metrics"]["mae"] == pytest.approx(m["mae"])
    assert saved["settings"]["protocol_label"] == "held-out validation, test evaluated once"

    # sliding path: calibration from averaged probabilities, same blocks
    slid = ev.evaluate_model(model, _Subset(data, range(2)), window=128, stride=96)
    assert set(slid.per_image["inference"]) == {"sliding"} and slid.metrics["blocks"] == 2 * 48 * 64
    assert math.isfinite(slid.metrics["ece"])
    assert slid.metrics["mae"] == pytest.approx(ev.evaluate_model(model, _Subset(data, range(2))).metrics["mae"],
                                                abs=1e-3)


# ----------------------------------------------------------------------------------- protocols
def test_heldout_split():
    train, val = ev.heldout_split(50, fraction=0.1, seed=0)
    assert len(val) == 5 and len(train) == 45
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(50))
    assert ev.heldout_split(50, 0.1, 0) == (train, val)
    assert ev.heldout_split(50, 0.1, 1)[1] != val
    assert len(ev.heldout_split(3, 0.01)[1]) == 1
    for bad in ({"n_images": 1}, {"n_images": 10, "fraction": 0.0}, {"n_images": 10, "fraction": 1.0}):
        with pytest.raises(ValueError):
            ev.heldout_split(**bad)


def test_protocols():
    assert set(ev.PROTOCOLS) == {"official", "heldout"} and ev.DEFAULT_PROTOCOL == "heldout"
    assert ev.protocol_label("official") == "selected on test"
    assert ev.protocol_label("heldout") == "held-out validation, test evaluated once"
    with pytest.raises(ValueError, match="protocol"):
        ev.protocol_label("test")
    assert (ev.OFFICIAL_WINDOW, ev.OFFICIAL_STRIDE, ev.OFFICIAL_EVAL_EVERY) == (224, 224, 5)
    assert [e for e in range(1, 16) if ev.is_eval_epoch(e)] == [5, 10, 15]
