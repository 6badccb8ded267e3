"""Crowd data (notebook 01): dataset readers, the embedded synthetic dataset, density maps, joint
image + point transforms and the plots of this subject.

* :mod:`.registry`   the known datasets once: canonical names, aliases, homepages, layouts
* :mod:`.files`      decoding images and the benchmarks' annotation formats
* :mod:`.preprocess` the resize rule and the cleaning of points
* :mod:`.base`       ``CrowdDataset``: listing, loading, preprocessing cache, transforms
* :mod:`.datasets`   the readers for UCF-QNRF, ShanghaiTech, NWPU-Crowd, JHU-Crowd++, ``build_dataset``
  and ``resolve_data_root``
* :mod:`.synthetic`  the deterministic synthetic crowd generator (UCF-QNRF layout) and its cache
* :mod:`.density`    point / Gaussian / adaptive density maps and block-count maps
* :mod:`.download`   fetching official archives with verification (UCF-QNRF), manual instructions otherwise
* :mod:`.transforms` augmentations on ``torchvision.transforms.v2`` and batching
* :mod:`.plots`      figures of notebook 01 (each takes an ``ax`` or a ``fig`` and returns it)

Names are imported lazily, so that ``gigacount synth`` (numpy + PIL only) does not load torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "datasets": ["CrowdDataset", "QNRFDataset", "ShanghaiTechDataset", "NWPUDataset", "JHUDataset",
                 "SyntheticDataset", "build_dataset", "resolve_data_root"],
    "density": ["point_map", "gaussian_density_map", "adaptive_density_map", "density_map",
                "block_count_map", "block_count_maps"],
    "synthetic": ["SyntheticConfig", "generate_synthetic_dataset", "render_scene"],
    "download": ["download_dataset"],
    "transforms": ["CrowdBatch", "collate_crowd", "pad_points", "train_transforms", "eval_transforms"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
