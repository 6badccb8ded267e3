"""Joint image + point augmentations: the points stay on their people."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from gigacount_lib.data.transforms import (
    CrowdBatch, JointTransform, PepperSaltNoise, RandomHorizontalFlip, RandomLowLight,
    RandomScaleCrop, collate_crowd, eval_transforms, pad_points, train_transforms,
)

GEOMETRY_ONLY = dict(jitter_p=0.0, blur_p=0.0, noise_p=0.0, low_light_p=0.0)


def _marker_scene(size=(120, 160), spacing=13, half=2, seed=0):
    """Black image with a white (2*half+1)^2 square centred on each point (at a pixel centre)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    ys = torch.arange(6, h - 6, spacing)
    xs = torch.arange(6, w - 6, spacing)
    grid = torch.cartesian_prod(xs, ys)
    jitter = torch.randint(-3, 4, grid.shape, generator=g)
    cols, rows = (grid + jitter).unbind(1)
    image = torch.zeros(3, h, w)
    for r, c in zip(rows.tolist(), cols.tolist()):
        image[:, max(r - half, 0):r + half + 1, max(c - half, 0):c + half + 1] = 1.0
    points = torch.stack([cols + 0.5, rows + 0.5], dim=1).float()
    return image, points


def _check_markers_under_points(image, points, *, max_dist: float, border: int) -> None:
    h, w = image.shape[-2:]
    assert points.shape[1] == 2
    if points.numel():
        assert (points[:, 0] >= 0).all() and (points[:, 0] < w).all()
        assert (points[:, 1] >= 0).all() and (points[:, 1] < h).all()
        rows, cols = points[:, 1].long(), points[:, 0].long()
        under = image.mean(0)[rows, cols]
        assert (under > 0.5).all(), f"{int((under <= 0.5).sum())} point(s) not on a marker: {under}"
    # every marker pixel away from the border belongs to a kept point (no person lost its point)
    bright = image.mean(0) > 0.5
    bright[:border], bright[-border:], bright[:, :border], bright[:, -border:] = False, False, False, False
    ys, xs = torch.nonzero(bright, as_tuple=True)
    if ys.numel():
        assert points.numel(), "markers visible but no point kept"
        pix = torch.stack([xs + 0.5, ys + 0.5], dim=1)
        nearest = torch.cdist(pix, points).min(dim=1).values
        assert float(nearest.max()) <= max_dist, f"marker pixel {float(nearest.max()):.1f}px from any point"


# max_dist: marker half-diagonal (2 * sqrt(2) px) times the largest zoom, plus a pixel of resampling
@pytest.mark.parametrize("mode,scale,crop,max_dist", [
    ("output", (0.8, 1.0), 64, 5.5),   # GigaCount's setting (zoom in up to 1.25x)
    ("output", (1.0, 2.0), 64, 5.5),   # CLIP-EBC README's setting (zoom out)
    ("output", (0.8, 1.0), 200, 7.0),  # crop larger than the 120x160 image: enlarged first (<= 1.67x)
    ("area", (0.8, 1.0), 96, 9.0),     # torchvision's RandomResizedCrop meaning (anisotropic)
])
def test_augmentations_keep_points_on_their_people(mode, scale, crop, max_dist):
    image, points = _marker_scene()
    transform = train_transforms(crop, scale=scale, scale_mode=mode, num_crops=4, **GEOMETRY_ONLY)
    torch.manual_seed(0)
    flipped_seen = 0
    for _ in range(5):
        crops = transform(image, points, {"name": "scene"})
        assert isinstance(crops, list) and len(crops) == 4
        for out_img, out_pts, meta in crops:
            assert out_img.shape == (3, crop, crop) and meta["size"] == (crop, crop)
            assert meta["count"] == out_pts.shape[0] and meta["name"] == "scene"
            _check_markers_under_points(out_img, out_pts, max_dist=max_dist, border=int(max_dist) + 1)
            flipped_seen += 1
    assert flipped_seen == 20


