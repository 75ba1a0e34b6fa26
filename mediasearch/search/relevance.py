"""Calibrated relevance: raw CLIP cosines mapped to a probability that means the same for every query.

For an item with embedding x and a query q, the calibrated score is

    sigmoid(scale · (q·x − max_r r·x))

where ``scale`` is the model's own temperature and r runs over *baseline* descriptions: a few
neutral captions ("a photo", "an image", ...) and the query's *siblings* in the model's vocabulary —
labels that share a content word with the query but are neither a part of it nor a refinement of it
("red square" and "blue circle" for "red circle"; none for "red" or for "dog on a beach" with the
built-in vocabulary). 0.5 means "the query describes this item no better than a neutral caption or a
close alternative"; values near 1 mean "clearly this". Tags use the neutral captions only.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mediasearch.clip.spec import Embedder
from mediasearch.clip.zeroshot import ensemble_embeddings, logit_scale, templates_for

NEUTRAL_PROMPTS: tuple[str, ...] = ("a photo", "an image", "a picture", "a photo of something")
STOPWORDS = frozenset(
    "a an the of on in at with and or to for by from photo photograph picture image something some".split()
)


@functools.lru_cache(maxsize=4096)  # every query checks the whole tag vocabulary
def content_words(text: str) -> frozenset[str]:
    """Lower-case words of a description, without articles, prepositions and 'photo'-like filler."""
    return frozenset(re.findall(r"[a-z0-9]+", text.lower())) - STOPWORDS


def siblings(query_texts: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Labels sharing a content word with the query that neither contain it nor are contained in it."""
    words = frozenset().union(*(content_words(t) for t in query_texts)) if query_texts else frozenset()
    out = []
    for label in labels:
        lw = content_words(label)
        if lw & words and not (lw <= words or words <= lw):
            out.append(label)
    return out


@dataclass(frozen=True)
class Calibrator:
    """Maps raw cosines to calibrated probabilities against a set of baseline descriptions."""

    baseline: np.ndarray  # K×D, L2-normalised
    scale: float

    @classmethod
    def neutral(cls, model: Embedder) -> Calibrator:
        """Against the neutral captions only (used for tags)."""
        return cls(model.encode_texts(list(NEUTRAL_PROMPTS)), logit_scale(model))

    @classmethod
    def for_query(cls, model: Embedder, query_texts: Sequence[str], labels: Sequence[str]) -> Calibrator:
        """Against the neutral captions and the query's siblings among ``labels``."""
        base = cls.neutral(model)
        near = siblings(query_texts, labels)
        if not near:
            return base
        extra = ensemble_embeddings(model, near, templates_for(model))
        return cls(np.concatenate([base.baseline, extra]), base.scale)

    def __call__(self, raw: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """``raw``: N cosines (or N×T for T queries) of the items whose embeddings are ``vectors``."""
        best = (vectors @ self.baseline.T).max(axis=1)
        if raw.ndim == 2:
            best = best[:, None]
        return 1.0 / (1.0 + np.exp(-self.scale * (raw - best)))
