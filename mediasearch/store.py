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

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, TypeVar

import numpy as np

from mediasearch.errors import MediaSearchError, ModelMismatchError, StoreError, StoreFullError, StoreLockedError

VECTOR_NAME = "clip"
COLLECTION_PREFIX = "media_"
ACTIVE_ALIAS = "mediasearch"  # server: alias naming the collection that queries use
META_KEY = "mediasearch"  # server: collection-metadata key that holds our meta dict
KEYWORD_FIELDS = ("kind", "dirs", "path", "root", "tags")
FLOAT_FIELDS = ("date",)
EXACT_SEARCH_MAX_POINTS = 100_000  # at or below this size, search scans every vector
AUTO_FLUSH_S = 5.0
# The engine writes through mmap: on a full disk that is a SIGBUS that kills the process, not an
# error. So a write needs this much free space first, or it is refused with StoreFullError.
MIN_FREE_BYTES = 128 << 20  # a new segment alone maps a 32 MiB vector chunk and a 32 MiB log file
LOCK_RETRY_S = 0.1
_ID_NAMESPACE = uuid.UUID("6f1c7a52-3d0e-5b8a-9c41-2e7d0b9a4f13")  # fixed forever: ids depend on it
_MEMORY_SERVERS: dict[str, Any] = {}  # ":memory:" -> QdrantClient, shared like one server would be
_S = TypeVar("_S", bound="_StoreBase")
_VALID_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}")


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

    def equalities(self) -> list[tuple[str, str]]:
        """(payload key, value) pairs that must match exactly."""
        pairs = [("kind", self.kind), ("path", self.path), ("root", self.root)]
        if self.dir_prefix is not None:
            pairs.append(("dirs", normalize_dir(self.dir_prefix)))
        pairs.extend(("tags", tag) for tag in self.tags)
        return [(key, value) for key, value in pairs if value is not None]

    def is_empty(self) -> bool:
        """True when the filter lets everything through."""
        no_dates = self.after is None and self.before is None
        return not self.equalities() and no_dates and not self.exclude_ids


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


def _vector_list(vector: np.ndarray, dim: int) -> list[float]:
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise StoreError(f"vector of shape {array.shape} does not fit a store of {dim}-d vectors")
    return array.tolist()


