"""Batched preprocessing (uint8 pixels per image, one normalisation per batch) gives the model the
same input as its own per-image transform, and so the same embeddings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mediasearch.index import pipeline
from mediasearch.index.options import IndexOptions
from mediasearch.index.preprocess import cpu_geometry, is_pixels, normalise_batch, pixels, resized_size
from mediasearch.media.decode import load_image
from mediasearch.media.discover import FileEntry
from mediasearch.media.gpu_decode import Geometry

# landscape, portrait, smaller than the input (upscaled), exactly the input, a long strip, odd sizes
SIZES = [(640, 480), (300, 500), (100, 80), (224, 224), (1000, 250), (333, 227)]


def _photo(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = smooth + rng.integers(-20, 21, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _open_clip_transform(size: int = 224) -> Any:
    import open_clip

    return open_clip.image_transform(size, is_train=False)


@pytest.mark.parametrize("size", SIZES)
def test_pixels_then_batch_normalisation_equals_the_transform(size: tuple[int, int]) -> None:
    transform = _open_clip_transform()
    geometry = pipeline_geometry(transform)
    image = _photo(size, seed=size[0])
    got = normalise_batch([_pixels(image, geometry)], geometry)[0]
    want = transform(image)
    assert got.shape == want.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_a_batch_equals_the_stacked_transforms_and_is_contiguous() -> None:
    transform = _open_clip_transform()
    geometry = pipeline_geometry(transform)
    images = [_photo(size, seed=i) for i, size in enumerate(SIZES)]
    got = normalise_batch([_pixels(im, geometry) for im in images], geometry)
    assert got.is_contiguous()
    np.testing.assert_allclose(got.numpy(), torch.stack([transform(im) for im in images]).numpy(), atol=1e-5)


def test_a_crop_larger_than_the_resized_image_is_left_to_the_transform() -> None:
    geometry = Geometry(resize=(100, 120), crop=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert pixels(_photo((300, 200), 0), geometry) is None


def test_resized_size_matches_torchvision() -> None:
    assert resized_size(640, 480, 224) == (298, 224)
    assert resized_size(480, 640, 224) == (224, 298)
    assert resized_size(500, 500, 224) == (224, 224)
    assert resized_size(640, 480, (256, 128)) == (128, 256)  # a pair is (height, width)


def test_index_batches_give_the_per_image_embeddings(demo_model: Any, make_image: Callable[..., Path]) -> None:
    """Through the indexer's own decode and batch steps: uint8 from the workers, embeddings within
    cosine 0.999 of the model's per-image path."""
    colours = [(40 * i, 200 - 30 * i, 90) for i in range(len(SIZES))]
    paths = [make_image(f"p{i}.jpg", size=SIZES[i], color=c, marker=True) for i, c in enumerate(colours)]
    entries = [FileEntry(str(p), str(p.parent), "image", p.stat().st_size, p.stat().st_mtime) for p in paths]
    decoded = [pipeline.decode_file(e, None, demo_model, IndexOptions()) for e in entries]
    tensors = [d.tensors[0] for d in decoded]
    assert cpu_geometry(demo_model) is not None and all(is_pixels(t) for t in tensors)
    batch, failed = pipeline._stack(tensors, demo_model)
    assert not failed
    batched = demo_model.encode_tensors(batch)
    plain = demo_model.encode_images([load_image(str(p), target=demo_model.image_size)[0] for p in paths])
    cosines = np.sum(batched * plain, axis=1)  # both L2-normalised
    assert cosines.min() >= 0.999, cosines


def test_a_model_without_an_open_clip_transform_gets_its_own_preprocessing() -> None:
    class Fake:
        device = "cpu"
        transform = staticmethod(lambda image: torch.zeros(3, 8, 8))

        def preprocess(self, image: Image.Image) -> torch.Tensor:
            return self.transform(image)

    assert cpu_geometry(Fake()) is None
    out = pipeline._preprocess(_photo((64, 48), 0), Fake())  # type: ignore[arg-type]
    assert out.dtype == torch.float32 and out.shape == (3, 8, 8)


def pipeline_geometry(transform: Any) -> Geometry:
    class Model:
        device = "cpu"

    model = Model()
    model.transform = transform  # type: ignore[attr-defined]
    geometry = cpu_geometry(model)
    assert geometry is not None
    return geometry


def _pixels(image: Image.Image, geometry: Geometry) -> torch.Tensor:
    out = pixels(image, geometry)
    assert out is not None and out.dtype == torch.uint8
    return out
