"""Search: build a query vector, ask the store, group video frames into moments, calibrate scores.

Raw CLIP cosines are not comparable across queries, so each hit also gets a *calibrated* score (see
``relevance``); ``--min-score`` applies to it, so one cut-off works for every text query.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.clip.spec import Embedder
from mediasearch.clip.zeroshot import ensemble_embeddings, templates_for
from mediasearch.errors import MediaSearchError, QueryError
from mediasearch.media.discover import path_from_payload
from mediasearch.ocr.text import snippet
from mediasearch.search.lexical import FIELDS as LEXICAL_FIELDS
from mediasearch.search.lexical import LexicalHit, fuse, lexical_search, searchable_words, text_moment
from mediasearch.search.relevance import Calibrator
from mediasearch.store.base import Filter, Record, Store

_WEIGHT = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*:\s*(\S.*)$")


@dataclass(frozen=True)
class Term:
    """One part of a query: a text or an image file, with a weight (negative subtracts)."""

    kind: str  # "text" | "image"
    value: str
    weight: float = 1.0


def parse_weighted(text: str, default: float = 1.0) -> tuple[float, str]:
    """'2:dog' → (2.0, 'dog'); 'dog' → (default, 'dog'); 'a: b' (no number) and '2:' (no text) stay text."""
    m = _WEIGHT.match(text)
    if m:
        weight = float(m.group(1))
        if not math.isfinite(weight):
            raise QueryError(f"weight out of range in {text!r}")
        return weight, m.group(2).strip()
    return default, text.strip()


def parse_date(text: str, *, end: bool = False) -> float:
    """'2023', '2023-05', '2023-05-17' or an ISO datetime → unix time (local); ``end`` rounds up."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}", text):
            start = dt.datetime(int(text), 1, 1)
            nxt = dt.datetime(int(text) + 1, 1, 1)
        elif re.fullmatch(r"\d{4}-\d{2}", text):
            y, m = map(int, text.split("-"))
            start = dt.datetime(y, m, 1)
            nxt = dt.datetime(y + (m == 12), m % 12 + 1, 1)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            start = dt.datetime.fromisoformat(text)
            nxt = start + dt.timedelta(days=1)
        else:
            start = nxt = dt.datetime.fromisoformat(text)
        return (nxt if end else start).timestamp()
    except (ValueError, OverflowError, OSError):  # OverflowError, OSError: out of the platform's range
        raise QueryError(f"not a date: {text!r} (use YYYY, YYYY-MM, YYYY-MM-DD or ISO date-time)") from None


def parse_near(text: str) -> tuple[float, float, float]:
    """'48.85,2.35,10' → (lat, lon, km): within 10 km of that point."""
    parts = [p.strip() for p in text.split(",")]
    try:
        lat, lon, km = (float(p) for p in parts) if len(parts) == 3 else (math.nan,) * 3
    except ValueError:
        lat = lon = km = math.nan
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < km < 40_100):  # NaN fails every comparison
        raise QueryError(f"not a place: {text!r} (use LAT,LON,KM, e.g. 48.8566,2.3522,10)")
    return lat, lon, km


@dataclass(frozen=True)
class Query:
    """A parsed query with its filters."""

    terms: tuple[Term, ...] = ()
    raw: bool = False
    limit: int = 10
    kind: str | None = None
    path_prefix: str | None = None
    tags: tuple[str, ...] = ()
    after: float | None = None
    before: float | None = None
    min_score: float | None = None
    sort: str = "score"
    near: tuple[float, float, float] | None = None  # (lat, lon, km)
    camera: str | None = None
    ocr: tuple[str, ...] = ()  # words the recognised text must hold, normalised (textnorm.words)
    people: tuple[str, ...] = ()  # names of people who must all be in the item
    place: str | None = None  # a place name, lowercase
    person_ids: tuple[str, ...] = ()  # ``people`` resolved to the home's person ids (by the library)
    parse_text: bool = False  # read dates, a place, people... out of the first term's text (library.resolve)

    def filter(self, exclude_ids: Sequence[str] = ()) -> Filter:
        return Filter(
            kind=self.kind,
            dir_prefix=self.path_prefix,
            tags=self.tags,
            after=self.after,
            before=self.before,
            exclude_ids=tuple(exclude_ids),
            near=self.near,
            camera=self.camera or None,
            ocr=self.ocr,
            people=self.person_ids,
            place=self.place,
        )

    @property
    def has_text(self) -> bool:
        return any(t.kind == "text" and t.weight > 0 for t in self.terms)