def _vector_array(vector: Any) -> np.ndarray | None:
    if isinstance(vector, dict):
        vector = vector.get(VECTOR_NAME)
    return None if vector is None else np.asarray(vector, dtype=np.float32)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _atomic_write(path: Path, text: str) -> None:
    """Write a small file so that readers see the old or the new content, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _write_error(path, exc) from exc


def _write_error(path: Path, exc: BaseException) -> StoreError:
    """A failed write as a one-line StoreError; a full disk as StoreFullError."""
    text = _first_line(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "os error 28" in text:
        return StoreFullError(f"the disk holding {path} is full: free some space and run the command again")
    return StoreError(f"cannot write {path}: {getattr(exc, 'strerror', None) or text}")


def check_free_space(path: Path, needed: int | None = None) -> None:
    """Raise StoreFullError unless the file system holding ``path`` has room for a safe write."""
    needed = MIN_FREE_BYTES if needed is None else needed
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return  # cannot tell: the write itself will say
    if free < needed:
        raise StoreFullError(
            f"the disk holding the index ({path}) is full: {free >> 20} MiB free, {needed >> 20} MiB needed "
            "to write safely; free some space and run the command again (what is indexed is kept)"
        )


class _StoreBase:
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


# ---------------------------------------------------------------------------------------------
# Edge: owner lock


class _OwnerLock:
    """An exclusive ``flock`` on ``<collection>.owner`` holding the owner's pid and command.

    The kernel drops the lock when its process dies, so a stale file never blocks anyone: its
    content is only read to name the holder, and overwritten by the next owner.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def try_acquire(self) -> bool:
        """Take the lock without waiting; False when another open file holds it."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the engine's WAL lock still guards the shard
            return True
        try:
            fh = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        owner = {"pid": os.getpid(), "command": " ".join(sys.argv)[:300], "since": time.time()}
        with contextlib.suppress(OSError):  # only names the holder: a full disk must not stop us
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(owner))
            fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """Who holds the store, as a phrase for an error message."""
        unknown = "another mediasearch process"
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            pid = int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return unknown
        if pid == os.getpid():
            return "this same process (it is already open here)"
        if not _pid_alive(pid):
            return unknown  # a forked child of the dead owner may still hold the lock
        command = str(owner.get("command", "")).strip()
        return f"{unknown} (pid {pid}: {command})" if command else f"{unknown} (pid {pid})"

    def release(self) -> None:
        """Clear the owner record and drop the lock."""
        if self._fh is None:
            return
        with contextlib.suppress(OSError):
            self._fh.seek(0)
            self._fh.truncate()
        self._fh.close()  # closing the file drops the flock
        self._fh = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by another user
        return True
    return True


def _locked_error(shard_dir: Path, holder: str = "another process") -> StoreLockedError:
    return StoreLockedError(f"the store at {shard_dir} is in use by {holder}; try again when it has finished")


def _is_wal_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return "WouldBlock" in text or "failed to open WAL" in text


def _retry_until(attempt: Callable[[], Any], deadline: float) -> Any:
    """Call ``attempt`` until it returns something other than None or the deadline passes."""
    while True:
        result = attempt()
        if result is not None or time.monotonic() >= deadline:
            return result
        time.sleep(min(LOCK_RETRY_S, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------------------------------
# Edge: opening


def _store_dir(home: Path) -> Path:
    return Path(home) / "store"


def _edge_dim(shard_dir: Path) -> int:
    try:
        config = json.loads((shard_dir / "edge_config.json").read_text(encoding="utf-8"))
        return int(config["vectors"][VECTOR_NAME]["size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{shard_dir} is not a mediasearch store ({_first_line(exc)})") from exc


def _edge_config(dim: int) -> Any:
    import qdrant_edge as qe

    # Half precision: an exact scan reads half the bytes (100k x 512: 6 ms instead of 11 here) and the
    # store is half the size; scores move by ~1e-5, far below the gaps that order results.
    params = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, datatype=qe.VectorStorageDatatype.Float16)
    return qe.EdgeConfig(vectors={VECTOR_NAME: params})


def _check_dim(location: str, stored: int, wanted: int | None) -> None:
    if wanted is not None and wanted != stored:
        raise ModelMismatchError(
            f"the index at {location} holds {stored}-d vectors but the model makes {wanted}-d vectors; "
            "index with the model that built it, or build a new index"
        )


def _load_shard(shard_dir: Path, deadline: float) -> Any:
    """Load an existing shard, waiting while another process holds its write-ahead log."""
    import qdrant_edge as qe

    def attempt() -> Any:
        try:
            return qe.EdgeShard.load(str(shard_dir))
        except Exception as exc:
            if _is_wal_lock_error(exc):
                return None
            raise StoreError(f"cannot open the store at {shard_dir}: {_first_line(exc)}") from exc

    shard = _retry_until(attempt, deadline)
    if shard is None:
        raise _locked_error(shard_dir)
    return shard


def _clear_temp_segments(shard_dir: Path) -> None:
    """Remove what an optimise killed half-way left behind (only while we own the shard)."""
    temp = shard_dir / "temp_segments"
    if not temp.is_dir():
        return
    for child in temp.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _ensure_edge_indexes(shard: Any) -> None:
    import qdrant_edge as qe

    existing = set(shard.info().payload_schema)
    wanted = [(f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_FIELDS]
    wanted += [(f, qe.PayloadSchemaType.Float) for f in FLOAT_FIELDS]
    for field, schema in wanted:
        if field not in existing:
            shard.update(qe.UpdateOperation.create_field_index(field, schema))


def _open_shard(shard_dir: Path, dim: int | None, create: bool, deadline: float) -> tuple[Any, int]:
    import qdrant_edge as qe

    if (shard_dir / "edge_config.json").is_file():
        stored = _edge_dim(shard_dir)
        _check_dim(f"edge:{shard_dir}", stored, dim)
        shard = _load_shard(shard_dir, deadline)
        _clear_temp_segments(shard_dir)
    elif not create:
        raise StoreError(f"there is no index at {shard_dir}; run `mediasearch index` first")
    elif dim is None:
        raise StoreError(f"cannot create the store at {shard_dir} without knowing the vector size")
    else:
        stored = dim
        try:
            shard = qe.EdgeShard.create(str(shard_dir), _edge_config(dim))
        except Exception as exc:
            raise StoreError(f"cannot create the store at {shard_dir}: {_first_line(exc)}") from exc
    try:
        _ensure_edge_indexes(shard)
    except Exception as exc:
        shard.close()
        raise StoreError(f"cannot index payload fields in {shard_dir}: {_first_line(exc)}") from exc
    return shard, stored


def _open_edge(home: Path, collection: str, dim: int | None, create: bool, wait_s: float) -> EdgeStore:
    store_dir = _store_dir(home)
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store directory {store_dir}: {exc.strerror or exc}") from exc
    shard_dir = store_dir / collection
    if create:
        check_free_space(store_dir)
    deadline = time.monotonic() + max(0.0, wait_s)
    lock = _OwnerLock(store_dir / f"{collection}.owner")
    if not _retry_until(lambda: lock.try_acquire() or None, deadline):
        raise _locked_error(shard_dir, lock.holder())
    try:
        shard, stored = _open_shard(shard_dir, dim, create, deadline)
    except BaseException:
        lock.release()
        raise
    return EdgeStore(shard, shard_dir, collection, stored, lock)


# ---------------------------------------------------------------------------------------------
# Edge: the store


def _edge_filter(flt: Filter | None) -> Any:
    if flt is None or flt.is_empty():
        return None
    import qdrant_edge as qe

    must: list[Any] = [qe.FieldCondition(k, match=qe.MatchValue(v)) for k, v in flt.equalities()]
    if flt.after is not None or flt.before is not None:
        must.append(qe.FieldCondition("date", range=qe.RangeFloat(gte=flt.after, lt=flt.before)))
    must_not: list[Any] = [qe.HasIdCondition(set(flt.exclude_ids))] if flt.exclude_ids else []
    return qe.Filter(must=must or None, must_not=must_not or None)


def _edge_payload_selector(fields: Sequence[str] | None) -> Any:
    if fields is None:
        return True
    if not fields:
        return False
    import qdrant_edge as qe

    return qe.PayloadSelector.Include(list(fields))


class EdgeStore(_StoreBase):
    """A Qdrant Edge shard under ``home/store/<collection>/``, owned by this process."""

    def __init__(self, shard: Any, shard_dir: Path, collection: str, dim: int, lock: _OwnerLock) -> None:
        self._shard: Any = shard
        self._dir = shard_dir
        self._lock = lock
        self._last_flush = time.monotonic()
        self.location = f"edge:{shard_dir}"
        self.collection = collection
        self.dim = dim

    @contextlib.contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        """Turn the engine's bare exceptions into a StoreError naming the store."""
        if self._shard is None:
            raise StoreError(f"the store at {self._dir} is closed")
        try:
            yield
        except MediaSearchError:
            raise
        except Exception as exc:
            if type(exc) is not Exception:  # the engine raises bare Exception; others are bugs
                raise
            if isinstance(_write_error(self._dir, exc), StoreFullError):
                raise _write_error(self._dir, exc) from exc
            raise StoreError(f"store at {self._dir}: {what} failed: {_first_line(exc)}") from exc

    def _update(self, what: str, operation: Any) -> None:
        check_free_space(self._dir)
        with self._engine(what):
            self._shard.update(operation)
        if time.monotonic() - self._last_flush >= AUTO_FLUSH_S:
            self.flush()

    def _size_estimate(self) -> int:
        with self._engine("info"):
            return int(self._shard.info().points_count)

    def get_meta(self) -> dict[str, Any] | None:
        """The collection's metadata (the model that built it, ...), None if never set."""
        path = self._dir.with_name(f"{self.collection}.meta.json")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {path}: {_first_line(exc)}") from exc
        return meta if isinstance(meta, dict) else None

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace the collection's metadata (atomically)."""
        path = self._dir.with_name(f"{self.collection}.meta.json")
        _atomic_write(path, json.dumps(meta, indent=2, sort_keys=True))

    def upsert(self, points: Sequence[PointIn]) -> None:
        """Insert or replace points (by id)."""
        if not points:
            return
        import qdrant_edge as qe

        batch = [qe.Point(p.id, {VECTOR_NAME: _vector_list(p.vector, self.dim)}, p.payload) for p in points]
        self._update("upsert", qe.UpdateOperation.upsert_points(batch))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id (missing ids are ignored)."""
        if ids:
            import qdrant_edge as qe

            self._update("delete", qe.UpdateOperation.delete_points(list(ids)))

    def delete_where(self, flt: Filter) -> None:
        """Delete every point matching ``flt`` (an empty filter deletes nothing)."""
        edge_filter = _edge_filter(flt)
        if edge_filter is not None:
            import qdrant_edge as qe

            self._update("delete", qe.UpdateOperation.delete_points_by_filter(edge_filter))

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Merge ``payload`` keys into the payload of the given points."""
        if ids:
            import qdrant_edge as qe

            self._update("set_payload", qe.UpdateOperation.set_payload(list(ids), payload))

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Record]:
        """The points with these ids that exist (order not guaranteed)."""
        if not ids:
            return []
        with self._engine("retrieve"):
            found = self._shard.retrieve(list(ids), True, with_vectors)
        return [Record(str(r.id), dict(r.payload or {}), _vector_array(r.vector)) for r in found]

    def scroll(
        self,
        flt: Filter | None = None,
        *,
        fields: Sequence[str] | None = None,
        with_vectors: bool = False,
        batch: int = 1024,
    ) -> Iterator[Record]:
        """Every matching point, in id order; ``fields`` limits the payload keys returned."""
        import qdrant_edge as qe

        offset: Any = None
        selector, edge_filter = _edge_payload_selector(fields), _edge_filter(flt)
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=batch,
                filter=edge_filter,
                with_payload=selector,
                with_vector=with_vectors,
            )
            with self._engine("scroll"):
                found, offset = self._shard.scroll(request)
            for r in found:
                yield Record(str(r.id), dict(r.payload or {}), _vector_array(r.vector))
            if offset is None:
                return

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        flt: Filter | None = None,
        *,
        with_vectors: bool = False,
        exact: bool | None = None,
    ) -> list[Record]:
        """Nearest points by cosine similarity, best first.

        ``exact=None`` scans every vector up to ``EXACT_SEARCH_MAX_POINTS`` points and uses the
        HNSW index (where ``optimize`` built one) above that.
        """
        if limit <= 0:
            return []
        import qdrant_edge as qe

        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(_vector_list(vector, self.dim), using=VECTOR_NAME),
            filter=_edge_filter(flt),
            with_payload=True,
            with_vector=with_vectors,
            params=qe.SearchParams(exact=self._use_exact(exact)),
        )
        with self._engine("search"):
            hits = self._shard.query(request)
        return [
            Record(str(h.id), dict(h.payload or {}), _vector_array(h.vector), float(h.score)) for h in hits
        ]

    def count(self, flt: Filter | None = None) -> int:
        """How many points match ``flt`` (all points when None)."""
        import qdrant_edge as qe

        with self._engine("count"):
            return int(self._shard.count(qe.CountRequest(exact=True, filter=_edge_filter(flt))))

    def facet(self, key: str, flt: Filter | None = None, limit: int = 1000) -> dict[str, int]:
        """Point counts per value of an indexed keyword field (kind, dirs, path, root, tags)."""
        import qdrant_edge as qe

        request = qe.FacetRequest(key, limit=limit, exact=True, filter=_edge_filter(flt))
        with self._engine("facet"):
            hits = self._shard.facet(request)
        return {str(hit.value): int(hit.count) for hit in hits}

    def flush(self) -> None:
        """Make every write so far durable on disk (survives a power cut)."""
        with self._engine("flush"):
            self._shard.flush()
        self._last_flush = time.monotonic()

    def optimize(self) -> bool:
        """Merge segments and build the HNSW index (blocking, minutes at 100k+ points)."""
        with self._engine("optimize"):
            return bool(self._shard.optimize())

    def close(self) -> None:
        """Flush, close the shard and release the store to other processes (idempotent)."""
        if self._shard is None:
            return
        try:
            self.flush()
        finally:
            shard, self._shard = self._shard, None
            try:
                shard.close()
            finally:
                self._lock.release()


