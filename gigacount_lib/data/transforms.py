"""Joint image + point transforms and batching for crowd counting.

A sample is ``(image, points, meta)``: a float image ``(3, H, W)`` in ``[0, 1]``, points ``(N, 2)``
as ``(x, y)`` pixels, and a metadata dict. Images in a batch share one size (after cropping), while
the number of points varies, so batches keep points as a list and offer a padded view with a mask.

Augmentations are built on ``torchvision.transforms.v2``: the image travels as a
``tv_tensors.Image`` and the heads as ``tv_tensors.KeyPoints``, so torchvision's own kernels move the
points with the pixels (crop, resize, flip) and ``SanitizeKeyPoints`` drops the heads that leave a
crop. Only what torchvision lacks is written here:

* :class:`RandomHorizontalFlip` -- torchvision's key-point flip maps ``x -> W - 1 - x`` (pixel-index
  convention) while its resize maps ``x -> x * W'/W`` (continuous convention). Head annotations are
  continuous (``0 <= x <= W``), so we flip with ``x -> W - x``; with torchvision's formula a head in the
  last column (``W - 1 < x < W``) would land at a negative ``x`` and be dropped from the count.
* :class:`RandomScaleCrop` -- the crop of CLIP-EBC's official code, where ``scale`` is relative to the
  *output* size (a window of ``scale * crop_size`` pixels, aspect ratio kept, resized to
  ``crop_size``; the image is first enlarged when it is smaller than the window). torchvision's
  ``RandomResizedCrop``, where ``scale`` is a fraction of the image *area*, is the other option.
* :class:`GaussianBlurXY` (fixed per-axis sigmas) and :class:`RandomApplyEach` (one probability per
  step), which the official GigaCount pipeline needs (see :data:`AUGMENTATION_PRESETS`);
* :class:`PepperSaltNoise` and :class:`RandomLowLight` (gamma/brightness darkening).

:func:`train_transforms` and :func:`eval_transforms` return callables on ``(image, points, meta)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2 import query_size

__all__ = [
    "pad_points", "CrowdBatch", "collate_crowd", "RandomHorizontalFlip", "RandomScaleCrop",
    "PepperSaltNoise", "RandomLowLight", "GaussianBlurXY", "RandomApplyEach", "AUGMENTATION_PRESETS",
    "JointTransform", "train_transforms", "eval_transforms",
    "to_image_tensor",
]


def pad_points(points: Sequence[Tensor], pad_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack a list of ``(N_i, 2)`` point sets into ``(B, N_max, 2)`` plus a bool mask ``(B, N_max)``.

    ``N_max`` is at least 1 so that downstream code never sees a zero-sized dimension; images with
    no people simply have an all-False mask row.
    """
    batch = len(points)
    n_max = max([int(p.shape[0]) for p in points] + [1])
    device = points[0].device if batch else torch.device("cpu")
    padded = torch.full((batch, n_max, 2), pad_value, dtype=torch.float32, device=device)
    mask = torch.zeros((batch, n_max), dtype=torch.bool, device=device)
    for i, p in enumerate(points):
        n = int(p.shape[0])
        if n:
            padded[i, :n] = p.to(torch.float32)
            mask[i, :n] = True
    return padded, mask


