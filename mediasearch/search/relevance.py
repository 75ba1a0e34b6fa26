"""Calibrated relevance: raw CLIP cosines mapped to a probability that means the same for every query.

For an item with embedding x and a query q, the calibrated score is

    sigmoid(scale · min(q·x − max_r r·x,  g))

where ``scale`` is the model's own temperature and r runs over *baseline* descriptions: a few
neutral captions ("a photo", "an image", ...) and the query's *siblings* in the model's vocabulary —
labels that share a content word with the query but are neither a part of it nor a refinement of it
("red square" and "blue circle" for "red circle"; none for "red" or for "dog on a beach" with the
built-in vocabulary). 0.5 means "the query describes this item no better than a neutral caption or a
close alternative"; values near 1 mean "clearly this". Tags use the neutral captions only.

``g`` is the *known-query gate*. It needs a *closed* vocabulary: one that lists every description its
model has learned, as the demo model's shapes vocabulary does (a real CLIP knows far more than the
built-in list, so its vocabulary is open and g = +∞: there the neutral captions, which mean "anything"
to a real CLIP, are the model's own baseline). Against a closed vocabulary:

- a query with a content word that the vocabulary (or the model's own caption filler) never uses is
  *unknown*: the model never learned the word, so its cosine is noise — g = −∞ and every item scores 0;
- otherwise g is the query's margin at its *best match* (the item it scores highest) over the best
  *alternative* there: a neutral caption or a label the query is incompatible with (one that shares no
  content word with it and that no label combines with it: "blue" and "square" for "red circle", not
  "circle" for "red", since "red circle" is a label). A query no better at its best match than such an
  alternative is not something the model can see in this library, and scores below 0.5 everywhere.
"""

from __future__ import annotations

import functools
import math
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


def _words(texts: Sequence[str]) -> frozenset[str]:
    return frozenset().union(*(content_words(t) for t in texts)) if texts else frozenset()


def siblings(query_texts: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Labels sharing a content word with the query that neither contain it nor are contained in it."""
    words = _words(query_texts)
    out = []
    for label in labels:
        lw = content_words(label)
        if lw & words and not (lw <= words or words <= lw):
            out.append(label)
    return out


def incompatible(query_texts: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Labels sharing no content word with the query that no label describes together with it."""
    words = _words(query_texts)
    label_words = [content_words(label) for label in labels]
    return [label for label, lw in zip(labels, label_words, strict=True)
            if not lw & words and not any(lw | words <= other for other in label_words)]


def unknown_words(query_texts: Sequence[str], known: frozenset[str]) -> list[str]:
    """The query's content words outside ``known``, in order."""
    return sorted(_words(query_texts) - known)


@dataclass(frozen=True)
class ClosedVocabulary:
    """Every description a model has learned: its labels and the words of its captions' filler."""

    labels: tuple[str, ...]
    filler: frozenset[str] = frozenset()

    @property
    def words(self) -> frozenset[str]:
        return _words(self.labels) | self.filler


@dataclass(frozen=True)
class Calibrator:
    """Maps raw cosines to calibrated probabilities against a set of baseline descriptions."""

    baseline: np.ndarray  # K×D, L2-normalised
    scale: float
    alternatives: np.ndarray | None = None  # A×D: the gate's (closed vocabulary); None: no gate
    unknown: tuple[str, ...] = ()  # words a closed-vocabulary model never learned

    @classmethod
    def neutral(cls, model: Embedder) -> Calibrator:
        """Against the neutral captions only (used for tags)."""
        return cls(model.encode_texts(list(NEUTRAL_PROMPTS)), logit_scale(model))

    @classmethod
    def for_query(
        cls, model: Embedder, query_texts: Sequence[str], labels: Sequence[str], closed: ClosedVocabulary | None = None
    ) -> Calibrator:
        """Against the neutral captions and the query's siblings among ``labels``; with a closed
        vocabulary, also the known-query gate (see the module's docstring)."""
        base = cls.neutral(model)
        near = siblings(query_texts, labels)
        baseline = base.baseline
        if near:
            baseline = np.concatenate([baseline, ensemble_embeddings(model, near, templates_for(model))])
        if closed is None or not query_texts:
            return cls(baseline, base.scale)
        unknown = tuple(unknown_words(query_texts, closed.words))
        others = incompatible(query_texts, closed.labels)
        alternatives = base.baseline
        if others:
            alternatives = np.concatenate([alternatives, ensemble_embeddings(model, others, templates_for(model))])
        return cls(baseline, base.scale, alternatives, unknown)

    def gate(self, raw: np.ndarray, vectors: np.ndarray) -> float:
        """The query's margin at its best match among these items over the best alternative there
        (+∞ without a gate, −∞ for a query with an unknown word or no items)."""
        if self.unknown:
            return -math.inf
        if self.alternatives is None:
            return math.inf
        if len(raw) == 0:
            return -math.inf
        best = int(np.argmax(raw))
        return float(raw[best] - (self.alternatives @ vectors[best]).max())

    def __call__(self, raw: np.ndarray, vectors: np.ndarray, gate: float = math.inf) -> np.ndarray:
        """``raw``: N cosines (or N×T for T queries) of the items whose embeddings are ``vectors``;
        ``gate``: the query's margin from ``gate`` (+∞: none)."""
        best = (vectors @ self.baseline.T).max(axis=1)
        if raw.ndim == 2:
            best = best[:, None]
        margin = np.minimum(raw - best, gate)
        with np.errstate(over="ignore"):  # exp(+∞) for an unknown query: a score of exactly 0
            return 1.0 / (1.0 + np.exp(-self.scale * margin))