# ---------------------------------------------------------------------------------------------
# Server


@contextlib.contextmanager
def _server_errors(url: str, what: str) -> Iterator[None]:
    """Turn qdrant-client failures into a StoreError with one plain line."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    try:
        yield
    except ResponseHandlingException as exc:
        reason = _first_line(exc.source) if exc.source is not None else _first_line(exc)
        raise StoreError(f"cannot reach Qdrant at {url}: {reason}") from exc
    except UnexpectedResponse as exc:
        content = exc.content.decode("utf-8", "replace")[:200] if exc.content else ""
        raise StoreError(f"Qdrant at {url}: {what} failed: HTTP {exc.status_code} {content}".strip()) from exc
    except ValueError as exc:  # the in-process (":memory:") server reports errors this way
        raise StoreError(f"Qdrant at {url}: {what} failed: {_first_line(exc)}") from exc


def _server_client(url: str, api_key: str | None) -> Any:
    """A client for ``url``; ":memory:" gives this process's shared in-memory server."""
    from qdrant_client import QdrantClient

    if url == ":memory:":
        if url not in _MEMORY_SERVERS:
            _MEMORY_SERVERS[url] = QdrantClient(location=":memory:")
        return _MEMORY_SERVERS[url]
    # Our own probe below reports an unreachable server in one line (the version check would warn).
    client = QdrantClient(url=url, api_key=api_key, timeout=30, check_compatibility=False)
    with _server_errors(url, "connect"):
        client.get_collections()
    return client


