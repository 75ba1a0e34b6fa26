"""What a model is, without loading it: ``ModelSpec`` (a name plus a pretrained tag or file, and the key
collections are named after) and the ``Embedder`` protocol every model (and every test double) meets.
No torch here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mediasearch.errors import ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image


DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).parent.parent / "demo_model"


class Embedder(Protocol):
    """What the pipeline needs from a model; tests may pass any object with this shape."""

    spec: ModelSpec
    dim: int

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: an open_clip name plus a pretrained tag, file or nothing."""

    name: str
    pretrained: str | None = None

    @property
    def is_demo(self) -> bool:
        return self.name == DEMO_NAME

    def key(self) -> str:
        """A stable identity for the weights; the store keys collections on it."""
        if self.is_demo and self.pretrained:  # a fine-tune checkpoint of the demo model
            return f"demo:file-{file_digest(Path(self.pretrained))}"
        if self.is_demo:
            return f"demo:{file_digest(DEMO_DIR / 'open_clip_model.safetensors')}"
        if self.name.startswith("hf-hub:"):
            return self.name
        if self.name.startswith("local-dir:"):
            found = _checkpoint_in(Path(self.name.split(":", 1)[1]))
            return f"{self.name}:{file_digest(found) if found else 'random'}"
        if self.pretrained and os.path.isfile(self.pretrained):
            return f"{self.name}:file-{file_digest(Path(self.pretrained))}"
        return f"{self.name}:{self.pretrained or 'random'}"

    def describe(self) -> str:
        if (self.is_demo and not self.pretrained) or self.name.startswith("hf-hub:"):
            return self.name
        return f"{self.name} ({self.pretrained or 'no weights'})"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """A short content hash of a weights file (size + head + tail), cheap even for GB files."""
    h = hashlib.blake2b(digest_size=8)
    try:
        size = path.stat().st_size
        h.update(str(size).encode())
        with path.open("rb") as fh:
            h.update(fh.read(chunk))
            if size > chunk:
                fh.seek(max(size - chunk, chunk))
                h.update(fh.read(chunk))
    except OSError as exc:
        raise ModelError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def _checkpoint_in(folder: Path) -> Path | None:
    """The weights file open_clip picks in a local-dir model folder (safetensors first)."""
    for pattern in ("*.safetensors", "*.bin", "*.pth"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None
