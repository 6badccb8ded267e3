"""Notebook 06's figures (gigacount_lib.evaluation_plots) and published numbers (paper_results) on tiny inputs."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gigacount_lib import evaluation_plots as ep  # noqa: E402
from gigacount_lib import paper_results as pr  # noqa: E402
from gigacount_lib.ablation import AXES, versus_reference  # noqa: E402
from gigacount_lib.calibration import reliability_stats  # noqa: E402
from gigacount_lib.evaluate import density_levels  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def per_image(seed: int = 0, n: int = 9) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    true = np.arange(n, dtype=float) * 10
    pred = true + rng.normal(0, 3, n)
    return pd.DataFrame({"name": [f"img{i}" for i in range(n)], "labelled": True, "true_count": true,
                         "pred_count": pred, "error": pred - true, "abs_error": np.abs(pred - true),
                         "density_level": density_levels(true), "brightness": np.linspace(0.1, 0.9, n)})


def test_brightness_bins_share_edges_and_cover_every_image():
    labels, edges = ep.brightness_bins([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], n_bins=3)
    assert len(edges) == 4 and labels[0] == labels[1] != labels[-1]
    again, _ = ep.brightness_bins([0.05, 0.95], edges=edges)  # outside the range: clipped to the end buckets
    assert again == [labels[0], labels[-1]]
    with pytest.raises(ValueError, match="increasing"):
        ep.brightness_bins([0.1], edges=[0.5, 0.2])


def test_error_by_group_and_the_error_analysis_figure():
    results = {"official": per_image(0), "official + low light": per_image(1)}
    table = ep.error_by_group(results, "density_level")
    assert set(table["model"]) == set(results) and table["images"].sum() == 18
    by_light = ep.error_by_group(results, "brightness_bin")
    assert list(by_light["brightness_bin"][:3]) == ["0.10-0.37", "0.37-0.63", "0.63-0.90"]  # darkest first
    assert list(by_light["model"]) == ["official"] * 3 + ["official + low light"] * 3
    assert list(table["density_level"][:3]) == ["sparse", "medium", "dense"]
    fig = ep.plot_error_analysis(results, title="synthetic")
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "error against density"
    _, ax = plt.subplots()
    assert ep.plot_error_by_brightness(ax, results) is ax
    with pytest.raises(ValueError, match="lacks"):
        ep.error_by_group({"x": per_image().drop(columns="brightness")})
    with pytest.raises(ValueError, match="by must be"):
        ep.error_by_group(results, "nope")


def test_best_and_worst_skip_empty_images_for_the_best():
    table = per_image()
    table.loc[0, ["true_count", "pred_count", "error", "abs_error"]] = [0.0, 0.0, 0.0, 0.0]  # perfect but empty
    picked = ep.best_and_worst(table, k=2)
    assert list(picked["rank"]) == ["best 1", "best 2", "worst 1", "worst 2"]
    assert 0 not in picked.index[:2]
    assert picked["abs_error"].iloc[2] == table["abs_error"].max()


class BlockModel(torch.nn.Module):
    """A model whose density is the 8x8 mean brightness (any input size)."""

    def forward(self, x):
        from gigacount_lib.models.head import CountingOutput

        density = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 8, ceil_mode=True)
        return CountingOutput(torch.zeros(x.shape[0], 2, *density.shape[-2:]), density)


def test_collect_examples_and_the_density_figure():
    images = [torch.rand(3, 32, 40) for _ in range(3)]
    points = [torch.tensor([[1.0, 2.0], [20.0, 30.0]]), torch.zeros(0, 2), torch.tensor([[39.0, 31.0]])]
    dataset = [(im, p, {"name": f"s{i}"}) for i, (im, p) in enumerate(zip(images, points))]
    rows = pd.DataFrame({"rank": ["best 1", "worst 1"]}, index=[2, 0])
    examples = ep.collect_examples(BlockModel(), dataset, rows)
    assert [e["name"] for e in examples] == ["s2", "s0"] and examples[1]["true"] == 2
    assert examples[0]["gt_map"].shape == examples[0]["pred_map"].shape == (4, 5)
    assert math.isclose(examples[0]["pred"], float(examples[0]["pred_map"].sum()), rel_tol=1e-6)
    fig = ep.plot_density_examples(examples)
    assert len([a for a in fig.axes if a.get_title()]) == 6  # 2 rows x 3 panels (+ colour bars)
    assert "ground truth: 1 heads" in [a.get_title() for a in fig.axes]
    with pytest.raises(ValueError):
        ep.plot_density_examples([])


def test_reliability_comparison_draws_both_block_sets():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(200, 3, generator=gen), 1)
    classes = torch.randint(0, 3, (200,), generator=gen)
    pair = (reliability_stats(probs, classes), reliability_stats(probs[:50], classes[:50]))
    fig = ep.plot_reliability_comparison({"hybrid": pair, "no L_Prob": (pair[0], None)})
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["all blocks (mostly empty): 200 blocks", "blocks with at least one head: 50 blocks"]
    assert any("ECE" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def ablation_table() -> pd.DataFrame:
    rows = []
    for variant, axis, base in (("aug_official", "augmentation", 10.0), ("aug_none", "augmentation", 14.0),
                                ("loss_hybrid", "loss", 10.0), ("loss_no_prob", "loss", 10.2)):
        for seed in (0, 1):
            rows.append({"axis": axis, "variant": variant, "seed": seed, "status": "completed",
                         "test_mae": base + 0.1 * seed, "ratio": base / 20, "trivial_mae": 20.0})
    rows.append({"axis": "loss", "variant": "loss_dace", "seed": 0, "status": "failed", "test_mae": float("nan"),
                 "ratio": float("nan"), "trivial_mae": float("nan")})
    return pd.DataFrame(rows)


def test_ablation_plot_one_panel_per_axis_with_the_reference_marked():
    fig = ep.plot_ablation(ablation_table(), title="synthetic, short budget")
    assert [a.get_title() for a in fig.axes] == ["augmentation", "loss"]
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["aug_official *", "aug_none"]
    assert "loss_dace" not in [t.get_text() for t in fig.axes[1].get_xticklabels()]  # failed run left out
    with pytest.raises(ValueError, match="no finished run"):
        ep.plot_ablation(ablation_table().assign(status="failed"))


def test_published_table_keeps_gaps_and_sources():
    qnrf = pr.published_table("UCF-QNRF")
    giga = qnrf[qnrf["method"] == "GigaCount"].iloc[0]
    assert giga["mae"] == 103.3 and math.isnan(giga["rmse"]) and not giga["verified"]
    assert qnrf[qnrf["method"] != "GigaCount"]["mae"].isna().all()  # not found: shown as gaps
    assert (pr.published_table()["source"].str.len() > 0).all()
    assert set(pr.published_table()["dataset"]) == {"UCF-QNRF", "NWPU-Crowd"}


def test_claim_agreement_sentences_follow_the_table():
    table = ablation_table()
    versus = versus_reference(table)
    out = pr.claim_agreement(versus, label="our synthetic runs")
    row = out[out["variant"] == "aug_none"].iloc[0]
    assert row["expected"] == "higher" and row["verdict"] == "higher" and row["agreement"] == "agrees"
    assert "so they agree with it" in row["sentence"] and row["claim"] == AXES["augmentation"].claim
    assert out[out["variant"] == "loss_no_prob"].iloc[0]["agreement"] == "no claim"
    assert out[out["variant"] == "loss_dace"].iloc[0]["agreement"] == "inconclusive"  # no finished seed
    flipped = table.copy()
    flipped.loc[flipped["variant"] == "aug_none", "test_mae"] = [5.0, 5.1]
    row = pr.claim_agreement(versus_reference(flipped)).set_index("variant").loc["aug_none"]
    assert row["agreement"] == "disagrees" and "disagree with it" in row["sentence"]