def test_points_are_kept_when_the_crop_covers_the_whole_image():
    image, points = _marker_scene(size=(64, 64), spacing=10)
    transform = train_transforms(64, scale=(1.0, 1.0), num_crops=1, **GEOMETRY_ONLY)
    torch.manual_seed(1)
    for _ in range(6):  # flips included: nobody may be lost at the border
        out_img, out_pts, meta = transform(image, points, {})
        assert out_pts.shape == points.shape and meta["count"] == len(points)
        _check_markers_under_points(out_img, out_pts, max_dist=4.0, border=1)


def test_flip_is_exact_in_continuous_coordinates():
    h, w = 9, 12
    image = torch.zeros(3, h, w)
    points = torch.tensor([[0.5, 0.5], [11.5, 3.5], [4.25, 8.75], [11.99, 2.0], [0.0, 4.0]])
    for x, y in points.tolist():
        image[:, int(y), min(int(x), w - 1)] = 1.0
    flip = JointTransform([RandomHorizontalFlip(p=1.0)])
    out_img, out_pts, meta = flip(image, points, {})
    assert out_pts.shape == points.shape  # the last-column head (x = 11.5, 11.99) is not dropped
    torch.testing.assert_close(out_pts[:4, 0], w - points[:4, 0])
    assert abs(float(out_pts[4, 0]) - w) < 2e-3 and out_pts[4, 0] < w  # x = 0 -> just inside W
    torch.testing.assert_close(out_pts[:, 1], points[:, 1])
    for x, y in out_pts.tolist():
        if x < w:
            assert out_img[0, int(y), int(x)] == 1.0
    back_img, back_pts, _ = flip(out_img, out_pts, {})
    torch.testing.assert_close(back_img, image)
    torch.testing.assert_close(back_pts[:4], points[:4])


def test_scale_crop_enlarges_small_images_and_keeps_aspect():
    image = torch.rand(3, 30, 50)
    pts = tv_tensors.KeyPoints(torch.tensor([[25.0, 15.0]]), canvas_size=(30, 50))
    crop = RandomScaleCrop(40, scale=(1.0, 1.0))
    torch.manual_seed(0)
    out_img, out_pts = crop(tv_tensors.Image(image), pts)
    assert out_img.shape == (3, 40, 40) and out_pts.canvas_size == (40, 40)
    with pytest.raises(ValueError, match="scale"):
        RandomScaleCrop(40, scale=(0.0, 1.0))


def test_pepper_salt_noise_rates_and_points_untouched():
    image = torch.full((3, 200, 200), 0.5)
    pts = tv_tensors.KeyPoints(torch.tensor([[3.0, 4.0]]), canvas_size=(200, 200))
    torch.manual_seed(0)
    out, out_pts = PepperSaltNoise(saltiness=0.05, spiciness=0.02)(tv_tensors.Image(image), pts)
    assert abs(float((out == 1.0).float().mean()) - 0.05) < 0.005
    assert abs(float((out == 0.0).float().mean()) - 0.02) < 0.004
    assert float(((out != 0) & (out != 1) & (out != 0.5)).sum()) == 0
    torch.testing.assert_close(out_pts.as_subclass(torch.Tensor), pts.as_subclass(torch.Tensor))
    mono = PepperSaltNoise(saltiness=0.1, spiciness=0.1, per_channel=False)(tv_tensors.Image(image))
    assert (mono == mono[:1]).all()  # same speck on every channel
    assert (PepperSaltNoise(0.5, 0.5, p=0.0)(tv_tensors.Image(image)) == 0.5).all()
    with pytest.raises(ValueError):
        PepperSaltNoise(saltiness=1.5)


