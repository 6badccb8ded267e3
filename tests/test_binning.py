"""Unit tests of gigacount_lib.binning on small hand-made data (no reference files needed)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gigacount_lib.binning import (
    BinConfig, CountHistogram, average_anchors, block_count_histogram, block_count_histograms,
    check_truncation, class_frequencies, class_shares, clip_ebc_configs_to_dict, coarse_bins,
    compute_anchors, dynamic_bins, fine_bins, load_clip_ebc_configs, log_bins, make_bins,
    middle_anchors, plot_bins, plot_class_balance, plot_count_histograms, quantisation_errors,
    reconstruct_counts, save_clip_ebc_configs, suggest_truncation, validate_bins,
)
from gigacount_lib.data.density import block_count_map

INF = math.inf

# A long-tailed toy histogram: n_c for c = 0..9.
TOY = CountHistogram((100000, 5000, 800, 200, 60, 20, 9, 4, 0, 1), block_size=8)


def assert_partition(bins):
    """Bins are increasing, contiguous, non-overlapping and cover 0 … inf, checked independently."""
    assert bins[0][0] == 0
    assert math.isinf(bins[-1][1])
    for (lo, hi), (lo2, _) in zip(bins[:-1], bins[1:]):
        assert lo <= hi < lo2
        assert lo2 == hi + 1
    for c in range(0, 60):  # every integer count falls in exactly one bin
        assert sum(lo <= c <= hi for lo, hi in bins) == 1


# ---------------------------------------------------------------- validate_bins
@pytest.mark.parametrize("bins, message", [
    ([], "at least one"),
    ([[0, 1], [1, "inf"]], "overlap"),
    ([[0, 0], [2, INF]], "gap"),
    ([[0, 3], [1, 2], [4, INF]], "overlap or are not increasing"),
    ([[1, 1], [2, INF]], "start at count 0"),
    ([[0, 0], [1, 5]], "open"),
    ([[0, 0], [3, 1], [4, INF]], "below low"),
    ([[0, float("nan")], [1, INF]], "NaN"),
    ([[0, 0, 1], [1, INF]], "expected"),
])
def test_validate_bins_rejects_bad_bins(bins, message):
    with pytest.raises(ValueError, match=message):
        validate_bins(bins)
    with pytest.raises(ValueError):
        BinConfig(bins=bins, anchor_points=[0.0] * max(len(bins), 1))


# ---------------------------------------------------------------- constructors
def test_fine_bins():
    assert fine_bins(4) == ((0, 0), (1, 1), (2, 2), (3, 3), (4, INF))
    with pytest.raises(ValueError):
        fine_bins(0)


def test_coarse_bins_match_clip_ebc_layouts():
    # CLIP-EBC configs/reduction_16.json (T=8) and reduction_32.json (T=19), coarse and dynamic.
    assert coarse_bins(8) == ((0, 0), (1, 2), (3, 4), (5, 6), (7, INF))
    assert coarse_bins(19)[-2:] == ((17, 18), (19, INF)) and len(coarse_bins(19)) == 11
    assert coarse_bins(8, split=4) == ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, 7), (8, INF))
    assert coarse_bins(19, split=10)[-2:] == ((16, 17), (18, INF)) and len(coarse_bins(19, split=10)) == 15
    assert coarse_bins(6, width=1) == fine_bins(6)
    assert coarse_bins(5, width=3) == ((0, 0), (1, 3), (4, INF))
    with pytest.raises(ValueError, match="split"):
        coarse_bins(3, split=4)
    with pytest.raises(ValueError, match="width"):
        coarse_bins(3, width=0)


def test_dynamic_bins_merge_rare_counts():
    total = TOY.total
    for share in (2e-4, 1e-3, 1e-2):
        bins = dynamic_bins(TOY, 9, min_share=share)
        assert_partition(bins)
        assert bins[-1] == (9, INF)
        for lo, hi in bins[:-1]:  # every closed bin holds the share
            assert TOY.frequency(lo, hi) >= share * total
    # frequent counts keep their own bin, rare ones are grouped (n_4 = 60 >= 21.2 > n_5 = 20)
    assert dynamic_bins(TOY, 9, min_share=2e-4) == ((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 8), (9, INF))
    # a closed bin that cannot reach the share is merged into its left neighbour
    assert dynamic_bins(TOY, 9, min_share=1e-3)[-2] == (3, 8)
    # min_share 0 gives fine bins; max_width bounds the width
    assert dynamic_bins(TOY, 9, min_share=0.0) == fine_bins(9)
    assert all(hi - lo + 1 <= 2 for lo, hi in dynamic_bins(TOY, 9, min_share=0.5, max_width=2)[:-1])
    with pytest.raises(ValueError, match="min_share"):
        dynamic_bins(TOY, 9, min_share=1.5)


def test_log_bins():
    bins = log_bins(16, 6)
    assert len(bins) == 6 and bins[-1] == (16, INF)
    widths = [hi - lo + 1 for lo, hi in bins[1:-1]]
    assert widths == sorted(widths) and widths[-1] > widths[0]  # geometric widening
    assert log_bins(5, 6) == fine_bins(5)
    assert len(log_bins(4, 2)) == 2
    with pytest.raises(ValueError, match="num_bins"):
        log_bins(4, 6)


@pytest.mark.parametrize("bins", [
    fine_bins(1), fine_bins(4), fine_bins(11),
    coarse_bins(1), coarse_bins(2), coarse_bins(4), coarse_bins(8), coarse_bins(19, split=10), coarse_bins(12, width=3),
    dynamic_bins(TOY, 9, 1e-2), dynamic_bins(TOY, 9, 1e-4), dynamic_bins(TOY, 4, 0.2), dynamic_bins(TOY, 1, 0.5),
    log_bins(1, 2), log_bins(9, 4), log_bins(32, 8), log_bins(100, 12),
], ids=lambda b: str(len(b)))
def test_every_constructor_gives_a_partition(bins):
    assert_partition(bins)


def test_make_bins_dispatch():
    assert make_bins("fine", 4) == fine_bins(4)
    assert make_bins("coarse", 8) == coarse_bins(8)
    assert make_bins("dynamic", 9, TOY, min_share=1e-3) == dynamic_bins(TOY, 9, 1e-3)
    assert make_bins("log", 16, num_bins=5) == log_bins(16, 5)
    with pytest.raises(ValueError, match="histogram"):
        make_bins("dynamic", 4)
    with pytest.raises(ValueError, match="unknown granularity"):
        make_bins("medium", 4)


# ---------------------------------------------------------------- truncation
def test_truncation_larger_than_any_count_is_an_error():
    assert check_truncation(TOY, 9) == 9
    with pytest.raises(ValueError, match="larger than any observed block count"):
        check_truncation(TOY, 10)
    with pytest.raises(ValueError, match="larger than any observed"):
        BinConfig.from_histogram(TOY, 12)
    with pytest.raises(ValueError, match="larger than any observed"):
        average_anchors(fine_bins(10), TOY)


def test_suggest_truncation():
    total = TOY.total
    t = suggest_truncation(TOY, min_share=50 / total)
    assert TOY.tail(t) >= 50 and TOY.tail(t + 1) < 50
    assert suggest_truncation(TOY, min_share=0.0) == TOY.max_count
    with pytest.raises(ValueError, match="empty"):
        suggest_truncation(CountHistogram((10,)))


# ---------------------------------------------------------------- anchors
def test_middle_anchors():
    assert middle_anchors(coarse_bins(8)) == (0, 1.5, 3.5, 5.5, 7)
    assert middle_anchors(fine_bins(3)) == (0, 1, 2, 3)


def test_average_anchors_by_hand():
    h = CountHistogram.from_mapping({"0": 10, "1": 6, "2": 2, "3": 1, "5": 1})
    # bins [0,0] [1,2] [3,inf]: (6*1 + 2*2)/8 = 1.25; (3 + 5)/2 = 4
    assert average_anchors(coarse_bins(4), h) == pytest.approx((0.0, 1.25, 4.0))
    assert average_anchors(fine_bins(3), h, decimals=5) == (0.0, 1.0, 2.0, 4.0)
    # count 4 is never observed: its closed bin falls back to its middle, or raises
    assert average_anchors(fine_bins(5), h)[4:] == (4.0, 5.0)
    assert average_anchors(((0, 0), (1, 3), (4, 4), (5, INF)), h)[2] == 4.0
    with pytest.raises(ValueError, match="holds no block"):
        average_anchors(((0, 0), (1, 3), (4, 4), (5, INF)), h, empty="error")
    assert compute_anchors(fine_bins(2), "middle") == (0, 1, 2)
    with pytest.raises(ValueError, match="histogram"):
        compute_anchors(fine_bins(2), "average")
    with pytest.raises(ValueError, match="anchor kind"):
        compute_anchors(fine_bins(2), "median", h)


def test_class_balance():
    freq = class_frequencies(coarse_bins(4), TOY)
    assert freq.tolist() == [100000, 5800, sum(TOY.frequencies[3:])]
    assert class_shares(coarse_bins(4), TOY).sum() == pytest.approx(1.0)


# ---------------------------------------------------------------- class mapping and expected count
def _brute_force_classes(counts, bins):
    out = torch.empty_like(counts, dtype=torch.long)
    for idx, c in np.ndenumerate(counts.numpy()):
        matches = [k for k, (lo, hi) in enumerate(bins) if lo <= math.floor(c) <= hi]
        out[idx] = matches[0]
    return out


@pytest.mark.parametrize("bins", [fine_bins(4), coarse_bins(8), coarse_bins(19, split=10), log_bins(32, 7)],
                         ids=["fine4", "coarse8", "dyn19", "log32"])
def test_counts_to_classes_at_edges(bins):
    cfg = BinConfig(bins=bins, anchor_points=middle_anchors(bins))
    for k, (lo, hi) in enumerate(bins):
        edges = [lo] + ([hi] if not math.isinf(hi) else [lo + 1000])
        assert cfg.counts_to_classes(torch.tensor(edges)).tolist() == [k] * len(edges)
        if k > 0:  # one below the lower edge belongs to the previous bin
            assert cfg.counts_to_classes(torch.tensor([lo - 1])).item() == k - 1
    counts = torch.randint(0, 40, (3, 5, 7)).float()
    classes = cfg.counts_to_classes(counts)
    assert classes.shape == counts.shape and classes.dtype == torch.long
    assert torch.equal(classes, _brute_force_classes(counts, bins))
    assert torch.equal(cfg.counts_to_classes(counts.long()), classes)
    with pytest.raises(ValueError, match="non-negative"):
        cfg.counts_to_classes(torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="finite"):
        cfg.counts_to_classes(torch.tensor([float("nan")]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_counts_to_classes_and_expected_count_on_gpu():
    cfg = BinConfig(bins=coarse_bins(8), anchor_points=middle_anchors(coarse_bins(8)))
    counts = torch.randint(0, 20, (2, 1, 16, 16)).float()
    on_gpu = cfg.counts_to_classes(counts.cuda())
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), cfg.counts_to_classes(counts))
    probs = torch.softmax(torch.randn(2, cfg.num_bins, 4, 4), dim=1)
    assert torch.allclose(cfg.expected_count(probs.cuda()).cpu(), cfg.expected_count(probs), atol=1e-6)


def test_expected_count_and_num_classes():
    cfg = BinConfig.gigacount_qnrf()
    probs = torch.zeros(2, 5, 3, 3)
    probs[:, 4] = 1.0
    assert torch.allclose(cfg.expected_count(probs), torch.full((2, 1, 3, 3), 4.21937))
    probs = torch.full((1, 5, 1, 1), 0.2)
    assert cfg.expected_count(probs).item() == pytest.approx(sum(cfg.anchor_points) / 5)
    mixed = torch.softmax(torch.randn(2, 5, 4, 4), dim=1)
    low = cfg.expected_count(mixed.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), cfg.expected_count(mixed), rtol=1e-2)
    assert cfg.expected_count(mixed.double()).dtype == torch.float64
    last = torch.full((4, 5), 0.2)
    assert cfg.expected_count(last, dim=-1).shape == (4, 1)
    with pytest.raises(ValueError, match="has 6 classes but the bin configuration has 5 bins"):
        cfg.check_num_classes(6)
    with pytest.raises(ValueError, match="classes"):
        cfg.expected_count(torch.zeros(1, 4, 2, 2))
    classes = cfg.counts_to_classes(torch.tensor([0.0, 3.0, 7.0]))
    assert cfg.classes_to_counts(classes).tolist() == pytest.approx([0, 3, 4.21937])


# ---------------------------------------------------------------- histograms
def _toy_annotations(seed=0, n_images=4):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_images):
        h, w = 40 + 8 * i, 56 - 4 * i
        n = 30 * (i + 1)
        pts = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
        out.append((f"img_{i}", pts, (h, w)))
    out.append(("empty", torch.zeros(0, 2), (17, 9)))
    return out


def test_histogram_streams_and_matches_brute_force():
    ann = _toy_annotations()
    hists = block_count_histograms(iter(ann), (4, 8, 16), progress=False)
    for b, hist in hists.items():
        every = torch.cat([block_count_map(p, s, b).flatten() for _, p, s in ann])
        assert hist.block_size == b
        assert hist.total == every.numel() == sum(math.ceil(s[0] / b) * math.ceil(s[1] / b) for _, _, s in ann)
        assert hist.num_heads == sum(len(p) for _, p, _ in ann)
        expected = np.bincount(every.long().numpy())
        assert list(hist.frequencies) == expected.tolist()
        assert hist.metadata["num_images"] == len(ann)
    assert block_count_histogram(ann, 8, progress=False) == hists[8]


def test_histogram_from_object_with_iter_annotations():
    class Reader:
        def __init__(self, ann):
            self.ann = ann

        def __len__(self):
            return len(self.ann)

        def iter_annotations(self):
            yield from self.ann

    ann = _toy_annotations(1)
    assert block_count_histogram(Reader(ann), 8, progress=True) == block_count_histogram(ann, 8, progress=False)


def test_histogram_max_side_resizes_points():
    pts = torch.tensor([[1.0, 1.0], [3.0, 3.0], [100.0, 60.0]])
    full = block_count_histogram([("a", pts, (64, 128))], 8, progress=False)
    half = block_count_histogram([("a", pts, (64, 128))], 8, max_side=64, progress=False)
    assert full.total == 8 * 16 and half.total == 4 * 8
    assert half.num_heads == full.num_heads == 3
    assert half.frequencies[2] == 1  # the two near points now share one 8x8 block (16x16 before)


def test_histogram_bad_input():
    with pytest.raises(ValueError, match="empty"):
        block_count_histogram([], 8, progress=False)
    with pytest.raises(ValueError, match="img_bad"):
        block_count_histogram([("img_bad", torch.tensor([[500.0, 1.0]]), (16, 16))], 8, progress=False)
    with pytest.raises(ValueError, match="expected"):
        block_count_histogram([("x", torch.zeros(0, 2))], 8, progress=False)
    with pytest.raises(ValueError, match="positive"):
        block_count_histogram([("x", torch.zeros(0, 2), (0, 5))], 8, progress=False)
    with pytest.raises(ValueError, match="empty"):
        CountHistogram.from_mapping({})
    with pytest.raises(ValueError, match="non-negative integers"):
        CountHistogram.from_mapping({"1.5": 3})
    with pytest.raises(ValueError, match="frequency"):
        CountHistogram.from_mapping({"1": -3})


def test_histogram_io_roundtrip(tmp_path):
    path = TOY.save(tmp_path / "toy" / "counts_8.json")
    data = json.loads(path.read_text())
    assert data["0"] == 100000 and "8" not in data  # CLIP-EBC layout: observed counts only
    back = CountHistogram.load(path)
    assert back == TOY and back.block_size == 8
    assert CountHistogram.load(path, block_size=16).block_size == 16
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="bad.json"):
        CountHistogram.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        CountHistogram.load(tmp_path / "missing.json")
    s = TOY + CountHistogram((1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 7), block_size=8)
    assert s.frequencies[0] == 100001 and s.max_count == 10
    with pytest.raises(ValueError, match="cannot add"):
        TOY + CountHistogram((1,), block_size=16)


# ---------------------------------------------------------------- BinConfig construction and JSON
def test_from_histogram_every_granularity():
    for gran, opts in [("fine", {}), ("coarse", {}), ("dynamic", {"min_share": 1e-3}), ("log", {"num_bins": 5})]:
        for kind in ("middle", "average"):
            cfg = BinConfig.from_histogram(TOY, 8, granularity=gran, anchor_kind=kind, **opts)
            assert cfg.reduction == 8 and cfg.granularity == gran and cfg.anchor_kind == kind
            assert_partition(cfg.bins)
            assert cfg.metadata["truncation"] == 8
    with pytest.raises(ValueError, match="reduction"):
        BinConfig.from_histogram(TOY, 4, reduction=16)
    with pytest.raises(ValueError, match="block_size"):
        BinConfig.from_histogram(CountHistogram((5, 4, 3)), 2)
    mid = BinConfig.from_histogram(TOY, 4, anchor_kind="average").with_anchors("middle")
    assert mid.anchor_points == (0, 1, 2, 3, 4) and mid.anchor_kind == "middle"


def test_binconfig_json_roundtrip(tmp_path):
    cfg = BinConfig.from_histogram(TOY, 8, granularity="coarse")
    path = cfg.save(tmp_path / "cfg.json")
    data = json.loads(path.read_text())
    assert data["bins"][-1] == [7, "inf"] and set(data["anchor_points"]) == {"average", "middle"}
    back = BinConfig.load(path)
    assert back == cfg
    assert BinConfig.load(path, anchor_kind="middle").anchor_points == middle_anchors(cfg.bins)
    # the CLIP-EBC multi-entry layout, one entry
    path2 = cfg.save_clip_ebc(tmp_path / "reduction_8.json", dataset="toy")
    raw = json.loads(path2.read_text())
    assert raw["8"]["toy"]["bins"]["coarse"][0] == [0, 0]
    assert raw["8"]["toy"]["anchor_points"]["coarse"]["middle"] == [0, 1.5, 3.5, 5.5, 7]
    back2 = BinConfig.load(path2)
    assert back2.bins == cfg.bins and back2.anchor_points == pytest.approx(cfg.anchor_points)


def test_clip_ebc_multi_entry_roundtrip_and_selection(tmp_path):
    fine = BinConfig.from_histogram(TOY, 4)
    coarse = BinConfig.from_histogram(TOY, 8, granularity="coarse")
    fine_mid = fine.with_anchors("middle")
    data = clip_ebc_configs_to_dict({(4, "toy"): [fine, fine_mid], (8, "toy"): coarse, (4, "other"): fine})
    assert data["4"]["toy"]["anchor_points"]["fine"]["average"][-1] == pytest.approx(fine.anchor_points[-1])
    path = save_clip_ebc_configs({(4, "toy"): [fine, fine_mid], (8, "toy"): coarse}, tmp_path / "reduction_16.json")
    loaded = load_clip_ebc_configs(path)
    assert set(loaded) == {(4, "toy", "fine"), (8, "toy", "coarse")}
    assert loaded[(4, "toy", "fine")].reduction == 16  # from the file name
    assert loaded[(8, "toy", "coarse")].anchor_points == pytest.approx(coarse.anchor_points)
    assert load_clip_ebc_configs(path, anchor_kind="middle")[(4, "toy", "fine")].anchor_points == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="2 entries match"):
        BinConfig.load(path)
    assert BinConfig.load(path, truncation=8).granularity == "coarse"
    with pytest.raises(ValueError, match="no entry"):
        BinConfig.from_clip_ebc(path, truncation=5, dataset="toy")
    with pytest.raises(ValueError, match="two different"):
        clip_ebc_configs_to_dict({(4, "toy"): [fine, BinConfig.fine(5)]})


def test_clip_ebc_bad_files(tmp_path):
    bad = {"4": {"toy": {"bins": {"fine": [[0, 0], [2, "inf"]]},
                         "anchor_points": {"fine": {"middle": [0, 2], "average": [0, 2.5]}}}}}
    with pytest.raises(ValueError, match=r"T=4 / toy.*gap"):
        load_clip_ebc_configs(bad)
    missing = {"4": {"toy": {"bins": {"fine": [[0, 0], [1, "inf"]]}, "anchor_points": {"fine": {"middle": [0, 1]}}}}}
    with pytest.raises(ValueError, match="no 'average' anchors"):
        load_clip_ebc_configs(missing)
    (tmp_path / "x.json").write_text(json.dumps({"bins": [[0, 0]], "anchor_points": [0]}))
    with pytest.raises(ValueError, match="x.json"):
        BinConfig.load(tmp_path / "x.json")


# ---------------------------------------------------------------- quantisation error
def test_quantisation_errors():
    ann = _toy_annotations(2)
    hist = block_count_histogram(ann, 8, progress=False)
    t = hist.max_count
    configs = {
        "exact": BinConfig.from_histogram(hist, t, anchor_kind="middle"),  # every count has its own bin
        "fine2-middle": BinConfig.from_histogram(hist, 2, anchor_kind="middle"),
        "fine2-average": BinConfig.from_histogram(hist, 2, anchor_kind="average"),
        "coarse-middle": BinConfig.from_histogram(hist, t, granularity="coarse", anchor_kind="middle"),
    }
    table = quantisation_errors(ann, configs)
    assert list(table.index) == list(configs)
    assert table.loc["exact", "MAE"] == 0.0
    # truncating with the lower bound as anchor can only lose heads
    assert table.loc["fine2-middle", "bias"] < 0
    # average anchors preserve the total count of the data they were computed on
    assert abs(table.loc["fine2-average", "rel_total_error"]) < 1e-9
    assert table.loc["fine2-average", "MAE"] <= table.loc["fine2-middle", "MAE"]
    counts = block_count_map(ann[0][1], ann[0][2], 8)
    assert reconstruct_counts(counts, configs["exact"]).item() == pytest.approx(len(ann[0][1]))
    with pytest.raises(ValueError, match="empty"):
        quantisation_errors([], configs)


# ---------------------------------------------------------------- plots
def test_plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    plot_count_histograms(axes[0], {"toy": TOY, "toy2": {"0": 5, "1": 1}})
    assert len(axes[0].lines) == 2 and axes[0].get_yscale() == "log"
    configs = {"fine": BinConfig.from_histogram(TOY, 4), "coarse": BinConfig.from_histogram(TOY, 8, granularity="coarse")}
    plot_bins(axes[1], configs)
    assert len(axes[1].patches) == 5 + 5
    plot_class_balance(axes[2], configs, TOY)
    assert len(axes[2].patches) == 10
    plt.close(fig)


def test_find_shared_reference(tmp_path, monkeypatch):
    from gigacount_lib.binning import find_shared_reference

    ref = tmp_path / "somewhere" / "reference"
    (ref / "clip_ebc_block_counts").mkdir(parents=True)
    monkeypatch.setenv("GIGACOUNT_REFERENCE", str(ref))
    assert find_shared_reference() == ref
    monkeypatch.setenv("GIGACOUNT_REFERENCE", str(tmp_path / "nothing"))
    found = find_shared_reference(start=tmp_path)
    assert found is None or (found / "clip_ebc_block_counts").is_dir()
    monkeypatch.setenv("GIGACOUNT_REFERENCE", "none")
    assert find_shared_reference() is None