@dataclass
class CrowdBatch:
    """A collated batch: ``images (B, 3, H, W)``, ``points`` list of ``(N_i, 2)``, ``meta`` list."""

    images: Tensor
    points: list[Tensor]
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def counts(self) -> Tensor:
        """Ground-truth count per image, ``(B,)`` float."""
        return torch.tensor([float(p.shape[0]) for p in self.points], device=self.images.device)

    def padded_points(self) -> tuple[Tensor, Tensor]:
        return pad_points(self.points)

    def to(self, device, non_blocking: bool = False) -> "CrowdBatch":
        return CrowdBatch(
            images=self.images.to(device, non_blocking=non_blocking),
            points=[p.to(device, non_blocking=non_blocking) for p in self.points],
            meta=self.meta,
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def collate_crowd(samples: Sequence[tuple]) -> CrowdBatch:
    """``DataLoader`` collate function for ``(image, points, meta)`` samples of equal image size.

    A sample that is a list of crops (several crops per image) is flattened into the batch.
    """
    flat: list[tuple] = []
    for sample in samples:
        if isinstance(sample, list):
            flat.extend(sample)
        else:
            flat.append(sample)
    if not flat:
        raise ValueError("collate_crowd: empty batch")
    sizes = {tuple(s[0].shape[-2:]) for s in flat}
    if len(sizes) != 1:
        raise ValueError(
            f"collate_crowd: images in a batch must share one size, got {sorted(sizes)}; "
            "use a crop transform for training or batch_size=1 for evaluation"
        )
    images = torch.stack([torch.as_tensor(s[0]) for s in flat])
    points = [torch.as_tensor(s[1], dtype=torch.float32).reshape(-1, 2) for s in flat]
    meta = [dict(s[2]) if len(s) > 2 and s[2] is not None else {} for s in flat]
    return CrowdBatch(images=images, points=points, meta=meta)


# --------------------------------------------------------------------------------------------------
# Joint image + key-point augmentations (torchvision.transforms.v2)
# --------------------------------------------------------------------------------------------------
def _is_image(inpt: Any) -> bool:
    return isinstance(inpt, tv_tensors.Image) or (
        isinstance(inpt, Tensor) and not isinstance(inpt, tv_tensors.TVTensor))


class RandomHorizontalFlip(v2.RandomHorizontalFlip):
    """Horizontal flip with probability ``p``; key points follow ``x -> W - x`` (continuous pixels).

    The image is flipped by torchvision. torchvision's key-point kernel returns ``W - 1 - x``; we add
    one to ``x`` so that the flip maps ``[0, W]`` onto itself and every head stays in the image
    (a head at exactly ``x = 0`` goes to ``W - 1e-3`` rather than onto the excluded border ``W``).
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(F.horizontal_flip, inpt)
        if isinstance(inpt, tv_tensors.KeyPoints):
            width = inpt.canvas_size[1]
            xy = out.as_subclass(Tensor).clone()
            x = xy[..., 0] + 1.0  # torchvision gives W - 1 - x
            # a head exactly on the left border (x = 0) lands on x = W: keep it just inside so that
            # the half-open check of SanitizeKeyPoints (0 <= x < W) does not drop it
            on_border = (x >= width - 1e-3) & (x <= width)
            xy[..., 0] = torch.where(on_border, torch.full_like(x, width - 1e-3), x)
            out = tv_tensors.wrap(xy, like=out)
        return out


class RandomScaleCrop(v2.Transform):
    """Random crop of ``scale * size`` pixels (aspect ratio kept), resized to ``size``.

    ``s ~ U(scale)``; the window is ``(round(s * h_out), round(s * w_out))``. When the image is
    smaller than the window it is first resized (aspect ratio kept) just enough to contain it.
    ``s < 1`` zooms in, ``s > 1`` zooms out. This is the rule of the ``RandomResizedCrop`` in
    CLIP-EBC's official code (``datasets/transforms.py``; its README's defaults are
    ``scale = (1.0, 2.0)``), except for rounding: that code truncates (``int(s * h_out)``) and
    enlarges a too-small image to ``int(H * r) + 1``, here the window is rounded and the enlarged
    size is ``ceil(H * r)``; the windows differ by at most one pixel. The official GigaCount code
    uses ``scale = (0.8, 1.0)``. Geometry (crop + resize of image and key points) is torchvision's.
    """

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.8, 1.0),
                 interpolation: F.InterpolationMode = F.InterpolationMode.BICUBIC,
                 antialias: bool = True) -> None:
        super().__init__()
        self.size = _pair(size, "size")
        if not (0 < scale[0] <= scale[1]):
            raise ValueError(f"RandomScaleCrop: scale must satisfy 0 < min <= max, got {scale}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.interpolation = interpolation
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        s = float(torch.empty(1).uniform_(self.scale[0], self.scale[1]))
        crop_h = max(1, round(self.size[0] * s))
        crop_w = max(1, round(self.size[1] * s))
        resize = None
        if crop_h > height or crop_w > width:
            ratio = max(crop_h / height, crop_w / width)
            resize = [max(crop_h, math.ceil(height * ratio)), max(crop_w, math.ceil(width * ratio))]
            height, width = resize
        top = int(torch.randint(0, height - crop_h + 1, (1,)))
        left = int(torch.randint(0, width - crop_w + 1, (1,)))
        return dict(resize=resize, top=top, left=left, height=crop_h, width=crop_w)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["resize"] is not None:
            inpt = self._call_kernel(F.resize, inpt, size=params["resize"],
                                     interpolation=self.interpolation, antialias=self.antialias)
        return self._call_kernel(F.resized_crop, inpt, top=params["top"], left=params["left"],
                                 height=params["height"], width=params["width"], size=list(self.size),
                                 interpolation=self.interpolation, antialias=self.antialias)


class PepperSaltNoise(v2.Transform):
    """Impulse noise: each value becomes 1 (salt) with probability ``saltiness`` and 0 (pepper)
    with probability ``spiciness``; applied to the whole image with probability ``p``.

    ``per_channel=True`` draws one uniform number per value (coloured specks), as CLIP-EBC's code
    does; ``False`` draws one per pixel (black/white specks). Key points pass through.
    """

    def __init__(self, saltiness: float = 1e-3, spiciness: float = 1e-3, p: float = 1.0,
                 per_channel: bool = True) -> None:
        super().__init__()
        for name, value in (("saltiness", saltiness), ("spiciness", spiciness), ("p", p)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PepperSaltNoise: {name} must be in [0, 1], got {value}")
        if saltiness + spiciness > 1.0:
            raise ValueError("PepperSaltNoise: saltiness + spiciness must be <= 1")
        self.saltiness, self.spiciness, self.p, self.per_channel = saltiness, spiciness, p, per_channel

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return dict(apply=bool(torch.rand(1) < self.p))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"] or not _is_image(inpt):
            return inpt
        high = 1.0 if inpt.is_floating_point() else 255
        shape = inpt.shape if self.per_channel else (*inpt.shape[:-3], 1, *inpt.shape[-2:])
        u = torch.rand(shape, device=inpt.device)  # one draw decides salt, pepper or neither
        out = inpt.as_subclass(Tensor).masked_fill(u < self.saltiness, high)
        out = out.masked_fill_(u > 1.0 - self.spiciness, 0)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class RandomLowLight(v2.Transform):
    """Low-light simulation: ``I' = b * I ** gamma``.

    With probability ``p``, ``gamma ~ U(gamma)`` (> 1 darkens the mid-tones more than the
    highlights) and ``b ~ U(brightness)`` (< 1 lowers the exposure); optional Gaussian read noise
    of standard deviation ``~ U(noise_std)``. Works on float images in ``[0, 1]``. This step is ours:
    the paper's abstract says augmentation was used "to boost robustness across diverse lighting
    conditions", but the official code has no low-light step, so the ``"official"`` preset leaves it
    out and ``"official_low_light"`` adds it (our parameters).
    """

    def __init__(self, p: float = 0.2, gamma: tuple[float, float] = (1.5, 3.0),
                 brightness: tuple[float, float] = (0.3, 0.8),
                 noise_std: tuple[float, float] = (0.0, 0.0)) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomLowLight: p must be in [0, 1], got {p}")
        if not 0 < gamma[0] <= gamma[1]:
            raise ValueError(f"RandomLowLight: gamma must satisfy 0 < min <= max, got {gamma}")
        if not 0 <= brightness[0] <= brightness[1]:
            raise ValueError(f"RandomLowLight: brightness must satisfy 0 <= min <= max, got {brightness}")
        if not 0 <= noise_std[0] <= noise_std[1]:
            raise ValueError(f"RandomLowLight: noise_std must satisfy 0 <= min <= max, got {noise_std}")
        self.p, self.gamma, self.brightness, self.noise_std = p, gamma, brightness, noise_std

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        u = torch.rand(4)
        return dict(apply=bool(u[0] < self.p),
                    gamma=self.gamma[0] + float(u[1]) * (self.gamma[1] - self.gamma[0]),
                    brightness=self.brightness[0] + float(u[2]) * (self.brightness[1] - self.brightness[0]),
                    noise_std=self.noise_std[0] + float(u[3]) * (self.noise_std[1] - self.noise_std[0]))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"] or not _is_image(inpt):
            return inpt
        if not inpt.is_floating_point():
            raise TypeError("RandomLowLight expects a float image in [0, 1]; convert with ToDtype first")
        out = params["brightness"] * inpt.as_subclass(Tensor).clamp(0, 1).pow(params["gamma"])
        if params["noise_std"] > 0:
            out = (out + params["noise_std"] * torch.randn_like(out)).clamp_(0, 1)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{what} must be a positive int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def to_image_tensor(image: Any) -> Tensor:
    """PIL image / uint8 or float tensor / ``(H, W, 3)`` array -> contiguous float32 ``(3, H, W)``
    in ``[0, 1]`` (uint8 is divided by 255; float input must be in ``[0, 1]`` already: values outside
    it, e.g. 0..255 floats, or NaN raise ``ValueError``)."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image))
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3, 4):
            image = image.permute(2, 0, 1)
    if not isinstance(image, Tensor):
        image = F.pil_to_tensor(image)
    image = image.as_subclass(Tensor)
    if image.ndim == 2:
        image = image.unsqueeze(0)
    is_uint8 = image.dtype == torch.uint8
    # channel-first memory even for an (H, W, 3) array seen through a permutation (no copy when
    # the input already is a contiguous float32 tensor, which is then not modified)
    image = image.to(torch.float32, memory_format=torch.contiguous_format)
    if is_uint8:
        image = image.div_(255.0)  # a fresh tensor: in place is safe
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1).contiguous()
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image (3, H, W), got shape {tuple(image.shape)}")
    if not is_uint8 and image.numel():
        low, high = torch.aminmax(image)
        low, high = float(low), float(high)
        if not (-1e-3 <= low and high <= 1 + 1e-3):  # also catches NaN
            hint = " (it looks like 0..255: divide by 255, or pass uint8)" if high > 1 + 1e-3 and high <= 255 else ""
            raise ValueError(f"image: float values must lie in [0, 1], got min {low:g}, max {high:g}{hint}")
    return image


