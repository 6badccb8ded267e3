"""Crowd data: official dataset readers, the embedded synthetic dataset, density maps, transforms."""