def test_low_light_darkens_and_keeps_order():
    image = torch.linspace(0, 1, 3 * 16 * 16).reshape(3, 16, 16)
    torch.manual_seed(0)
    out = RandomLowLight(p=1.0, gamma=(2.0, 2.0), brightness=(0.5, 0.5))(tv_tensors.Image(image))
    torch.testing.assert_close(out.as_subclass(torch.Tensor), 0.5 * image ** 2)
    flat = out.flatten()
    assert (flat[1:] >= flat[:-1]).all()  # monotone: it is a tone curve, not noise
    assert float(out.mean()) < 0.5 * float(image.mean())
    untouched = RandomLowLight(p=0.0)(tv_tensors.Image(image))
    torch.testing.assert_close(untouched.as_subclass(torch.Tensor), image)
    with pytest.raises(TypeError, match="float"):
        RandomLowLight(p=1.0)(tv_tensors.Image((image * 255).to(torch.uint8)))


def test_full_training_pipeline_runs_and_is_seeded():
    image, points = _marker_scene()
    transform = train_transforms(64, num_crops=2, jitter_p=1.0, blur_p=1.0, noise_p=1.0, low_light_p=1.0)
    torch.manual_seed(3)
    a = transform(image, points, {"name": "x"})
    torch.manual_seed(3)
    b = transform(image, points, {"name": "x"})
    for (ia, pa, _), (ib, pb, _) in zip(a, b):
        torch.testing.assert_close(ia, ib)
        torch.testing.assert_close(pa, pb)
        assert ia.dtype == torch.float32 and 0 <= float(ia.min()) and float(ia.max()) <= 1
    batch = collate_crowd([a, b])
    assert isinstance(batch, CrowdBatch) and batch.images.shape == (4, 3, 64, 64)
    assert len(batch.points) == 4 and batch.counts.tolist() == [float(p.shape[0]) for p in batch.points]
    padded, mask = pad_points(batch.points)
    assert padded.shape[0] == 4 and int(mask.sum()) == sum(p.shape[0] for p in batch.points)


def test_empty_points_and_eval_transform():
    image = torch.rand(3, 50, 70)
    out_img, out_pts, meta = train_transforms(32, num_crops=1, **GEOMETRY_ONLY)(image, torch.zeros(0, 2), {})
    assert out_img.shape == (3, 32, 32) and out_pts.shape == (0, 2) and meta["count"] == 0
    pts = torch.tensor([[1.0, 2.0], [69.9, 49.9]])
    ev_img, ev_pts, ev_meta = eval_transforms()(image, pts, {"name": "a"})
    torch.testing.assert_close(ev_img, image)
    torch.testing.assert_close(ev_pts, pts)
    assert ev_meta == {"name": "a", "size": (50, 70), "count": 2}
    uint8 = (image * 255).to(torch.uint8)
    assert eval_transforms()(uint8, pts, {})[0].dtype == torch.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale_mode"):
        train_transforms(64, scale_mode="zoom")
    with pytest.raises(ValueError, match="num_crops"):
        train_transforms(64, num_crops=0)
    with pytest.raises(ValueError, match="crop_size"):
        train_transforms((64, 0))


def test_to_image_tensor_is_channel_first_in_memory():
    """An (H, W, 3) array becomes a (3, H, W) tensor laid out channel-first (not a permuted view),
    with the same values; a contiguous float32 tensor passes through without a copy."""
    import numpy as np

    from gigacount_lib.data.transforms import to_image_tensor

    arr = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    out = to_image_tensor(arr)
    assert out.shape == (3, 5, 7) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    image = torch.rand(3, 5, 7)
    same = to_image_tensor(image)
    assert same.data_ptr() == image.data_ptr() and torch.equal(same, image)  # no copy


def _steps(transform):
    return list(transform.pipeline.transforms)


