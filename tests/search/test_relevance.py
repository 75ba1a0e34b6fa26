"""Calibration's parts on plain arrays and word sets: siblings, incompatible labels, the known-query gate."""

from __future__ import annotations

import math

import numpy as np

from mediasearch.search.relevance import Calibrator, ClosedVocabulary, incompatible, siblings, unknown_words

LABELS = ("red circle", "red square", "blue circle", "blue square", "red", "blue", "circle", "square")


def test_siblings_and_incompatible_labels_split_the_vocabulary_by_words() -> None:
    assert siblings(["a red circle"], LABELS) == ["red square", "blue circle"]
    # 'circle' goes with 'red' ('red circle' is a label): not an alternative to the query 'red'.
    assert incompatible(["red"], LABELS) == ["blue circle", "blue square", "blue"]
    assert incompatible(["a red circle"], LABELS) == ["blue square", "blue", "square"]
    assert incompatible(["a cat"], LABELS) == list(LABELS)


def test_unknown_words_are_the_content_words_outside_a_closed_vocabulary() -> None:
    closed = ClosedVocabulary(LABELS, frozenset({"shape"}))
    assert unknown_words(["a photo of a red shape"], closed.words) == []
    assert unknown_words(["an old car", "red"], closed.words) == ["car", "old"]


def _calibrator(**kw: object) -> Calibrator:
    baseline = np.array([[1.0, 0.0, 0.0]], np.float32)
    return Calibrator(baseline, 10.0, **kw)  # type: ignore[arg-type]


def test_the_gate_caps_every_item_at_the_query_margin_at_its_best_match() -> None:
    vectors = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
    raw = np.array([0.9, 0.6, 0.1], np.float32)
    open_vocabulary = _calibrator()
    assert open_vocabulary.gate(raw, vectors) == math.inf
    plain = open_vocabulary(raw, vectors)
    assert plain[0] > 0.99 and plain[2] < 0.5

    # An alternative that describes the best match (item 0) better than the query does: all below 0.5.
    beaten = _calibrator(alternatives=np.array([[0.0, 1.0, 0.0]], np.float32))
    margin = beaten.gate(raw, vectors)
    assert margin == np.float32(0.9) - np.float32(1.0)
    assert (beaten(raw, vectors, margin) < 0.5).all()

    # One the query beats at its best match by 0.3: scores are capped at sigmoid(10 * 0.3), no lower.
    beaten_not = _calibrator(alternatives=np.array([[0.0, 0.6, 0.0]], np.float32))
    margin = beaten_not.gate(raw, vectors)
    capped = beaten_not(raw, vectors, margin)
    assert capped[0] == capped[1] == np.float32(1 / (1 + math.exp(-10 * margin))) < plain[1]
    assert capped[2] == plain[2]  # below the cap: as without a gate

    unknown = _calibrator(alternatives=np.array([[0.0, 0.6, 0.0]], np.float32), unknown=("cat",))
    assert unknown.gate(raw, vectors) == -math.inf
    assert (unknown(raw, vectors, unknown.gate(raw, vectors)) == 0.0).all()
