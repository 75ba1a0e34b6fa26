"""Batch preprocessing on the CPU: resize and crop per image as uint8, convert and normalise per batch.

The model's own transform (open_clip's eval transform: bicubic resize of the short side, centre
crop, to float, normalise) runs per image in a decode worker, and its float half is several small
torch operations per image: ~150k floats converted and normalised, each operation dispatched
separately, on threads that share two cores with inference. Here the worker does only the uint8 part
(Pillow's resize and crop, the same pixels the transform computes) and hands over an H×W×3 uint8
array, a quarter of the bytes; the batch is converted and normalised in one pass on the lane. The
result equals the per-image path within float rounding (tests/index/test_preprocess.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mediasearch.media.gpu_decode import Geometry, geometry_of

if TYPE_CHECKING:
    import torch
    from PIL import Image


def cpu_geometry(model: Any) -> Geometry | None:
    """The model's transform as a geometry when its batches are preprocessed here: an open_clip eval
    transform on a CPU model (a GPU keeps its own path); None means per image, with the transform."""
    if getattr(model, "device", "cpu") != "cpu":
        return None
    return geometry_of(getattr(model, "transform", None))


def resized_size(width: int, height: int, resize: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) after the transform's resize: the short side to ``resize`` and the long one
    truncated, as torchvision computes it, or exactly (height, width) when ``resize`` is a pair."""
    if not isinstance(resize, int):
        return resize[1], resize[0]
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def pixels(image: Image.Image, geometry: Geometry) -> torch.Tensor | None:
    """The transform's resize and centre crop of an RGB image, as an H×W×3 uint8 tensor; None when
    the crop is larger than the resized image (torchvision pads then: the caller uses the transform)."""
    import numpy as np
    import torch
    from PIL import Image

    width, height = resized_size(image.width, image.height, geometry.resize)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    if geometry.crop is not None:
        crop_h, crop_w = geometry.crop
        if crop_h > height or crop_w > width:
            return None
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        if (crop_w, crop_h) != (width, height):
            image = image.crop((left, top, left + crop_w, top + crop_h))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return torch.from_numpy(np.asarray(rgb).copy())


def is_pixels(tensor: Any) -> bool:
    """Whether a worker's output is uint8 pixels (``pixels``) rather than the transform's floats."""
    import torch

    return isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8


def normalise_batch(batch: Sequence[torch.Tensor], geometry: Geometry) -> torch.Tensor:
    """N uint8 H×W×3 tensors → the model's N×3×H×W float32 input, ``(x / 255 - mean) / std``."""
    import torch

    stacked = torch.stack(list(batch)).permute(0, 3, 1, 2)
    mean = torch.tensor(geometry.mean).view(1, 3, 1, 1)
    scale = 1.0 / (255.0 * torch.tensor(geometry.std).view(1, 3, 1, 1))
    out = torch.empty(stacked.shape, dtype=torch.float32)  # contiguous NCHW, written in one pass
    torch.mul(stacked, scale, out=out)
    return out.sub_(mean / torch.tensor(geometry.std).view(1, 3, 1, 1))


def stack_inputs(tensors: Sequence[torch.Tensor], geometry: Geometry | None) -> torch.Tensor:
    """One batch from decode workers' outputs: uint8 pixels (``pixels``) normalised in one pass, float
    tensors (the model's own transform) as they are."""
    import torch

    marks = [is_pixels(t) for t in tensors]
    if geometry is None or not any(marks):
        return torch.stack(list(tensors))
    if all(marks):
        return normalise_batch(tensors, geometry)
    parts = [normalise_batch([t], geometry) if mark else t[None] for t, mark in zip(tensors, marks, strict=True)]
    return torch.cat(parts)