def _release_client(url: str, client: Any) -> None:
    if url != ":memory:":
        client.close()


def _forget_memory_servers() -> None:
    """Drop the in-memory servers (tests use this to start from nothing)."""
    _MEMORY_SERVERS.clear()


def _server_dim(url: str, collection: str, info: Any) -> int:
    vectors = info.config.params.vectors
    if not isinstance(vectors, dict) or VECTOR_NAME not in vectors:
        raise StoreError(f"collection {collection} at Qdrant {url} is not a mediasearch collection")
    return int(vectors[VECTOR_NAME].size)


def _create_collection(client: Any, collection: str, dim: int) -> None:
    from qdrant_client import models as m

    params = {VECTOR_NAME: m.VectorParams(size=dim, distance=m.Distance.COSINE)}
    try:
        client.create_collection(collection, vectors_config=params)
    except Exception:
        if not client.collection_exists(collection):  # lost a race with another worker: fine
            raise


def _ensure_server_indexes(client: Any, collection: str, schema: dict[str, Any]) -> None:
    from qdrant_client import models as m

    wanted = [(f, m.PayloadSchemaType.KEYWORD) for f in KEYWORD_FIELDS]
    wanted += [(f, m.PayloadSchemaType.FLOAT) for f in FLOAT_FIELDS]
    with warnings.catch_warnings():  # in-memory mode warns that indexes do nothing there
        warnings.filterwarnings("ignore", message="Payload indexes have no effect")
        for field, kind in wanted:
            if field not in schema:
                client.create_payload_index(collection, field, field_schema=kind)


