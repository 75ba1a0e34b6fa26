"""The model layer: any open_clip model behind one small interface.

``encode_images`` and ``encode_texts`` return L2-normalised float32 arrays; normalisation happens
here and nowhere else. torch and open_clip are imported inside functions so that the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mediasearch.checkpoint import LinearHead, is_checkpoint
from mediasearch.errors import ModelError, WeightsUnavailableError

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).parent / "demo_model"


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


def resolve_device(requested: str) -> str:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is available")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ModelError("--device mps was asked for but MPS is not available")
    return requested


@contextlib.contextmanager
def _quiet_loaders() -> Iterator[None]:
    """open_clip and huggingface_hub log download errors themselves; we report them once, our way."""
    loggers = [logging.getLogger(n) for n in ("", "huggingface_hub", "open_clip")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def default_pretrained(name: str) -> str | None:
    """The pretrained tag used when none is given: the design's default for ViT-B-32, else the first."""
    import open_clip

    from mediasearch.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED

    if name == DEFAULT_MODEL:
        return DEFAULT_PRETRAINED
    tags = open_clip.list_pretrained_tags_by_model(name)
    return tags[0] if tags else None


def resolve_spec(spec: ModelSpec) -> ModelSpec:
    """Fill in the default pretrained tag for a bare open_clip model name; weights files become absolute."""
    if spec.pretrained is not None and os.path.isfile(spec.pretrained):
        return ModelSpec(spec.name, os.path.abspath(spec.pretrained))  # a collection records where it is
    if spec.is_demo or spec.pretrained is not None or spec.name.startswith(("hf-hub:", "local-dir:")):
        return spec
    return ModelSpec(spec.name, default_pretrained(spec.name))


def _create_from_checkpoint(
    spec: ModelSpec, device: str, precision: str, cache_dir: Path | None
) -> tuple[Any, Any, LinearHead | None]:
    """A fine-tune checkpoint: its base architecture, then its weights (and linear head) over it."""
    from mediasearch import checkpoint

    meta, state, head = checkpoint.load(str(spec.pretrained))
    base = str((meta.get("base") or {}).get("name", ""))
    if base != spec.name:
        raise ModelError(f"{spec.pretrained} was fine-tuned from {base!r}: pass --model {base}")
    model, preprocess = _create(ModelSpec(spec.name), device, precision, cache_dir)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {spec.pretrained} does not fit {base}: {str(exc).splitlines()[0]}") from None
    return model, preprocess, head


def _create(spec: ModelSpec, device: str, precision: str, cache_dir: Path | None) -> tuple[Any, Any]:
    import open_clip

    name, pretrained = spec.name, spec.pretrained
    if spec.is_demo:
        name, pretrained = f"local-dir:{DEMO_DIR}", None
    elif not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise ModelError(f"unknown model {name!r}; see open_clip.list_models() for the names")
    try:
        with _quiet_loaders():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained,
                precision=precision,
                device=device,
                cache_dir=str(cache_dir) if cache_dir else None,
            )
    except RuntimeError as exc:
        if "download" in str(exc).lower() or "hub" in str(exc).lower():
            raise WeightsUnavailableError(
                f"could not download weights {pretrained or name!r} for {spec.name} (offline?); "
                "pass a local weights file with --pretrained FILE, or use --model demo"
            ) from None
        raise ModelError(f"cannot create model {spec.describe()}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model {spec.describe()}: {exc}") from None
    return model, preprocess


@dataclass
class ClipModel:
    """A loaded open_clip model with batched, normalised encoders."""

    spec: ModelSpec
    device: str
    model: Any
    transform: Callable[[Any], Any]
    tokenizer: Callable[[Sequence[str]], Any]
    batch_size: int = 32
    dim: int = 0
    image_size: int = 224
    head: LinearHead | None = None  # a fine-tune checkpoint's linear probe, used by classify
    _text_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image → the model's input tensor (C×H×W, float32 on CPU)."""
        return self.transform(image)

    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Encode an already preprocessed batch (N×C×H×W)."""
        import torch

        with torch.inference_mode():
            feats = self.model.encode_image(batch.to(self.device, dtype=self.dtype, non_blocking=True))
        return _normalise(feats)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode PIL images in batches; one row per image."""
        import torch

        out = [np.empty((0, self.dim), np.float32)]
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out.append(self.encode_tensors(torch.stack([self.preprocess(im) for im in chunk])))
        return np.concatenate(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts (cached per process); one row per text."""
        import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            with torch.inference_mode():
                feats = self.model.encode_text(self.tokenizer(chunk).to(self.device))
            for text, row in zip(chunk, _normalise(feats), strict=True):
                self._text_cache[text] = row
        if not texts:
            return np.empty((0, self.dim), np.float32)
        return np.stack([self._text_cache[t] for t in texts])

    def info(self) -> dict[str, Any]:
        """What a collection records about the model that built it."""
        return {
            "name": self.spec.name,
            "pretrained": self.spec.pretrained,
            "key": self.spec.key(),
            "dim": self.dim,
            "image_size": self.image_size,
        }


def _normalise(feats: torch.Tensor) -> np.ndarray:
    arr = feats.float().cpu().numpy().astype(np.float32, copy=False)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, 1e-12)


def load_model(
    spec: ModelSpec, *, device: str = "auto", cache_dir: Path | None = None, batch_size: int = 32
) -> ClipModel:
    """Create the model, load its weights and put it in eval mode on the chosen device."""
    import open_clip
    import torch

    dev = resolve_device(device)
    spec = resolve_spec(spec)
    if spec.pretrained and (spec.is_demo or _looks_like_path(spec.pretrained)):
        if not os.path.isfile(spec.pretrained):
            raise WeightsUnavailableError(f"weights file not found: {spec.pretrained}")
    precision = "fp16" if dev in ("cuda", "mps") else "fp32"
    head = None
    if spec.pretrained and is_checkpoint(spec.pretrained):
        model, transform, head = _create_from_checkpoint(spec, dev, precision, cache_dir)
    elif spec.is_demo and spec.pretrained:
        raise ModelError("--model demo takes only a `mediasearch finetune` checkpoint as --pretrained")
    else:
        model, transform = _create(spec, dev, precision, cache_dir)
    model.eval()
    name = f"local-dir:{DEMO_DIR}" if spec.is_demo else spec.name
    tokenizer = open_clip.get_tokenizer(name, cache_dir=str(cache_dir) if cache_dir else None)
    image_size = _image_size(model)
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer(["x"]).to(dev)).shape[-1])
    return ClipModel(spec, dev, model, transform, tokenizer, batch_size, dim, image_size, head)


def _image_size(model: Any) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
