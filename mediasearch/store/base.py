"""The vector store: one interface over Qdrant Edge (embedded, the default) and a Qdrant server.

One point per image and one per sampled video frame, each with a single named vector
(``"clip"``, cosine) and a payload (path, dirs, root, kind, size, mtime, fingerprint, frames_total,
timestamp, duration, width, height, date, camera, tags).

Edge (``home/store/<collection>/``) is owned by one process at a time. Besides the engine's own
lock on its write-ahead log, ``open_store`` takes a ``flock`` on ``home/store/<collection>.owner``
and writes its pid and command there, so a second opener can say who holds the store.

Durability: a write returns once the operation is in the shard's write-ahead log, which the
engine writes through mmap without fsync. A ``kill -9`` of the writer therefore loses nothing that
a write call had returned; a power cut can lose writes made since the last ``flush()``. Writes
flush by themselves at most every ``AUTO_FLUSH_S`` seconds, and ``close()`` flushes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import numpy as np

from mediasearch.errors import ModelMismatchError, StoreError, StoreFullError
from mediasearch.fsutil import atomic_write

VECTOR_NAME = "clip"
COLLECTION_PREFIX = "media_"
ACTIVE_ALIAS = "mediasearch"  # server: alias naming the collection that queries use
META_KEY = "mediasearch"  # server: collection-metadata key that holds our meta dict
KEYWORD_FIELDS = ("kind", "dirs", "path", "root", "tags", "people", "places")
FLOAT_FIELDS = ("date",)
GEO_FIELDS = ("geo",)  # {"lat", "lon"} where the file's EXIF has GPS
TEXT_FIELDS = ("camera", "ocr_text")  # full-text (word) index: "canon" matches "Canon EOS R5"
# Payload written by the enrichers (docs/architecture.md, "Signals and enrichers"):
#   "ocr_text": the recognised text of the picture or frame, normalised (lowercase, accents folded);
#   "people": ids of the people whose faces are in the picture or frame;
#   "places": lowercase names of the item's city, region and country (GeoNames).
# At or below this size, search scans every vector (~2.5 ms at 20k x 512 on one core); above it, the
# HNSW graph answers (the daemon builds it; a store without one is scanned). The engine's own switch is
# set to the same count for every vector size (``graph_threshold_kb``): left to its default (10 MB of
# vectors per segment) it built the graph from 10k points at 512-d but only from 40k at 128-d.
EXACT_SEARCH_MAX_POINTS = 20_000
# The graph. A CLIP text query lies far from every image vector (the modality gap): with Qdrant's
# defaults (m 16, ef_construct 100, ef 100) the graph kept 0.64 of the exact top 10 at 150k points
# (issue #32). Built with m 32 / ef_construct 200, at 100k demo-model points it keeps 0.955 of it
# searched with ef 512, 0.990 with 1024 and 0.998 with 2048 (`python scripts/bench_search.py --ef 512
# 1024 2048`; README, "Search at library size").
HNSW_M = 32
HNSW_EF_CONSTRUCT = 200
SEARCH_EF = 2048  # candidates the graph search keeps (Qdrant's hnsw_ef); never fewer than the limit
# The graph walks an int8 copy of the vectors (scalar quantization: a byte per component, scaled to the
# 0.99 quantile): half the bytes of the float16 vectors per step, and integer arithmetic. Its
# ``limit x OVERSAMPLING`` best are then re-scored on the stored vectors, so the scores and order returned
# are the stored vectors' cosines. At 100k demo-model points in 512-d, text queries' recall@10 against
# the exact scan stays 0.998 at ef 2048 and the graph search takes 3.4 ms p50 against 4.1 with the copy
# ignored (ef 1024: 2.2 against 3.3; `python scripts/bench_search.py --dim 512 --points 100000 --ef
# 1024 2048`; README, "Search at library size"). An exact search ignores the copy: it stays exact.
QUANTIZATION = "int8"
QUANTILE = 0.99
OVERSAMPLING = 2.0
BYTES_PER_COMPONENT = 2  # vectors are kept in float16
# What a graph was built with (recorded beside a build): a store opened with other settings is given
# the new ones, and its next optimise rebuilds the graph.
GRAPH_SETTINGS = {
    "m": HNSW_M,
    "ef_construct": HNSW_EF_CONSTRUCT,
    "max_points_exact": EXACT_SEARCH_MAX_POINTS,
    "quantization": QUANTIZATION,
}
AUTO_FLUSH_S = 5.0
# The engine writes through mmap: on a full disk that is a SIGBUS that kills the process, not an
# error. So a write needs this much free space first, or it is refused with StoreFullError.
MIN_FREE_BYTES = 128 << 20  # a new segment alone maps a 32 MiB vector chunk and a 32 MiB log file
LOCK_RETRY_S = 0.1
_ID_NAMESPACE = uuid.UUID("6f1c7a52-3d0e-5b8a-9c41-2e7d0b9a4f13")  # fixed forever: ids depend on it
_S = TypeVar("_S", bound="StoreBase")
VALID_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")


@dataclass(frozen=True)
class PointIn:
    """A point to write: UUID string id, L2-normalised float32 vector, payload."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """A point read back; ``score`` is set by ``search``, ``vector`` when asked for."""

    id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None
    score: float | None = None


@dataclass(frozen=True)
class Filter:
    """Conditions on the payload, all of which must hold."""

    kind: str | None = None
    dir_prefix: str | None = None  # matches any element of payload "dirs"
    path: str | None = None
    root: str | None = None
    tags: tuple[str, ...] = ()  # the item must carry all of them
    after: float | None = None  # payload "date" >= after
    before: float | None = None  # payload "date" < before
    exclude_ids: tuple[str, ...] = ()
    near: tuple[float, float, float] | None = None  # (lat, lon, km): payload "geo" within km of the point
    camera: str | None = None  # every word of it in payload "camera" (case-insensitive)
    ocr: tuple[str, ...] = ()  # each word in payload "ocr_text" (words given already normalised)
    people: tuple[str, ...] = ()  # person ids: every one of them in payload "people"
    place: str | None = None  # a lowercase place name in payload "places"

    def is_empty(self) -> bool:
        """True when the filter lets everything through (every field None or empty)."""
        return all(getattr(self, f.name) in (None, "", ()) for f in dataclass_fields(self))


class Store(Protocol):
    """A collection of points for one model; see ``EdgeStore`` and ``QdrantStore``."""

    location: str
    collection: str
    dim: int

    def get_meta(self) -> dict[str, Any] | None: ...
    def set_meta(self, meta: dict[str, Any]) -> None: ...
    def upsert(self, points: Sequence[PointIn]) -> None: ...
    def delete(self, ids: Sequence[str]) -> None: ...
    def delete_where(self, flt: Filter) -> None: ...
    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None: ...
    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Record]: ...
    def scroll(
        self,
        flt: Filter | None = None,
        *,
        fields: Sequence[str] | None = None,
        with_vectors: bool = False,
        batch: int = 1024,
    ) -> Iterator[Record]: ...
    def search(
        self,
        vector: np.ndarray,
        limit: int,
        flt: Filter | None = None,
        *,
        with_vectors: bool = False,
        exact: bool | None = None,
    ) -> list[Record]: ...
    def count(self, flt: Filter | None = None) -> int: ...
    def facet(self, key: str, flt: Filter | None = None, limit: int = 1000) -> dict[str, int]: ...
    def flush(self) -> None: ...
    def optimize(self) -> bool: ...
    def graph_points(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


# ---------------------------------------------------------------------------------------------
# Small helpers shared by both backends


def point_id(file_key: str, timestamp: float | None) -> str:
    """Deterministic UUID for a file (image) or one frame of it (video, timestamp in seconds)."""
    name = file_key if timestamp is None else f"{file_key}\x00{float(timestamp):.3f}"
    return str(uuid.uuid5(_ID_NAMESPACE, name))


def collection_name(model_key: str) -> str:
    """Collection (and shard directory) name for a model key: readable slug plus a short hash."""
    slug = re.sub(r"[^a-z0-9]+", "_", model_key.lower()).strip("_")[:40]
    digest = hashlib.sha256(model_key.encode("utf-8")).hexdigest()[:8]
    return f"{COLLECTION_PREFIX}{slug}_{digest}" if slug else f"{COLLECTION_PREFIX}{digest}"


def normalize_dir(path: str) -> str:
    """A directory as compared with payload ``dirs`` (see ``discover.ancestor_dirs``): no trailing
    separator except on the root."""
    return os.path.normpath(path)


def vector_list(vector: np.ndarray, dim: int) -> list[float]:
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise StoreError(f"vector of shape {array.shape} does not fit a store of {dim}-d vectors")
    return array.tolist()


def vector_array(vector: Any) -> np.ndarray | None:
    if isinstance(vector, dict):
        vector = vector.get(VECTOR_NAME)
    return None if vector is None else np.asarray(vector, dtype=np.float32)


def graph_threshold_kb(dim: int) -> int:
    """``EXACT_SEARCH_MAX_POINTS`` vectors of ``dim`` components in the unit of the engine's thresholds
    (KiB of vector data): a segment above it gets a graph, a filter matching fewer points is scanned."""
    return -(-EXACT_SEARCH_MAX_POINTS * dim * BYTES_PER_COMPONENT // 1024)


def to_record(point: Any) -> Record:
    """A point as either engine returns it (record or scored point) as a ``Record``."""
    score = getattr(point, "score", None)
    payload = dict(point.payload or {})
    return Record(str(point.id), payload, vector_array(point.vector), None if score is None else float(score))


def paged(fetch: Callable[[Any], tuple[Sequence[Any], Any]]) -> Iterator[Record]:
    """Every record of a scroll: ``fetch(offset)`` gives one page and the next offset (None at the end)."""
    offset: Any = None
    while True:
        found, offset = fetch(offset)
        yield from (to_record(point) for point in found)
        if offset is None:
            return


def payload_selector(fields: Sequence[str] | None, include: Callable[[list[str]], Any]) -> Any:
    """What payload to return: all (None), none (empty), or ``include(fields)`` in the engine's type."""
    if fields is None:
        return True
    return include(list(fields)) if fields else False