def _open_server(
    url: str, api_key: str | None, collection: str, dim: int | None, create: bool
) -> QdrantStore:
    client = _server_client(url, api_key)
    try:
        with _server_errors(url, f"opening {collection}"):
            if not client.collection_exists(collection):
                if not create:
                    raise StoreError(f"there is no collection {collection} at Qdrant {url}")
                if dim is None:
                    raise StoreError(f"cannot create {collection} at Qdrant {url} without a vector size")
                _create_collection(client, collection, dim)
            info = client.get_collection(collection)
            stored = _server_dim(url, collection, info)
            _check_dim(f"qdrant:{url}/{collection}", stored, dim)
            _ensure_server_indexes(client, collection, info.payload_schema or {})
    except BaseException:
        _release_client(url, client)
        raise
    return QdrantStore(client, url, collection, stored)


def _server_filter(flt: Filter | None) -> Any:
    if flt is None or flt.is_empty():
        return None
    from qdrant_client import models as m

    must: list[Any] = [m.FieldCondition(key=k, match=m.MatchValue(value=v)) for k, v in flt.equalities()]
    if flt.after is not None or flt.before is not None:
        must.append(m.FieldCondition(key="date", range=m.Range(gte=flt.after, lt=flt.before)))
    must_not: list[Any] = [m.HasIdCondition(has_id=list(flt.exclude_ids))] if flt.exclude_ids else []
    return m.Filter(must=must or None, must_not=must_not or None)


def _server_payload_selector(fields: Sequence[str] | None) -> Any:
    if fields is None:
        return True
    if not fields:
        return False
    from qdrant_client import models as m

    return m.PayloadSelectorInclude(include=list(fields))