@dataclass
class Hit:
    """One result: an image, or a video with its best moment."""

    path: str
    score: float
    kind: str
    calibrated: float
    timestamp: float | None = None
    start: float | None = None
    end: float | None = None
    tags: list[str] = field(default_factory=list)
    text: str | None = None  # the recognised text that matched (a snippet), when the query asked for text
    people: list[str] = field(default_factory=list)  # names of the people in the item
    place: str | None = None  # where it was taken: "Nice, France" (the places enricher), or None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "score": round(self.score, 4),
            "calibrated": round(self.calibrated, 4),
            "kind": self.kind,
            "timestamp": self.timestamp,
            "start": self.start,
            "end": self.end,
            "tags": self.tags,
            "text": self.text,
            "people": self.people,
            "place": self.place,
        }


def place_label(place: Any) -> str | None:
    """A stored ``place`` ({"city", "region", "country"}) as a hit shows it: "Nice, France"."""
    if not isinstance(place, dict):
        return None
    parts = [str(place[k]) for k in ("city", "country") if place.get(k)]
    return ", ".join(parts) or None


def text_vector(model: Embedder, text: str, *, raw: bool) -> np.ndarray:
    """A text's embedding: the template ensemble, or the text as is when ``raw``."""
    if raw:
        return model.encode_texts([text])[0]
    return ensemble_embeddings(model, [text], templates_for(model))[0]


def file_vector(model: Embedder, path: str) -> np.ndarray:
    """A file's embedding: an image, or the mean of a video's sampled frames."""
    import os
    import stat

    from mediasearch.errors import MediaError
    from mediasearch.media.decode import load_image
    from mediasearch.media.decode_pool import DecoderPool
    from mediasearch.media.discover import VIDEO_EXTS, display_path

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would block the decoder
            raise MediaError("not a regular file")
        if path.lower().rsplit(".", 1)[-1] in VIDEO_EXTS:
            with DecoderPool(1, timeout=30.0) as pool:  # a worker process: decord may hang on a broken file
                sample = pool.sample_video(path, interval=2.0, max_frames=600, target=getattr(model, "image_size", 224))
            frames = [f.image for f in sample.frames]
            if not frames:
                raise QueryError(f"{display_path(path)}: no frame could be decoded")
            return _unit(model.encode_images(frames).mean(axis=0))
        image, _ = load_image(path, target=getattr(model, "image_size", 224))
    except MediaError as exc:
        raise QueryError(f"{display_path(path)}: {exc}") from None
    except OSError as exc:
        raise QueryError(f"{display_path(path)}: {exc.strerror or exc}") from None
    return model.encode_images([image])[0]


def query_vector(model: Embedder, query: Query) -> np.ndarray:
    """The weighted sum of the terms' embeddings (negatives subtract), normalised."""
    if not any(t.weight > 0 for t in query.terms):
        raise QueryError("a query needs some text or an image (with a positive weight)")
    total = np.zeros(model.dim, np.float32)
    for term in query.terms:
        if term.kind == "text":
            vec = text_vector(model, term.value, raw=query.raw)
        else:
            vec = file_vector(model, term.value)
        total += term.weight * vec
    return _unit(total)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not math.isfinite(n):
        raise QueryError("the query's weights are too large")
    if n < 1e-9:
        raise QueryError("the query's terms cancel each other out")
    return (v / n).astype(np.float32)


def search(store: Store, model: Embedder, query: Query, *, exclude_ids: Sequence[str] = ()) -> list[Hit]:
    """Run a query: nearest points, grouped by file, calibrated, filtered, sorted. A query of recognised
    text alone (``--ocr`` and no text or image) lists the items whose text holds those words."""
    if query.ocr and not any(t.weight > 0 for t in query.terms):
        return text_only_hits(store, query, exclude_ids)
    vec = query_vector(model, query)
    return search_vector(store, model, vec, query, exclude_ids=exclude_ids)


