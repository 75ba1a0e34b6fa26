"""How far a calibrated score can be trusted, on a user's labelled set: ``eval calibration``.

Every query is scored against every file the way ``query`` scores it (template ensemble, the baseline
of neutral captions and siblings, the known-query gate at the query's best match among these files),
and each (query, file) pair is put in a group by words alone — the query's content words W_q against
the file's label's W_l:

- ``exact``: W_q = W_l ("red circle" on a red circle);
- ``match``: W_q ⊂ W_l, a query for one attribute ("red" on a red circle);
- ``partial``: they share a word but W_q ⊄ W_l ("red circle" on a red square or a blue circle);
- ``unrelated``: no shared word ("red circle" on a blue star);
- ``unknown``: the query has a word no label uses ("a cat" on anything).

For each group: the pairs, the share that passes ``min_score`` (the cut ``query --min-score`` makes)
and percentiles of the calibrated score. Exact and match pairs should pass; the others should not.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.clip.spec import Embedder
from mediasearch.errors import DataError
from mediasearch.lab.dataset import read_dataset
from mediasearch.lab.evaluate import _model_info
from mediasearch.search.query import ProgressFn, encode_files, text_vector
from mediasearch.search.relevance import Calibrator, content_words
from mediasearch.search.vocabulary import closed_vocabulary, default_vocabulary

# Everyday descriptions no shapes label names (the demo model never learned them); on a user's set,
# those sharing a word with a label are left out of the default queries.
UNKNOWN_QUERIES: tuple[str, ...] = (
    "a cat", "a dog on a beach", "zebra", "a mountain lake at sunset", "a birthday cake", "an old car",
)
GROUPS: tuple[str, ...] = ("exact", "match", "partial", "unrelated", "unknown")
SHOULD_PASS = frozenset({"exact", "match"})
PERCENTILES: tuple[int, ...] = (1, 10, 50, 90, 99)


@dataclass(frozen=True)
class Queries:
    """The queries of a run, by where they came from."""

    texts: tuple[str, ...]
    source: str


def default_queries(labels: Sequence[str]) -> Queries:
    """Each label, each content word of the labels, and the unknown-word descriptions."""
    known = {w for label in labels for w in content_words(label)}
    whole = {content_words(label) for label in labels}
    singles = [w for w in sorted(known) if frozenset({w}) not in whole]
    unknown = [q for q in UNKNOWN_QUERIES if not content_words(q) & known]
    return Queries((*labels, *singles, *unknown), "the labels, their words and everyday descriptions")


def read_queries(path: str | os.PathLike[str]) -> Queries:
    """One query a line; blank lines and '#' comments skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read queries {path}: {exc.strerror or exc}") from None
    texts = tuple(line.split("#", 1)[0].strip() for line in text.splitlines())
    texts = tuple(t for t in texts if t)
    if not texts:
        raise DataError(f"{path}: no queries")
    return Queries(texts, str(path))


def relation(query_words: frozenset[str], label_words: frozenset[str], known: frozenset[str]) -> str:
    """The group of a (query, file) pair, from the query's and the file's label's content words."""
    if query_words - known:
        return "unknown"
    if query_words == label_words:
        return "exact"
    if query_words < label_words:
        return "match"
    return "partial" if query_words & label_words else "unrelated"


def eval_calibration(
    model: Embedder,
    source: str | os.PathLike[str],
    *,
    queries: str | os.PathLike[str] | None = None,
    min_score: float = 0.5,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Pass rates and percentiles of calibrated scores per group, and each query's hits at ``min_score``."""
    ds = read_dataset(source, videos=True)
    if not ds.labelled:
        raise DataError(f"{ds.source}: eval calibration needs labels (class folders, or a label column)")
    examples = list(ds.examples)
    embs, kept, errors = encode_files(model, [e.path for e in examples], progress)
    labels = [examples[i].label or "" for i in kept]
    if not labels:
        raise DataError(f"{ds.source}: no readable files")
    chosen = read_queries(queries) if queries is not None else default_queries(sorted(set(labels)))
    known = frozenset().union(*(content_words(label) for label in labels))
    scores: dict[str, list[float]] = {g: [] for g in GROUPS}
    rows = []
    for text in chosen.texts:
        calibrated, gate = _calibrated(model, text, embs)
        groups = [relation(content_words(text), content_words(label), known) for label in labels]
        for group, score in zip(groups, calibrated, strict=True):
            scores[group].append(float(score))
        rows.append(_query_row(text, groups, calibrated, min_score) | gate)
    return {
        "model": _model_info(model),
        "source": ds.source,
        "files": len(kept),
        "failed": len(errors) + ds.problems.count,
        "errors": errors,
        "queries": {"count": len(chosen.texts), "source": chosen.source},
        "min_score": min_score,
        "groups": {g: _summary(v, min_score, g in SHOULD_PASS) for g, v in scores.items() if v},
        "per_query": rows,
    }


def _calibrated(model: Embedder, text: str, embs: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The calibrated scores ``query`` gives these files for ``text`` (the whole set is the library), and
    the gate's view: the words the model never learned, and the margin at the best match (None: no gate)."""
    closed = closed_vocabulary(model)
    calibrate = Calibrator.for_query(model, [text], default_vocabulary(model).labels, closed)
    raw = embs @ text_vector(model, text, raw=False)
    margin = dataclasses.replace(calibrate, unknown=()).gate(raw, embs)
    gate = {"unknown_words": list(calibrate.unknown), "gate_margin": margin if math.isfinite(margin) else None}
    return calibrate(raw, embs, calibrate.gate(raw, embs)), gate


def _query_row(text: str, groups: Sequence[str], calibrated: np.ndarray, min_score: float) -> dict[str, Any]:
    passed = calibrated >= min_score
    should = np.array([g in SHOULD_PASS for g in groups])
    return {
        "query": text,
        "kind": "unknown" if groups and groups[0] == "unknown" else "known",
        "relevant": int(should.sum()),
        "hits": int(passed.sum()),
        "true_hits": int((passed & should).sum()),
        "false_hits": int((passed & ~should).sum()),
    }


def _summary(values: Sequence[float], min_score: float, should_pass: bool) -> dict[str, Any]:
    arr = np.asarray(values)
    return {
        "pairs": len(arr),
        "should_pass": should_pass,
        "pass_rate": float((arr >= min_score).mean()),
        "percentiles": {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES},
    }