class QdrantStore(_StoreBase):
    """A collection on a Qdrant server or cluster (or the in-process ":memory:" server)."""

    def __init__(self, client: Any, url: str, collection: str, dim: int) -> None:
        self._client: Any = client
        self._url = url
        self._local = url == ":memory:"
        self._count_cache: tuple[float, int] = (-1e9, 0)
        self.location = f"qdrant:{url}/{collection}"
        self.collection = collection
        self.dim = dim

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        if self._client is None:
            raise StoreError(f"the store at {self.location} is closed")
        return _server_errors(self._url, what)

    def _size_estimate(self) -> int:
        stamp, size = self._count_cache
        if time.monotonic() - stamp > 30.0:  # one round trip per 30 s, not per query
            with self._errors("count"):
                size = int(self._client.count(self.collection, exact=False).count)
            self._count_cache = (time.monotonic(), size)
        return size

    def get_meta(self) -> dict[str, Any] | None:
        """The collection's metadata (the model that built it, ...), None if never set."""
        with self._errors("reading metadata"):
            metadata = self._client.get_collection(self.collection).config.metadata or {}
        meta = metadata.get(META_KEY)
        return meta if isinstance(meta, dict) else None

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace the collection's metadata (kept under one key of the collection metadata)."""
        with self._errors("writing metadata"):
            self._client.update_collection(self.collection, metadata={META_KEY: meta})

    def upsert(self, points: Sequence[PointIn]) -> None:
        """Insert or replace points (by id); returns once the server has applied them."""
        if not points:
            return
        from qdrant_client import models as m

        structs = [
            m.PointStruct(id=p.id, vector={VECTOR_NAME: _vector_list(p.vector, self.dim)}, payload=p.payload)
            for p in points
        ]
        with self._errors("upsert"):
            self._client.upsert(self.collection, points=structs, wait=True)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id (missing ids are ignored)."""
        if ids:
            from qdrant_client import models as m

            with self._errors("delete"):
                self._client.delete(self.collection, m.PointIdsList(points=list(ids)), wait=True)

    def delete_where(self, flt: Filter) -> None:
        """Delete every point matching ``flt`` (an empty filter deletes nothing)."""
        server_filter = _server_filter(flt)
        if server_filter is not None:
            from qdrant_client import models as m

            with self._errors("delete"):
                self._client.delete(self.collection, m.FilterSelector(filter=server_filter), wait=True)

    def set_payload(self, ids: Sequence[str], payload: dict[str, Any]) -> None:
        """Merge ``payload`` keys into the payload of the given points."""
        if ids:
            with self._errors("set_payload"):
                self._client.set_payload(self.collection, payload, points=list(ids), wait=True)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Record]:
        """The points with these ids that exist (order not guaranteed)."""
        if not ids:
            return []
        with self._errors("retrieve"):
            found = self._client.retrieve(
                self.collection, list(ids), with_payload=True, with_vectors=with_vectors
            )
        return [Record(str(r.id), dict(r.payload or {}), _vector_array(r.vector)) for r in found]

    def scroll(
        self,
        flt: Filter | None = None,
        *,
        fields: Sequence[str] | None = None,
        with_vectors: bool = False,
        batch: int = 1024,
    ) -> Iterator[Record]:
        """Every matching point, in id order; ``fields`` limits the payload keys returned."""
        offset: Any = None
        selector, server_filter = _server_payload_selector(fields), _server_filter(flt)
        while True:
            with self._errors("scroll"):
                found, offset = self._client.scroll(
                    self.collection,
                    scroll_filter=server_filter,
                    limit=batch,
                    offset=offset,
                    with_payload=selector,
                    with_vectors=with_vectors,
                )
            for r in found:
                yield Record(str(r.id), dict(r.payload or {}), _vector_array(r.vector))
            if offset is None:
                return

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        flt: Filter | None = None,
        *,
        with_vectors: bool = False,
        exact: bool | None = None,
    ) -> list[Record]:
        """Nearest points by cosine similarity, best first (exact up to a size; see EdgeStore)."""
        if limit <= 0:
            return []
        from qdrant_client import models as m

        # The in-memory server is always exact and warns about search params.
        params = None if self._local else m.SearchParams(exact=self._use_exact(exact))
        with self._errors("search"):
            response = self._client.query_points(
                self.collection,
                query=_vector_list(vector, self.dim),
                using=VECTOR_NAME,
                limit=limit,
                query_filter=_server_filter(flt),
                with_payload=True,
                with_vectors=with_vectors,
                search_params=params,
            )
        return [
            Record(str(h.id), dict(h.payload or {}), _vector_array(h.vector), float(h.score))
            for h in response.points
        ]

    def count(self, flt: Filter | None = None) -> int:
        """How many points match ``flt`` (all points when None)."""
        with self._errors("count"):
            return int(
                self._client.count(self.collection, count_filter=_server_filter(flt), exact=True).count
            )

    def facet(self, key: str, flt: Filter | None = None, limit: int = 1000) -> dict[str, int]:
        """Point counts per value of an indexed keyword field (kind, dirs, path, root, tags)."""
        with self._errors("facet"):
            response = self._client.facet(
                self.collection, key, facet_filter=_server_filter(flt), limit=limit, exact=True
            )
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def flush(self) -> None:
        """Nothing to do: the server has applied (and logged) every write when it returned."""

    def optimize(self) -> bool:
        """Nothing to do: a server builds its HNSW index in the background."""
        return False

    def close(self) -> None:
        """Close the connection (the shared in-memory server stays alive)."""
        if self._client is not None:
            _release_client(self._url, self._client)
            self._client = None


# ---------------------------------------------------------------------------------------------
# Opening, listing and switching collections


def open_store(
    *,
    home: Path,
    collection: str,
    dim: int | None,
    qdrant_url: str | None = None,
    api_key: str | None = None,
    create: bool = True,
    wait_s: float = 5.0,
) -> Store:
    """Open (or create) a collection: an Edge shard under ``home``, or one on a Qdrant server.

    ``dim=None`` opens an existing collection at whatever size it has. A different ``dim`` from
    the stored one raises ModelMismatchError. An Edge store held by another process is waited
    for up to ``wait_s`` seconds, then StoreLockedError.
    """
    if not _VALID_NAME.fullmatch(collection):
        raise StoreError(f"invalid collection name {collection!r}: use letters, digits, '_', '-' and '.'")
    if qdrant_url:
        return _open_server(qdrant_url, api_key, collection, dim, create)
    return _open_edge(Path(home), collection, dim, create, wait_s)


def active_collection(*, home: Path, qdrant_url: str | None = None, api_key: str | None = None) -> str | None:
    """The collection that queries use (set when an index build completes), or None."""
    if qdrant_url:
        client = _server_client(qdrant_url, api_key)
        try:
            with _server_errors(qdrant_url, "reading aliases"):
                aliases = client.get_aliases().aliases
        finally:
            _release_client(qdrant_url, client)
        return next((a.collection_name for a in aliases if a.alias_name == ACTIVE_ALIAS), None)
    path = _store_dir(Path(home)) / "ACTIVE"
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def set_active_collection(
    *, home: Path, collection: str, qdrant_url: str | None = None, api_key: str | None = None
) -> None:
    """Point queries at ``collection`` (atomically: a query sees the old one or the new one)."""
    if not qdrant_url:
        store_dir = _store_dir(Path(home))
        if not (store_dir / collection / "edge_config.json").is_file():
            raise StoreError(f"cannot make {collection} active: there is no such store in {store_dir}")
        _atomic_write(store_dir / "ACTIVE", collection + "\n")
        return
    from qdrant_client import models as m

    client = _server_client(qdrant_url, api_key)
    try:
        with _server_errors(qdrant_url, "switching the active collection"):
            if not client.collection_exists(collection):
                raise StoreError(
                    f"cannot make {collection} active: Qdrant {qdrant_url} has no such collection"
                )
            current = [a for a in client.get_aliases().aliases if a.alias_name == ACTIVE_ALIAS]
            drop = m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=ACTIVE_ALIAS))
            create = m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=collection, alias_name=ACTIVE_ALIAS)
            )
            # One request, so the alias never points nowhere.
            client.update_collection_aliases(
                change_aliases_operations=[drop, create] if current else [create]
            )
    finally:
        _release_client(qdrant_url, client)


def list_collections(*, home: Path, qdrant_url: str | None = None, api_key: str | None = None) -> list[str]:
    """Names of mediasearch collections: Edge shards under ``home``, or server collections
    whose name starts with ``COLLECTION_PREFIX``."""
    if qdrant_url:
        client = _server_client(qdrant_url, api_key)
        try:
            with _server_errors(qdrant_url, "listing collections"):
                names = [c.name for c in client.get_collections().collections]
        finally:
            _release_client(qdrant_url, client)
        return sorted(n for n in names if n.startswith(COLLECTION_PREFIX))
    store_dir = _store_dir(Path(home))
    if not store_dir.is_dir():
        return []
    return sorted(p.name for p in store_dir.iterdir() if (p / "edge_config.json").is_file())