class JointTransform:
    """Apply a ``torchvision.transforms.v2`` pipeline jointly to ``(image, points, meta)``.

    The image becomes a float ``tv_tensors.Image`` and the ``(N, 2)`` points a
    ``tv_tensors.KeyPoints`` on the image's canvas; ``SanitizeKeyPoints`` is appended when
    ``sanitize`` so that heads leaving the image are removed. With ``num_crops > 1`` the pipeline
    runs that many times on the same input and a list of samples is returned (``collate_crowd``
    flattens it). ``meta`` is copied and ``size`` and ``count`` are updated.
    """

    def __init__(self, pipeline: Callable | Sequence[Callable] | None = None, *, num_crops: int = 1,
                 sanitize: bool = True) -> None:
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        steps = list(pipeline) if isinstance(pipeline, (list, tuple)) else ([] if pipeline is None else [pipeline])
        if sanitize:
            steps.append(v2.SanitizeKeyPoints())
        self.pipeline = v2.Compose(steps) if steps else None
        self.num_crops = num_crops

    def _once(self, image: Tensor, points: Tensor, meta: dict[str, Any]) -> tuple[Tensor, Tensor, dict]:
        height, width = image.shape[-2:]
        img = tv_tensors.Image(image)
        kps = tv_tensors.KeyPoints(points.reshape(-1, 2), canvas_size=(int(height), int(width)))
        if self.pipeline is not None:
            img, kps = self.pipeline(img, kps)
        out_img = img.as_subclass(Tensor).clamp(0.0, 1.0).contiguous()
        out_pts = kps.as_subclass(Tensor).reshape(-1, 2).to(torch.float32).contiguous()
        out_meta = dict(meta)
        out_meta["size"] = (int(out_img.shape[-2]), int(out_img.shape[-1]))
        out_meta["count"] = int(out_pts.shape[0])
        return out_img, out_pts, out_meta

    def __call__(self, image: Any, points: Any, meta: dict[str, Any] | None = None):
        image = to_image_tensor(image)
        points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)
        meta = {} if meta is None else meta
        if self.num_crops == 1:
            return self._once(image, points, meta)
        return [self._once(image, points, meta) for _ in range(self.num_crops)]

    def __repr__(self) -> str:
        return f"JointTransform(num_crops={self.num_crops}, pipeline={self.pipeline})"