def test_official_preset_is_the_official_pipeline():
    """crop (0.8, 1.0) -> flip 0.5 -> RandomApply p (0.2, 0.2, 0.5) of jitter (hue 0.2), the fixed
    (0.1, 5.0) blur and pepper-salt; two crops; no low light (AdamHermes/GigaCount train.py)."""
    from torchvision.transforms import v2

    from gigacount_lib.data.transforms import GaussianBlurXY, RandomApplyEach

    transform = train_transforms()
    assert transform.num_crops == 2
    crop, flip, photometric, sanitize = _steps(transform)
    assert isinstance(crop, RandomScaleCrop) and crop.size == (224, 224) and crop.scale == (0.8, 1.0)
    assert isinstance(flip, RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(sanitize, v2.SanitizeKeyPoints)
    assert isinstance(photometric, RandomApplyEach) and photometric.p == [0.2, 0.2, 0.5]
    jitter, blur, noise = photometric.transforms
    assert isinstance(jitter, v2.ColorJitter)
    assert jitter.brightness == jitter.contrast == jitter.saturation == (0.9, 1.1)
    assert jitter.hue == (-0.2, 0.2)
    assert isinstance(blur, GaussianBlurXY) and blur.kernel_size == 5 and blur.sigma == [0.1, 5.0]
    assert isinstance(noise, PepperSaltNoise) and (noise.saltiness, noise.spiciness, noise.p) == (1e-3, 1e-3, 1.0)
    assert not any(isinstance(t, RandomLowLight) for t in photometric.transforms)


def test_named_variants():
    from torchvision.transforms import v2

    low = _steps(train_transforms(preset="official_low_light"))[2]
    assert [type(t).__name__ for t in low.transforms] == ["ColorJitter", "RandomLowLight", "GaussianBlurXY",
                                                           "PepperSaltNoise"]
    assert low.p == [0.2, 0.2, 0.2, 0.5]
    iso = _steps(train_transforms(preset="isotropic"))[2]
    assert iso.transforms[0].hue is None  # hue 0 switches the hue jitter off in torchvision
    assert isinstance(iso.transforms[1], v2.GaussianBlur)
    assert iso.transforms[1].sigma == [1.1, 1.1]
    none = _steps(train_transforms(preset="none", num_crops=1))
    assert [type(t).__name__ for t in none] == ["RandomScaleCrop", "SanitizeKeyPoints"]
    with pytest.raises(ValueError, match="unknown preset"):
        train_transforms(preset="paper")
    with pytest.raises(TypeError, match="unknown option"):
        train_transforms(blur_sigmas=(1, 2))
    with pytest.raises(ValueError, match="sigma_x, sigma_y"):
        train_transforms(blur_sigma=None)


def test_fixed_xy_blur_is_torchvision_functional_and_vertical():
    """GaussianBlurXY(5, (0.1, 5.0)) is ``TF.gaussian_blur(img, 5, [0.1, 5.0])``: it smears along y only."""
    import torchvision.transforms.functional as TF

    from gigacount_lib.data.transforms import GaussianBlurXY

    image = torch.zeros(3, 21, 21)
    image[:, 10, :] += 0.5  # a horizontal line
    image[:, :, 4] += 0.5  # a vertical line
    out = GaussianBlurXY(5, (0.1, 5.0))(tv_tensors.Image(image)).as_subclass(torch.Tensor)
    torch.testing.assert_close(out, TF.gaussian_blur(image, 5, [0.1, 5.0]))
    # along x (sigma 0.1) the vertical line keeps its profile; along y (sigma 5) the horizontal line spreads
    torch.testing.assert_close(out[0, 0, :6], image[0, 0, :6], atol=1e-6, rtol=0)
    assert float(out[0, 10, 12]) < 0.3 and float(out[0, 8, 12]) > 0.05


def test_random_apply_each_uses_one_probability_per_step():
    from gigacount_lib.data.transforms import RandomApplyEach

    image = tv_tensors.Image(torch.full((3, 4, 4), 0.5))
    only_second = RandomApplyEach([RandomLowLight(p=1.0, gamma=(1.0, 1.0), brightness=(0.0, 0.0)),
                                   PepperSaltNoise(1.0, 0.0, p=1.0)], p=[0.0, 1.0])
    assert (only_second(image) == 1.0).all()  # salt everywhere, the darkening skipped
    with pytest.raises(ValueError, match="one probability"):
        RandomApplyEach([PepperSaltNoise()], p=[0.5, 0.5])
