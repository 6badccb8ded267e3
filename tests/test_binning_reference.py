"""gigacount_lib.binning against CLIP-EBC's published numbers in ``../shared/reference``.

CLIP-EBC (Ma, Sanchez & Guha, arXiv:2403.09281) publishes block-count histograms
(``notebooks/counts/<dataset>/counts_<B>.json``) and the bins and anchors it trained with
(``configs/reduction_<B>.json``). Our anchors, derived from the histograms, must reproduce the
published ``average`` anchors to 1e-4. Which histogram reproduces which entry was found by
computing every (entry, histogram) pair (see ``test_only_the_matching_histogram_reproduces``):

* qnrf T=2 and T=4  <- ``qnrf_4096/counts_8.json`` (T=2: 2.093009 vs published 2.09296, |diff| 4.9e-5)
* qnrf T=11         <- ``qnrf_2048/counts_8.json`` (its largest count is exactly 11: one block;
  ``qnrf_4096`` tops out at 9, so T=11 is impossible there)
* sha, shb (T=2, 4) <- ``sha/counts_8.json``, ``shb/counts_8.json`` (exact to 5 decimals)
* nwpu, jhu         <- no histogram in the reference folder: not reproducible here.
"""
from __future__ import annotations

import json

import pytest

from gigacount_lib.binning import (
    CLIP_EBC_ANCHOR_HISTOGRAMS, BinConfig, CountHistogram, average_anchors, check_truncation,
    clip_ebc_configs_to_dict, coarse_bins, fine_bins, load_clip_ebc_configs, middle_anchors, suggest_truncation,
)

# (truncation, dataset) -> histogram folder; the table lives in gigacount_lib.binning.clip_ebc_io
# (notebook 02 reads it too).
MATCHING_HISTOGRAM = CLIP_EBC_ANCHOR_HISTOGRAMS
NO_HISTOGRAM = {"nwpu", "jhu"}


@pytest.fixture(scope="module")
def published(shared_reference):
    return load_clip_ebc_configs(shared_reference / "clip_ebc_reduction_8.json")


def histogram(shared_reference, folder: str, block: int = 8) -> CountHistogram:
    return CountHistogram.load(shared_reference / "clip_ebc_block_counts" / folder / f"counts_{block}.json")


def test_published_config_is_read(published):
    assert all(key[2] == "fine" for key in published)
    assert {(t, d) for t, d, _ in published} == set(MATCHING_HISTOGRAM) | {(t, d) for t in (2, 4) for d in NO_HISTOGRAM}
    assert all(cfg.reduction == 8 for cfg in published.values())
    assert published[(4, "qnrf", "fine")] == BinConfig.gigacount_qnrf()


def test_fine_bins_match_published_bins(published):
    for (t, dataset, gran), cfg in published.items():
        assert cfg.bins == fine_bins(t), (t, dataset)


def test_middle_anchors_match_published(shared_reference):
    mids = load_clip_ebc_configs(shared_reference / "clip_ebc_reduction_8.json", anchor_kind="middle")
    for key, cfg in mids.items():
        assert cfg.anchor_points == middle_anchors(cfg.bins), key


@pytest.mark.parametrize("key", sorted(MATCHING_HISTOGRAM), ids=lambda k: f"{k[1]}-T{k[0]}")
def test_average_anchors_reproduce_published(shared_reference, published, key):
    t, dataset = key
    hist = histogram(shared_reference, MATCHING_HISTOGRAM[key])
    ours = BinConfig.from_histogram(hist, t, granularity="fine", anchor_kind="average")
    theirs = published[(t, dataset, "fine")]
    assert ours.bins == theirs.bins
    assert ours.anchor_points == pytest.approx(theirs.anchor_points, abs=1e-4)


def test_only_the_matching_histogram_reproduces(shared_reference, published):
    """For each entry with a histogram, search all four reduction-8 histograms for a match."""
    folders = ["qnrf_2048", "qnrf_4096", "sha", "shb"]
    hists = {f: histogram(shared_reference, f) for f in folders}
    for (t, dataset, _), cfg in published.items():
        matches = []
        for folder, hist in hists.items():
            if t > hist.max_count:
                continue
            if abs(average_anchors(cfg.bins, hist)[-1] - cfg.anchor_points[-1]) <= 1e-4:
                matches.append(folder)
        if dataset in NO_HISTOGRAM:  # nothing to reproduce from: no histogram was published with the data
            assert not list((shared_reference / "clip_ebc_block_counts").glob(f"{dataset}*"))
        else:
            assert matches == [MATCHING_HISTOGRAM[(t, dataset)]], (t, dataset, matches)


def test_qnrf_t11_is_impossible_at_4096(shared_reference):
    hist = histogram(shared_reference, "qnrf_4096")
    assert hist.max_count == 9
    with pytest.raises(ValueError, match="larger than any observed block count"):
        check_truncation(hist, 11)


def test_qnrf_resolution_matters(shared_reference):
    """The same dataset at a smaller resize has denser blocks: a heavier tail, a larger last anchor."""
    a2048 = BinConfig.from_histogram(histogram(shared_reference, "qnrf_2048"), 4).anchor_points[-1]
    a4096 = BinConfig.from_histogram(histogram(shared_reference, "qnrf_4096"), 4).anchor_points[-1]
    assert a2048 > a4096 + 0.1


def test_coarse_and_dynamic_anchors_reproduce_reduction_16(shared_reference):
    """Published coarse/dynamic values, CLIP-EBC ``configs/reduction_16.json`` (qnrf, T=8), from
    ``qnrf_2048/counts_16.json``: bins from :func:`coarse_bins`, anchors from the histogram."""
    hist = histogram(shared_reference, "qnrf_2048", 16)
    coarse = coarse_bins(8)
    assert average_anchors(coarse, hist) == pytest.approx((0, 1.14978, 3.27641, 5.30609, 8.11466), abs=1e-4)
    dynamic = coarse_bins(8, split=4)
    assert average_anchors(dynamic, hist) == pytest.approx((0, 1, 2, 3, 4.29278, 6.31441, 9.23349), abs=1e-4)
    assert middle_anchors(dynamic) == (0, 1, 2, 3, 4.5, 6.5, 8)


def test_published_config_roundtrip(shared_reference, tmp_path, published):
    mids = load_clip_ebc_configs(shared_reference / "clip_ebc_reduction_8.json", anchor_kind="middle")
    grouped = {}
    for (t, d, g), cfg in published.items():
        grouped[(t, d)] = [cfg, mids[(t, d, g)]]
    original = json.loads((shared_reference / "clip_ebc_reduction_8.json").read_text())
    assert clip_ebc_configs_to_dict(grouped) == original


def test_suggested_truncation_on_qnrf(shared_reference):
    hist = histogram(shared_reference, "qnrf_4096")
    t = suggest_truncation(hist)
    assert t == 4  # GigaCount's choice on QNRF at reduction 8
    assert hist.tail(t) >= 1e-6 * hist.total > hist.tail(t + 1)
