"""Zero-shot tags: a vocabulary, prompt-ensembled label embeddings and per-tag thresholds.

A tag applies to an item when the tag's calibrated probability (the tag against the best neutral
caption, see ``relevance``) reaches its threshold, 0.5 unless the vocabulary says otherwise.

Learned prompts (``finetune --prompt-learning``) make a closed vocabulary of the classes they were
trained for: an item gets the class whose softmax probability among them reaches 0.5, if one does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mediasearch.clip.spec import Embedder
from mediasearch.clip.zeroshot import ensemble_embeddings, softmax, templates_for
from mediasearch.search.relevance import Calibrator
from mediasearch.search.vocabulary import MAX_TAGS, Vocabulary
from mediasearch.store.base import Store


class Tagger:
    """Turns image embeddings into tag lists."""

    def __init__(self, model: Embedder, vocab: Vocabulary):
        self.vocab = vocab
        self.thresholds = np.asarray(vocab.thresholds, np.float32)
        self.calibrator: Calibrator | None = None
        if vocab.prompts:
            from mediasearch.clip.prompts import load_prompts
            from mediasearch.clip.zeroshot import logit_scale

            self.labels = load_prompts(vocab.prompts).label_embeddings(model, vocab.labels)  # type: ignore[arg-type]
            self.scale = logit_scale(model)
        else:
            self.labels = ensemble_embeddings(model, vocab.labels, templates_for(model))
            self.calibrator = Calibrator.neutral(model)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """N×T probabilities of each tag for each item: calibrated, or a softmax over learned classes."""
        sims = vectors @ self.labels.T
        if self.calibrator is not None:
            return self.calibrator(sims, vectors)
        return softmax(self.scale * sims)

    def __call__(self, vectors: np.ndarray) -> list[list[str]]:
        probs = self.probabilities(vectors)
        out = []
        for row in probs:
            order = [i for i in np.argsort(-row, kind="stable") if row[i] >= self.thresholds[i]]
            out.append([self.vocab.labels[i] for i in order[:MAX_TAGS]])
        return out


def tag_store(store: Store, tagger: Tagger, batch: int = 512) -> dict[str, Any]:
    """Tag every point in the store; returns the number of files and of tags applied per tag."""
    files: dict[str, set[str]] = {}
    chunk: list[Any] = []

    def flush() -> None:
        tags = tagger(np.stack([r.vector for r in chunk]))
        groups: dict[tuple[str, ...], list[str]] = {}
        for rec, labels in zip(chunk, tags, strict=True):
            groups.setdefault(tuple(labels), []).append(rec.id)
            files.setdefault(rec.payload["path"], set()).update(labels)
        for labels_key, ids in groups.items():
            store.set_payload(ids, {"tags": list(labels_key)})
        chunk.clear()

    for rec in store.scroll(fields=("path",), with_vectors=True, batch=batch):
        chunk.append(rec)
        if len(chunk) >= batch:
            flush()
    if chunk:
        flush()
    store.flush()
    counts = Counter(t for tags in files.values() for t in tags)
    tagged = sum(1 for t in files.values() if t)
    return {"files": len(files), "tagged": tagged, "tags": dict(counts.most_common())}


def tag_counts(store: Store) -> dict[str, int]:
    """How many files carry each tag (a video counts once)."""
    files: dict[str, set[str]] = {}
    for rec in store.scroll(fields=("path", "tags")):
        files.setdefault(rec.payload["path"], set()).update(rec.payload.get("tags") or [])
    return dict(Counter(t for tags in files.values() for t in tags).most_common())