#: Named augmentation pipelines for :func:`train_transforms` (every field can still be overridden).
#:
#: * ``"official"``: the pipeline of the official GigaCount training code (AdamHermes/GigaCount,
#:   ``train.py`` + ``transforms.py``): 224² crops with ``scale = (0.8, 1.0)`` in CLIP-EBC's meaning,
#:   flip p 0.5, then one ``RandomApply`` with p (0.2, 0.2, 0.5) of colour jitter (brightness,
#:   contrast and saturation 0.1; hue 0.2, the default of that code's jitter wrapper), a 5x5
#:   Gaussian blur with the *fixed* sigmas ``(sigma_x, sigma_y) = (0.1, 5.0)`` (its ``sigma=(0.1, 5.0)``
#:   goes straight to ``torchvision.transforms.functional.gaussian_blur``, which reads the pair as
#:   per-axis sigmas: a vertical blur), and pepper-salt noise 1e-3 / 1e-3; two crops per image. No
#:   low-light step.
#: * ``"official_low_light"``: ``"official"`` plus :class:`RandomLowLight` (p 0.2, our parameters),
#:   for the ablation of the paper's low-light finding.
#: * ``"isotropic"``: our reading of the same recipe as a *random isotropic* blur is usually meant:
#:   hue 0 and torchvision's sigma for a 5x5 kernel (1.1) on both axes.
#: * ``"none"``: the crop alone (batching needs fixed-size crops), for the "no augmentation" ablation.
AUGMENTATION_PRESETS: dict[str, dict[str, Any]] = {
    "official": dict(scale=(0.8, 1.0), scale_mode="output", hflip_p=0.5, jitter=(0.1, 0.1, 0.1, 0.2),
                     jitter_p=0.2, blur_kernel=5, blur_sigma=(0.1, 5.0), blur_mode="xy", blur_p=0.2,
                     saltiness=1e-3, spiciness=1e-3, noise_p=0.5, low_light_p=0.0, num_crops=2),
}
AUGMENTATION_PRESETS["official_low_light"] = dict(AUGMENTATION_PRESETS["official"], low_light_p=0.2)
AUGMENTATION_PRESETS["isotropic"] = dict(AUGMENTATION_PRESETS["official"], jitter=(0.1, 0.1, 0.1, 0.0),
                                         blur_sigma=None, blur_mode="isotropic")
