"""The crowd-counting datasets this library knows, held once: names, aliases, homepages, layouts.

The readers (:mod:`.datasets`) and the downloader (:mod:`.download`) both look datasets up here, so a
name means the same dataset everywhere. A name is matched ignoring case, ``-`` and ``_``; it
resolves to a canonical key (``qnrf``, ``shanghaitech``, ``nwpu``, ``jhu``, ``synthetic``) and, for
ShanghaiTech, to a part (``sha`` = part A, ``shb`` = part B; plain ``shanghaitech`` names both).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo", "DATASETS", "ALIASES", "normalize_name", "lookup"]


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: ``key`` (canonical name), the name people know it by, where its owners publish
    it, the folder layout its reader expects under the data root, the paper to cite and the reader
    class in :mod:`gigacount_lib.data.datasets`."""

    key: str
    display_name: str
    homepage: str
    layout: str
    citation: str
    reader: str


DATASETS: dict[str, DatasetInfo] = {info.key: info for info in (
    DatasetInfo(
        key="qnrf", display_name="UCF-QNRF",
        homepage="https://www.crcv.ucf.edu/data/ucf-qnrf/",
        layout=("  Train/img_0001.jpg, Train/img_0001_ann.mat (key 'annPoints', (N, 2) x, y)\n"
                "  Test/img_0001.jpg,  Test/img_0001_ann.mat"),
        citation=("H. Idrees, M. Tayyab, K. Athrey, D. Zhang, S. Al-Maadeed, N. Rajpoot, M. Shah, "
                  "'Composition Loss for Counting, Density Map Estimation and Localization in Dense "
                  "Crowds', ECCV 2018"),
        reader="QNRFDataset"),
    DatasetInfo(
        key="shanghaitech", display_name="ShanghaiTech",
        homepage="https://github.com/desenzhou/ShanghaiTechDataset",
        layout=("  part_A/train_data/images/IMG_1.jpg, part_A/train_data/ground-truth/GT_IMG_1.mat\n"
                "  part_A/test_data/...; part_B/... likewise"),
        citation=("Y. Zhang, D. Zhou, S. Chen, S. Gao, Y. Ma, 'Single-Image Crowd Counting via "
                  "Multi-Column Convolutional Neural Network', CVPR 2016"),
        reader="ShanghaiTechDataset"),
    DatasetInfo(
        key="nwpu", display_name="NWPU-Crowd",
        homepage="https://www.crowdbenchmark.com/nwpucrowd.html",
        layout=("  images/0001.jpg (or images_part1/ .. images_part5/), mats/0001.mat (key 'annPoints'),\n"
                "  train.txt, val.txt, test.txt (one image id per line, first field)"),
        citation=("Q. Wang, J. Gao, W. Lin, X. Li, 'NWPU-Crowd: A Large-Scale Benchmark for Crowd "
                  "Counting and Localization', IEEE TPAMI 2021"),
        reader="NWPUDataset"),
    DatasetInfo(
        key="jhu", display_name="JHU-Crowd++",
        homepage="http://www.crowd-counting.com/",
        layout="  train/images/0001.jpg, train/gt/0001.txt ('x y w h o b' per head); val/, test/ likewise",
        citation=("V. A. Sindagi, R. Yasarla, V. M. Patel, 'JHU-CROWD++: Large-Scale Crowd Counting "
                  "Dataset and A Benchmark Method', IEEE TPAMI 2020"),
        reader="JHUDataset"),
    DatasetInfo(
        key="synthetic", display_name="synthetic crowd dataset (UCF-QNRF layout)",
        homepage="gigacount_lib.data.synthetic (generated locally: `gigacount synth --out DIR`)",
        layout=("  Train/img_0001.jpg, Train/img_0001_ann.mat (key 'annPoints', (N, 2) x, y)\n"
                "  Test/img_0001.jpg,  Test/img_0001_ann.mat"),
        citation="", reader="SyntheticDataset"),
)}

#: Every accepted (normalised) name -> ``(canonical key, ShanghaiTech part or None)``.
ALIASES: dict[str, tuple[str, str | None]] = {
    "qnrf": ("qnrf", None), "ucfqnrf": ("qnrf", None),
    "shanghaitech": ("shanghaitech", None), "sht": ("shanghaitech", None),
    "sha": ("shanghaitech", "A"), "shanghaitecha": ("shanghaitech", "A"), "parta": ("shanghaitech", "A"),
    "shb": ("shanghaitech", "B"), "shanghaitechb": ("shanghaitech", "B"), "partb": ("shanghaitech", "B"),
    "nwpu": ("nwpu", None), "nwpucrowd": ("nwpu", None),
    "jhu": ("jhu", None), "jhucrowd": ("jhu", None), "jhucrowd++": ("jhu", None), "jhu++": ("jhu", None),
    "synthetic": ("synthetic", None), "synth": ("synthetic", None),
}


def normalize_name(name: str) -> str:
    """``name`` in lower case without ``-`` and ``_`` (``"UCF-QNRF"`` -> ``"ucfqnrf"``)."""
    return str(name).lower().replace("-", "").replace("_", "")


def lookup(name: str) -> tuple[DatasetInfo, str | None] | None:
    """``(dataset, ShanghaiTech part or None)`` for an accepted name, ``None`` for an unknown one."""
    entry = ALIASES.get(normalize_name(name))
    if entry is None:
        return None
    key, part = entry
    return DATASETS[key], part
