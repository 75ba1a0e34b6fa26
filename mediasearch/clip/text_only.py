"""What the two text-only models (the cached torch text tower and its ONNX copy) share: they refuse images,
and encode texts in chunks, normalised once, cached per process. No torch here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

CHUNK = 256  # texts per forward pass


class TextOnly:
    """An ``Embedder`` half: subclasses provide ``dim``, ``_text_cache`` and ``_features``."""

    dim: int
    _text_cache: dict[str, np.ndarray]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        raise ModelError("this model was loaded for text queries only")

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise ModelError("this model was loaded for text queries only")

    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray:
        raise ModelError("this model was loaded for text queries only")

    def _features(self, chunk: list[str]) -> Any:
        """Unnormalised float32 features of ``chunk``, one row per text."""
        raise NotImplementedError

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts (cached per process); one L2-normalised row per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start : start + CHUNK]
            feats = np.asarray(self._features(chunk), dtype=np.float32)
            feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
            self._text_cache.update(zip(chunk, feats, strict=True))
        if not texts:
            return np.empty((0, self.dim), np.float32)
        return np.stack([self._text_cache[t] for t in texts])
