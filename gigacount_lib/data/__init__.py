"""Crowd data (notebook 01): official dataset readers, the embedded synthetic dataset, density maps,
joint image + point transforms.

* :mod:`.datasets`   ``CrowdDataset`` and the readers for UCF-QNRF, ShanghaiTech, NWPU-Crowd, JHU-Crowd++
* :mod:`.synthetic`  the deterministic synthetic crowd generator (UCF-QNRF layout) and its cache
* :mod:`.density`    point / Gaussian / adaptive density maps and block-count maps
* :mod:`.transforms` augmentations on ``torchvision.transforms.v2`` and batching
"""
from .datasets import (CrowdDataset, JHUDataset, NWPUDataset, QNRFDataset, ShanghaiTechDataset,
                       SyntheticDataset, build_dataset)
from .density import (adaptive_density_map, block_count_map, block_count_maps, density_map,
                      gaussian_density_map, point_map)
from .synthetic import SyntheticConfig, generate_synthetic_dataset, render_scene, resolve_data_root
from .transforms import CrowdBatch, collate_crowd, eval_transforms, pad_points, train_transforms

__all__ = [
    "CrowdDataset", "QNRFDataset", "ShanghaiTechDataset", "NWPUDataset", "JHUDataset", "SyntheticDataset",
    "build_dataset", "point_map", "gaussian_density_map", "adaptive_density_map", "density_map",
    "block_count_map", "block_count_maps", "SyntheticConfig", "generate_synthetic_dataset", "render_scene",
    "resolve_data_root", "CrowdBatch", "collate_crowd", "pad_points", "train_transforms", "eval_transforms",
]