AUGMENTATION_PRESETS["none"] = dict(AUGMENTATION_PRESETS["official"], hflip_p=0.0, jitter_p=0.0, blur_p=0.0,
                                    noise_p=0.0, low_light_p=0.0)


class GaussianBlurXY(v2.Transform):
    """Gaussian blur with fixed per-axis standard deviations ``sigma = (sigma_x, sigma_y)``.

    This is what ``torchvision.transforms.functional.gaussian_blur(img, k, (sx, sy))`` computes, and
    what the official GigaCount code applies; torchvision's ``GaussianBlur(k, (lo, hi))`` instead draws
    one isotropic sigma from ``[lo, hi]`` per call. Key points pass through.
    """

    def __init__(self, kernel_size: int, sigma: tuple[float, float]) -> None:
        super().__init__()
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"GaussianBlurXY: kernel_size must be a positive odd int, got {kernel_size}")
        if len(sigma) != 2 or min(sigma) <= 0:
            raise ValueError(f"GaussianBlurXY: sigma must be two positive numbers (sigma_x, sigma_y), got {sigma}")
        self.kernel_size, self.sigma = int(kernel_size), [float(sigma[0]), float(sigma[1])]

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt):
            return inpt
        return self._call_kernel(F.gaussian_blur, inpt, kernel_size=[self.kernel_size] * 2, sigma=self.sigma)


class RandomApplyEach(v2.Transform):
    """Apply each transform in turn, each with its own probability (the official code's ``RandomApply``)."""

    def __init__(self, transforms: Sequence[Callable], p: Sequence[float]) -> None:
        super().__init__()
        if len(transforms) != len(p) or any(not 0.0 <= q <= 1.0 for q in p):
            raise ValueError(f"RandomApplyEach: need one probability in [0, 1] per transform, got {list(p)}")
        self.transforms, self.p = list(transforms), [float(q) for q in p]

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]  # as v2.Compose: transforms take one pytree
        for transform, p in zip(self.transforms, self.p):
            if float(torch.rand(1)) < p:
                sample = transform(sample)
        return sample