def search_vector(
    store: Store, model: Embedder, vec: np.ndarray, query: Query, *, exclude_ids: Sequence[str] = ()
) -> list[Hit]:
    """The search behind ``search`` and ``similar``, from a ready query vector.

    The store's nearest points come without their vectors (reading 80 of them back costs ~2 ms at
    100k points); the best point of each file is kept, and only the points that can be returned are
    read back with their vectors, for the scores and the calibration: the first ``limit`` files, or
    all of them when ``--min-score`` may drop some.
    """
    from mediasearch.search.vocabulary import closed_vocabulary, default_vocabulary

    texts = [t.value for t in query.terms if t.kind == "text" and t.weight > 0]
    calibrate = Calibrator.for_query(model, texts, default_vocabulary(model).labels, closed_vocabulary(model))
    flt = query.filter(exclude_ids)
    fetch = max(query.limit * 8, 64)
    best: dict[str, Record] = {}  # each file's best point, by the store's score
    while True:
        records = store.search(vec, fetch, flt)
        for rec in records:
            path = path_from_payload(rec.payload)
            if path not in best or _score(rec) > _score(best[path]):
                best[path] = rec
        if len(best) >= query.limit or len(records) < fetch or fetch >= 8192:
            break
        fetch *= 4
    candidates = sorted(best.values(), key=lambda r: -_score(r))
    found = _lexical(store, query, flt)  # files whose recognised text holds the query's words
    if found:
        candidates = _fused(candidates, found)
    if query.min_score is None:
        candidates = candidates[: query.limit]
    hits, dates = _hits(store, candidates, vec, calibrate)
    # With words matched in pictures the fused order stands (and a word match is kept whatever its
    # CLIP score); otherwise the order of the cosines read back.
    ranked = hits if found else sorted(hits, key=lambda h: -h.score)
    if query.min_score is not None:
        ranked = [h for h in ranked if h.calibrated >= query.min_score or h.path in found]
    ranked = ranked[: query.limit]
    chosen = {_shown(r.payload): r for r in candidates}
    for hit in ranked:
        rec = chosen[hit.path]
        wanted = (*query.ocr, *(found[hit.path].words if hit.path in found else ()))
        hit.text = snippet([str(line.get("text", "")) for line in rec.payload.get("ocr_lines") or []], wanted)
        if hit.kind == "video":
            moment = text_moment(store, hit.path, wanted) if wanted else None
            if moment is None:
                _moment(store, hit, vec, query)
            else:
                hit.timestamp, hit.start, hit.end = moment
    if query.sort in ("date", "oldest"):  # newest first, or oldest first; undated last either way
        sign = -1.0 if query.sort == "date" else 1.0
        ranked.sort(key=lambda h: (dates.get(h.path) is None, sign * (dates.get(h.path) or 0.0)))
    return ranked


def _shown(payload: dict[str, Any]) -> str:
    """The path a hit shows for a point (as ``_hits`` sets it)."""
    return str(payload.get("path", path_from_payload(payload)))


def _lexical(store: Store, query: Query, flt: Filter) -> dict[str, LexicalHit]:
    """The files whose recognised text holds words of the query's texts (``search.lexical``), by path."""
    if query.raw:
        return {}
    words = searchable_words([t.value for t in query.terms if t.kind == "text" and t.weight > 0])
    return {_shown(hit.record.payload): hit for hit in lexical_search(store, words, flt)} if words else {}


def _fused(candidates: list[Record], found: dict[str, LexicalHit]) -> list[Record]:
    """The CLIP candidates and the word matches in one list, ordered by reciprocal rank fusion; a file
    found by its words is represented by the point (frame) holding them."""
    by_path = {_shown(r.payload): r for r in candidates}
    order = fuse(list(by_path), list(found))
    return [found[p].record if p in found else by_path[p] for p in order]


def text_only_hits(store: Store, query: Query, exclude_ids: Sequence[str] = ()) -> list[Hit]:
    """``--ocr`` alone: the items whose recognised text holds every word, most recent first (no score)."""
    flt = query.filter(exclude_ids)
    best: dict[str, Record] = {}
    for rec in store.scroll(flt, fields=(*LEXICAL_FIELDS, "tags", "date")):
        path = path_from_payload(rec.payload)
        if path not in best or (rec.payload.get("timestamp") or 0.0) < (best[path].payload.get("timestamp") or 0.0):
            best[path] = rec
    records = sorted(best.values(), key=lambda r: (-(r.payload.get("date") or 0.0), path_from_payload(r.payload)))
    hits = []
    for rec in records[: query.limit]:
        p = rec.payload
        hit = Hit(path=p.get("path", path_from_payload(p)), score=0.0, kind=p.get("kind", "image"), calibrated=0.0,
                  timestamp=p.get("timestamp"), tags=list(p.get("tags") or []))
        hit.text = snippet([str(line.get("text", "")) for line in p.get("ocr_lines") or []], query.ocr)
        if hit.kind == "video":
            hit.timestamp, hit.start, hit.end = text_moment(store, hit.path, query.ocr) or (hit.timestamp,) * 3
        hits.append(hit)
    return hits


def _score(record: Record) -> float:
    return -math.inf if record.score is None else record.score