def check_dim(location: str, stored: int, wanted: int | None) -> None:
    """ModelMismatchError when a model of ``wanted`` dims opens a store of ``stored`` dims."""
    if wanted is not None and wanted != stored:
        raise ModelMismatchError(
            f"the index at {location} holds {stored}-d vectors but the model makes {wanted}-d vectors; "
            "index with the model that built it, or build a new index"
        )


def indexed_fields(only: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """The payload fields to index, by kind (keyword, float, geo, text): every one the media filters
    use, or those of them named in ``only`` (a store that filters on fewer, such as the faces')."""
    kinds = {"keyword": KEYWORD_FIELDS, "float": FLOAT_FIELDS, "geo": GEO_FIELDS, "text": TEXT_FIELDS}
    return {kind: tuple(f for f in fields if only is None or f in only) for kind, fields in kinds.items()}


def unwanted_indexes(existing: Iterable[str], indexed: Sequence[str] | None) -> list[str]:
    """Indexes a store has of the media's fields that ``indexed`` leaves out (the faces shard made before
    it named its own carried all of them); indexes of other fields are not ours to drop."""
    keep = {f for fields in indexed_fields(indexed).values() for f in fields}
    ours = {f for fields in indexed_fields().values() for f in fields}
    return sorted(f for f in existing if f in ours and f not in keep)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def write_small_file(path: Path, text: str) -> None:
    """Write a small file so that readers see the old or the new content, never a torn one, and a
    power cut after the call keeps the new one (``fsutil.atomic_write``); errors as StoreError."""
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise write_error(path, exc) from exc


def write_error(path: Path, exc: BaseException) -> StoreError:
    """A failed write as a one-line StoreError; a full disk as StoreFullError."""
    text = first_line(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "os error 28" in text:
        return StoreFullError(f"the disk holding {path} is full: free some space and run the command again")
    return StoreError(f"cannot write {path}: {getattr(exc, 'strerror', None) or text}")


def check_free_space(path: Path, needed: int | None = None, *, to: str = "write safely") -> None:
    """Raise StoreFullError unless the file system holding ``path`` has ``needed`` bytes free (by default
    the reserve of a safe write); ``to`` says what for, in the message."""
    needed = MIN_FREE_BYTES if needed is None else needed
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return  # cannot tell: the write itself will say
    if free < needed:
        raise StoreFullError(
            f"the disk holding the index ({path}) is full: {free >> 20} MiB free, {-(-needed >> 20)} MiB needed "
            f"to {to}; free some space and run the command again (what is indexed is kept)"
        )


class StoreBase:
    """What both backends share: context manager and the exact-or-HNSW search choice."""

    def close(self) -> None:
        raise NotImplementedError

    def _size_estimate(self) -> int:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _use_exact(self, exact: bool | None) -> bool:
        if exact is not None:
            return exact
        return self._size_estimate() <= EXACT_SEARCH_MAX_POINTS

    @staticmethod
    def _search_ef(limit: int) -> int:
        return max(SEARCH_EF, limit)


# ---------------------------------------------------------------------------------------------
# Edge: owner lock
