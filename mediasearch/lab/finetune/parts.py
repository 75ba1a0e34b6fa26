"""The images of a run, decoded once (pixels), its parts (train, validation, test), and scoring a part."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mediasearch.clip.model import ClipModel
from mediasearch.clip.zeroshot import ensemble_embeddings, templates_for
from mediasearch.errors import DataError
from mediasearch.lab.dataset import Example
from mediasearch.lab.evaluate import retrieval_recall
from mediasearch.lab.finetune.options import Event, ProgressFn


class Pixels:
    """Every image of the run decoded once, as the model's input before normalisation (uint8 when exact)."""

    def __init__(self, model: ClipModel) -> None:
        self.pre, self.mean, self.std = _split_transform(model.transform)
        self.rows: dict[Path, int] = {}
        self.tensors: list[Tensor] = []
        self.data: Tensor | None = None

    def add(self, paths: Sequence[Path], target: int, progress: ProgressFn) -> dict[Path, str]:
        """Decode the new ones; returns the unreadable ones with the reason."""
        from mediasearch.errors import MediaSearchError
        from mediasearch.media.decode import load_image
        from mediasearch.media.discover import media_kind

        bad: dict[Path, str] = {}
        todo = [p for p in dict.fromkeys(paths) if p not in self.rows]
        for i, path in enumerate(todo):
            try:
                if media_kind(path.name) != "image":
                    raise DataError("not an image (fine-tuning uses images only)")
                image, _ = load_image(path, target=target)
                self.rows[path] = len(self.tensors)
                self.tensors.append(self._store(self.pre(image)))
            except (MediaSearchError, OSError) as exc:
                bad[path] = str(exc)
            progress(Event("prepare", i + 1, len(todo)))
        self.data = None
        return bad

    def _store(self, tensor: Tensor) -> Tensor:
        return tensor.mul(255).round().to(torch.uint8) if self.mean is not None else tensor

    def batch(self, paths: Sequence[Path]) -> Tensor:
        """Normalised model input for these files."""
        if self.data is None:
            self.data = torch.stack(self.tensors)
        raw = self.data[[self.rows[p] for p in paths]]
        if self.mean is None or self.std is None:
            return raw.float()
        return (raw.float() / 255 - self.mean) / self.std


def _split_transform(transform: Any) -> tuple[Callable[[Any], Tensor], Tensor | None, Tensor | None]:
    """The transform without its final Normalize (so images can be kept as exact uint8), and its mean/std."""
    from torchvision.transforms import Compose, Normalize

    steps = getattr(transform, "transforms", None)
    if isinstance(transform, Compose) and steps and isinstance(steps[-1], Normalize):
        norm = steps[-1]
        return Compose(steps[:-1]), torch.tensor(norm.mean).view(3, 1, 1), torch.tensor(norm.std).view(3, 1, 1)
    return transform, None, None


@dataclass(frozen=True)
class Part:
    """A split (or a reference half): its examples, and the class names it is scored over."""

    name: str
    examples: tuple[Example, ...]
    classes: tuple[str, ...] | None  # None: a captioned part, scored by retrieval

    @property
    def paths(self) -> list[Path]:
        return list(dict.fromkeys(e.path for e in self.examples))


# ---------------------------------------------------------------- scoring


def wrap(base: ClipModel, module: nn.Module) -> ClipModel:
    """``base``'s encoders around another set of weights (with its own text cache)."""
    return dataclasses.replace(base, model=module, head=None, _text_cache={})


def embed_part(model: ClipModel, pixels: Pixels, paths: Sequence[Path]) -> np.ndarray:
    chunks = [model.encode_tensors(pixels.batch(paths[i : i + 64])) for i in range(0, len(paths), 64)]
    return np.concatenate(chunks) if chunks else np.empty((0, model.dim), np.float32)


def score_part(model: ClipModel, pixels: Pixels, part: Part) -> float:
    """Top-1 zero-shot accuracy (template ensemble) on a labelled part; mean recall@1 on a captioned one."""
    paths = part.paths
    embs = embed_part(model, pixels, paths)
    if part.classes is not None:
        label_of = {e.path: e.label for e in part.examples}
        truth = np.array([part.classes.index(label_of[p] or "") for p in paths])
        label_embs = ensemble_embeddings(model, part.classes, templates_for(model))
        return float(((embs @ label_embs.T).argmax(axis=1) == truth).mean())
    texts = list(dict.fromkeys(e.caption or "" for e in part.examples))
    relevant = np.zeros((len(paths), len(texts)), bool)
    for e in part.examples:
        relevant[paths.index(e.path), texts.index(e.caption or "")] = True
    recall = retrieval_recall(embs, model.encode_texts(texts), relevant)
    return (recall["image_to_text"]["recall@1"] + recall["text_to_image"]["recall@1"]) / 2