def _hits(
    store: Store, candidates: list[Record], vec: np.ndarray, calibrate: Calibrator
) -> tuple[list[Hit], dict[str, float | None]]:
    """Hits for ``candidates`` (best first), scored on their stored vectors; those gone meanwhile are
    left out. The known-query gate is taken at the best match, the first candidate. Also each hit's
    date, for --sort date (not part of a hit)."""
    found = store.retrieve([c.id for c in candidates], with_vectors=True)
    stored = {r.id: r.vector for r in found if r.vector is not None}
    kept = [c for c in candidates if c.id in stored]
    if not kept:
        return [], {}
    vectors = np.stack([stored[c.id] for c in kept])
    raw = vectors @ vec
    gate = calibrate.gate(raw[:1], vectors[:1])
    cal = calibrate(raw, vectors, gate)
    hits, dates = [], {}
    for rec, score, c in zip(kept, raw, cal, strict=True):
        p = rec.payload
        hit = Hit(
            path=p.get("path", path_from_payload(p)),
            score=float(score),
            kind=p.get("kind", "image"),
            calibrated=float(c),
            timestamp=p.get("timestamp"),
            tags=list(p.get("tags") or []),
            people=list(p.get("people") or []),  # ids here; the library names them (LocalPeople.name_hits)
            place=place_label(p.get("place")),
        )
        hits.append(hit)
        dates[hit.path] = p.get("date")
    return hits, dates


def _moment(store: Store, hit: Hit, vec: np.ndarray, query: Query | None = None) -> None:
    """Set the span of neighbouring frames that match about as well as the best one (among the frames
    whose recognised text holds the ``--ocr`` words, when the query has some)."""
    where = Filter(path=hit.path, ocr=query.ocr if query is not None else ())
    frames = list(store.scroll(where, fields=("timestamp",), with_vectors=True))
    frames = [f for f in frames if f.vector is not None and f.payload.get("timestamp") is not None]
    if not frames:
        hit.start = hit.end = hit.timestamp
        return
    frames.sort(key=lambda f: f.payload["timestamp"])
    times = [float(f.payload["timestamp"]) for f in frames]
    scores = np.stack([f.vector for f in frames if f.vector is not None]) @ vec
    best = int(np.argmax(scores))
    # A frame "also matches" when it sits in the upper half between the video's worst and best frame.
    cut = scores[best] - 0.5 * (scores[best] - scores.min())
    lo = hi = best
    while lo > 0 and scores[lo - 1] >= cut:
        lo -= 1
    while hi < len(scores) - 1 and scores[hi + 1] >= cut:
        hi += 1
    hit.timestamp, hit.start, hit.end = times[best], times[lo], times[hi]


def similar_vector(store: Store, model: Embedder, path: str) -> tuple[np.ndarray, list[str]]:
    """ "More like this": an indexed file's stored vector(s), else the file encoded now.

    Returns the query vector and the ids of the file's own points (to leave out of the results).
    """
    import os

    from mediasearch.media.discover import display_path

    path = os.path.abspath(path)
    stored = list(store.scroll(Filter(path=display_path(path)), fields=("path",), with_vectors=True))
    vectors = [r.vector for r in stored if r.vector is not None]
    if vectors:
        return _unit(np.mean(vectors, axis=0)), [r.id for r in stored]
    if not os.path.isfile(path):
        raise QueryError(f"no such file: {path}")
    return file_vector(model, path), []


ProgressFn = Callable[[str, int, int], None]
"""(stage, done, total): how long jobs report progress."""


def encode_files(
    model: Embedder, paths: Sequence[Path], progress: ProgressFn | None = None
) -> tuple[np.ndarray, list[int], list[dict[str, str]]]:
    """Embeddings as ``search.file_vector`` makes them (batched for images); rows kept, and errors."""
    from mediasearch.media.decode import load_image
    from mediasearch.media.discover import media_kind
    from mediasearch.search.query import file_vector

    rows: dict[int, np.ndarray] = {}
    errors: list[dict[str, str]] = []
    batch: list[tuple[int, Any]] = []
    size = getattr(model, "image_size", 224)

    def flush() -> None:
        vectors = model.encode_images([im for _, im in batch])
        rows.update({i: v for (i, _), v in zip(batch, vectors, strict=True)})
        batch.clear()

    for i, path in enumerate(paths):
        try:
            if media_kind(path.name) == "video":
                rows[i] = file_vector(model, str(path))
            else:
                batch.append((i, load_image(path, target=size)[0]))
        except (MediaSearchError, OSError) as exc:
            errors.append({"path": str(path), "error": str(exc)})
        if len(batch) >= 32:
            flush()
        if progress is not None:
            progress("encode", i + 1, len(paths))
    if batch:
        flush()
    kept = sorted(rows)
    embs = np.stack([rows[i] for i in kept]) if kept else np.empty((0, model.dim), np.float32)
    return embs, kept, errors