def train_transforms(crop_size: int | Sequence[int] = 224, *, preset: str = "official",
                     num_crops: int | None = None, **overrides: Any) -> JointTransform:
    """The training augmentation: crop -> flip -> [colour jitter, low light, blur, pepper-salt].

    Args:
        crop_size: output crop size (224 in the official code).
        preset: a name of :data:`AUGMENTATION_PRESETS` (``"official"`` reproduces the official code).
        num_crops: crops per image (a list of samples; ``collate_crowd`` flattens it); ``None`` takes
            the preset's (2 for ``"official"``).
        **overrides: any preset field:

            * ``scale``, ``scale_mode``, ``ratio``: the crop. ``scale_mode="output"`` is
              :class:`RandomScaleCrop` (CLIP-EBC's meaning: window = ``scale * crop_size``);
              ``"area"`` is torchvision's ``RandomResizedCrop(crop_size, scale, ratio)``.
            * ``hflip_p``; ``jitter`` (brightness, contrast, saturation, hue) and ``jitter_p``;
            * ``blur_kernel``, ``blur_sigma``, ``blur_mode``, ``blur_p``: ``blur_mode="xy"`` is
              :class:`GaussianBlurXY` with ``blur_sigma = (sigma_x, sigma_y)``; ``"isotropic"`` is
              torchvision's ``GaussianBlur`` (``blur_sigma`` a number, a ``(min, max)`` range to draw
              from, or ``None`` for torchvision's ``0.3 * ((k - 1) * 0.5 - 1) + 0.8``);
            * ``saltiness``, ``spiciness``, ``noise_p``;
            * ``low_light_p``, ``low_light_gamma``, ``low_light_brightness`` (:class:`RandomLowLight`).

    Any probability set to 0 removes that step. Returns a :class:`JointTransform`.
    """
    if preset not in AUGMENTATION_PRESETS:
        raise ValueError(f"train_transforms: unknown preset {preset!r}; choose one of {sorted(AUGMENTATION_PRESETS)}")
    options: dict[str, Any] = dict(ratio=(3 / 4, 4 / 3), low_light_gamma=(1.5, 3.0), low_light_brightness=(0.3, 0.8))
    options.update(AUGMENTATION_PRESETS[preset])
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        raise TypeError(f"train_transforms: unknown option(s) {unknown}; allowed: {sorted(options)}")
    options.update(overrides)
    if num_crops is not None:
        options["num_crops"] = num_crops
    o = options
    size = _pair(crop_size, "crop_size")
    steps: list[Callable] = []
    if o["scale_mode"] == "output":
        steps.append(RandomScaleCrop(size, scale=o["scale"]))
    elif o["scale_mode"] == "area":
        steps.append(v2.RandomResizedCrop(size, scale=o["scale"], ratio=o["ratio"],
                                          interpolation=F.InterpolationMode.BICUBIC, antialias=True))
    else:
        raise ValueError(f"train_transforms: scale_mode must be 'output' or 'area', got {o['scale_mode']!r}")
    if o["hflip_p"] > 0:
        steps.append(RandomHorizontalFlip(p=o["hflip_p"]))
    photometric: list[tuple[Callable, float]] = []
    if o["jitter_p"] > 0 and any(v > 0 for v in o["jitter"]):
        b, c, s, h = o["jitter"]
        photometric.append((v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h), o["jitter_p"]))
    if o["low_light_p"] > 0:
        photometric.append((RandomLowLight(p=1.0, gamma=o["low_light_gamma"],
                                           brightness=o["low_light_brightness"]), o["low_light_p"]))
    if o["blur_p"] > 0 and o["blur_kernel"] > 0:
        photometric.append((_blur(o["blur_kernel"], o["blur_sigma"], o["blur_mode"]), o["blur_p"]))
    if o["noise_p"] > 0 and (o["saltiness"] > 0 or o["spiciness"] > 0):
        photometric.append((PepperSaltNoise(saltiness=o["saltiness"], spiciness=o["spiciness"], p=1.0),
                            o["noise_p"]))
    if photometric:
        steps.append(RandomApplyEach([t for t, _ in photometric], [p for _, p in photometric]))
    return JointTransform(steps, num_crops=o["num_crops"], sanitize=True)


def _blur(kernel: int, sigma: Any, mode: str) -> v2.Transform:
    if mode == "xy":
        if sigma is None or isinstance(sigma, (int, float)):
            raise ValueError(f"train_transforms: blur_mode='xy' needs blur_sigma=(sigma_x, sigma_y), got {sigma!r}")
        return GaussianBlurXY(kernel, tuple(sigma))
    if mode == "isotropic":
        return v2.GaussianBlur(kernel, sigma=0.3 * ((kernel - 1) * 0.5 - 1) + 0.8 if sigma is None else sigma)
    raise ValueError(f"train_transforms: blur_mode must be 'xy' or 'isotropic', got {mode!r}")


def eval_transforms() -> JointTransform:
    """Evaluation: no augmentation; the image is converted to float ``(3, H, W)`` in ``[0, 1]``, the
    points are kept as they are, and ``meta`` gets ``size`` and ``count``."""
    return JointTransform(None, num_crops=1, sanitize=False)
