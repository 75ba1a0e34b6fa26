"""Zero-shot classification and prompt ensembling, shared by classify, tag and query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mediasearch.clip.spec import Embedder

# The seven-template ensemble that CLIP's authors found best on ImageNet; good for real models.
CLIP_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# The phrasings the demo model was trained with (see mediasearch/demo_model/TRAINING.md).
DEMO_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "{}",
)


def templates_for(model: Embedder) -> tuple[str, ...]:
    """The template ensemble that suits this model."""
    return DEMO_TEMPLATES if model.spec.is_demo else CLIP_TEMPLATES


def ensemble_embeddings(model: Embedder, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """One L2-normalised embedding per label: the mean of its templated phrasings."""
    if not labels:
        return np.empty((0, model.dim), np.float32)
    texts = [t.format(label) for label in labels for t in templates]
    feats = model.encode_texts(texts).reshape(len(labels), len(templates), -1).mean(axis=1)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class LabelScore:
    label: str
    prob: float


def logit_scale(model: Embedder) -> float:
    """The model's learnt temperature (CLIP's exp(logit_scale)); 100 when it has none."""
    inner = getattr(model, "model", None)
    value = getattr(inner, "logit_scale", None)
    if value is None:
        return 100.0
    return float(value.exp().item()) if hasattr(value, "exp") else float(np.exp(value))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Each row of logits as probabilities."""
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def classify_embeddings(
    image_embs: np.ndarray, label_embs: np.ndarray, labels: Sequence[str], scale: float
) -> list[list[LabelScore]]:
    """Softmax over labels for each image embedding, sorted by probability."""
    return ranked(softmax(scale * image_embs @ label_embs.T), labels)


def ranked(probs: np.ndarray, labels: Sequence[str]) -> list[list[LabelScore]]:
    """Each row of probabilities as labels sorted by probability."""
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        out.append([LabelScore(labels[i], float(row[i])) for i in order])
    return out


def parse_labels(text: str) -> list[str]:
    """'a, b,c' → ['a', 'b', 'c'] without empties or duplicates."""
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
