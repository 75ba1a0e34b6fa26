"""The lexical side of a text query: items whose recognised text (OCR) holds the query's words.

A plain text query ("the receipt from starbucks") is ranked twice: by CLIP, and here by the words
written in the pictures (each matched word weighs by how rare it is in the index); the two rankings
are fused by reciprocal rank (``fuse``), so a picture that says "STARBUCKS" comes first even where
CLIP alone would not rank it high. The match itself is the store's full-text filter on ``ocr_text``
(Qdrant's text index, on Edge and on a server alike); ``ocr.text.index_text`` put the prefixes of long
words and the digit-for-letter readings there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mediasearch.media.discover import path_from_payload
from mediasearch.ocr.text import query_words
from mediasearch.store.base import Filter, Record, Store

RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al. 2009): 1 / (K + rank)
PER_WORD = 256  # points read per query word: beyond that a word is too common to rank by
FIELDS = ("path", "path_raw", "kind", "timestamp", "ocr_lines")
STOPWORDS = frozenset(
    "a an and the of in on at to from for with by is are was be this that these those it its my our your "
    "me us we i you he she they them his her their photo photos picture pictures image images video videos "
    "shot of le la les de des du un une et der die das und ein eine el los las y".split()
)


@dataclass
class LexicalHit:
    """A file whose recognised text holds some of the words: its best point and the words it holds."""

    path: str
    record: Record
    score: float
    words: list[str] = field(default_factory=list)


def searchable_words(texts: Sequence[str]) -> tuple[str, ...]:
    """The words of the query's texts worth matching against recognised text (no stopwords, 2+ chars)."""
    return tuple(dict.fromkeys(w for text in texts for w in query_words(text) if len(w) > 1 and w not in STOPWORDS))


def lexical_search(store: Store, words: Sequence[str], flt: Filter | None = None) -> list[LexicalHit]:
    """Files whose points' recognised text holds any of ``words``, best first (the sum over the words a
    point holds of their rarity; ties to the point holding more of them)."""
    base = flt or Filter()
    points: dict[str, tuple[Record, float, list[str]]] = {}
    for word in words:
        found = _points_with(store, replace(base, ocr=(*base.ocr, word)))
        if not found:
            continue
        weight = math.log(1.0 + PER_WORD / len(found))  # rarer words weigh more
        for rec in found:
            _, score, held = points.get(rec.id, (rec, 0.0, []))
            points[rec.id] = (rec, score + weight, [*held, word])
    best: dict[str, LexicalHit] = {}
    for rec, score, held in points.values():
        path = path_from_payload(rec.payload)
        current = best.get(path)
        if current is None or (score, -_time(rec)) > (current.score, -_time(current.record)):
            best[path] = LexicalHit(path, rec, score, held)
    return sorted(best.values(), key=lambda h: (-h.score, h.path))


def _points_with(store: Store, flt: Filter) -> list[Record]:
    out = []
    for rec in store.scroll(flt, fields=FIELDS, batch=PER_WORD):
        out.append(rec)
        if len(out) >= PER_WORD:
            break
    return out


def _time(rec: Record) -> float:
    value = rec.payload.get("timestamp")
    return float(value) if isinstance(value, (int, float)) else 0.0


def fuse(*rankings: Sequence[str]) -> list[str]:
    """Reciprocal rank fusion of rankings of paths (best first): the fused order, best first."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, path in enumerate(ranking, 1):
            scores[path] = scores.get(path, 0.0) + 1.0 / (RRF_K + rank)
    first_seen = {p: i for i, p in enumerate(p for r in rankings for p in r)}
    return sorted(scores, key=lambda p: (-scores[p], first_seen[p]))


def text_moment(store: Store, path: str, words: Sequence[str]) -> tuple[float, float, float] | None:
    """For a video: (time of the first frame holding the most of ``words``, start, end of the run of
    neighbouring frames holding any of them); None when no frame holds one."""
    held: dict[float, int] = {}
    for word in words:
        for rec in store.scroll(Filter(path=path, ocr=(word,)), fields=("timestamp",)):
            if isinstance(rec.payload.get("timestamp"), (int, float)):
                t = float(rec.payload["timestamp"])
                held[t] = held.get(t, 0) + 1
    if not held:
        return None
    times = sorted(_frame_times(store, path))
    best = min(held, key=lambda t: (-held[t], t))
    at = times.index(best) if best in times else 0
    lo = hi = at
    while lo > 0 and times[lo - 1] in held:
        lo -= 1
    while hi < len(times) - 1 and times[hi + 1] in held:
        hi += 1
    return best, times[lo], times[hi]


def _frame_times(store: Store, path: str) -> list[float]:
    out = []
    for rec in store.scroll(Filter(path=path), fields=("timestamp",)):
        value: Any = rec.payload.get("timestamp")
        if isinstance(value, (int, float)):
            out.append(float(value))
    return out
