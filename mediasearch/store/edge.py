"""The embedded store: one Qdrant Edge shard per collection under the home, owned by one process at a time.

The shard's write-ahead log takes a lock: a second opener waits briefly, then gets a one-line
``StoreLockedError`` naming the holder. A kill during an optimise leaves ``temp_segments/``: cleared on open.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from mediasearch.errors import MediaSearchError, StoreError, StoreFullError, StoreLockedError
from mediasearch.fsutil import filesystem_type, make_private, pid_alive
from mediasearch.store.base import (
    AUTO_FLUSH_S,
    HNSW_EF_CONSTRUCT,
    HNSW_M,
    LOCK_RETRY_S,
    OVERSAMPLING,
    QUANTILE,
    VECTOR_NAME,
    Filter,
    PointIn,
    Record,
    StoreBase,
    check_dim,
    check_free_space,
    first_line,
    graph_threshold_kb,
    indexed_fields,
    paged,
    payload_selector,
    to_record,
    unwanted_indexes,
    vector_list,
    write_error,
    write_small_file,
)
from mediasearch.store.filters import translate


def _program() -> str:
    """This process's program and, for mediasearch, its command word (``mediasearch serve``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    word = next((a for a in sys.argv[1:] if a.isalpha()), "") if name == "mediasearch" else ""
    return f"{name} {word}".strip()[:60]


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
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):  # the home, not the index, is the problem
                raise StoreError(read_only_home(self.path.parent, exc)) from exc
            raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        # The program, never its command line: that may hold a token or a password, and this file is read
        # to name the holder in messages other processes print.
        owner = {"pid": os.getpid(), "program": _program(), "since": time.time()}
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
        if not pid_alive(pid):
            return unknown  # a forked child of the dead owner may still hold the lock
        program = str(owner.get("program", "")).strip()
        return f"{unknown} (pid {pid}: {program})" if program else f"{unknown} (pid {pid})"

    def release(self) -> None:
        """Clear the owner record and drop the lock."""
        if self._fh is None:
            return
        with contextlib.suppress(OSError):
            self._fh.seek(0)
            self._fh.truncate()
        self._fh.close()  # closing the file drops the flock
        self._fh = None


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


def edge_store_dir(home: Path) -> Path:
    """Where the Edge shards of a home live."""
    return Path(home) / "store"


def _edge_dim(shard_dir: Path) -> int:
    try:
        config = json.loads((shard_dir / "edge_config.json").read_text(encoding="utf-8"))
        return int(config["vectors"][VECTOR_NAME]["size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{shard_dir} is not a mediasearch store ({first_line(exc)})") from exc


def _edge_config(dim: int) -> Any:
    """The shard's layout: also given to every load, which brings an older shard's graph settings up to
    date (the next optimise rebuilds its graph with them)."""
    import qdrant_edge as qe

    # Half precision: an exact scan reads half the bytes (100k x 512: 6 ms instead of 11 here) and the
    # store is half the size; scores move by ~1e-5, far below the gaps that order results.
    # Cold vectors: mapped, read when a search touches them. The engine's default ("Cached") reads every
    # vector at each load, so a command that searches the graph pays for all of them, and on tmpfs the
    # load fills the sparse 32 MiB chunk (see "room to open" below). Segments keep the tier they were
    # made with: an older shard's take it when an optimise rewrites them.
    params = qe.EdgeVectorParams(
        size=dim, distance=qe.Distance.Cosine, datatype=qe.VectorStorageDatatype.Float16, memory=qe.Memory.Cold
    )
    threshold = graph_threshold_kb(dim)
    # The graph is memory-mapped (Cold): the page cache holds what searches touch, the process does not.
    graph = qe.HnswIndexConfig(
        m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=threshold, memory=qe.Memory.Cold
    )
    optimizers = qe.EdgeOptimizersConfig(indexing_threshold=threshold)
    # The int8 copy the graph search walks (``store.base.QUANTIZATION``), made by the optimiser with the
    # graph: a shard made before it gets it at its next optimise (the daemon's graph build), and is
    # searched on its stored vectors until then. Mapped like the vectors.
    quantized = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=QUANTILE, memory=qe.Memory.Cold)
    return qe.EdgeConfig(
        vectors={VECTOR_NAME: params}, hnsw_config=graph, optimizers=optimizers, quantization_config=quantized
    )


def _load_shard(shard_dir: Path, deadline: float) -> Any:
    """Load an existing shard, waiting while another process holds its write-ahead log."""
    import qdrant_edge as qe

    config = _edge_config(_edge_dim(shard_dir))

    def attempt() -> Any:
        try:
            return qe.EdgeShard.load(str(shard_dir), config)
        except Exception as exc:
            if _is_wal_lock_error(exc):
                return None
            raise StoreError(f"cannot open the store at {shard_dir}: {first_line(exc)}") from exc

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


def _ensure_edge_indexes(shard: Any, indexed: Sequence[str] | None) -> int:
    """Create the payload indexes the shard lacks and drop those of the media's fields that ``indexed``
    leaves out, by its own schema (an open that finds them as wanted writes nothing); how many changed."""
    import qdrant_edge as qe

    existing = set(shard.info().payload_schema)
    types = {"keyword": qe.PayloadSchemaType.Keyword, "float": qe.PayloadSchemaType.Float}
    types |= {"geo": qe.PayloadSchemaType.Geo, "text": qe.PayloadSchemaType.Text}
    wanted = [(f, types[kind]) for kind, fields in indexed_fields(indexed).items() for f in fields]
    missing = [(field, schema) for field, schema in wanted if field not in existing]
    unwanted = unwanted_indexes(existing, indexed)
    for field, schema in missing:
        shard.update(qe.UpdateOperation.create_field_index(field, schema))
    for field in unwanted:
        shard.update(qe.UpdateOperation.delete_field_index(field))
    if missing or unwanted:  # EdgeStore.close flushes only what went through it
        shard.flush()
    return len(missing) + len(unwanted)


# ---------------------------------------------------------------------------------------------
# Edge: room to open
#
# On tmpfs the page cache is the storage, so reading a hole of a memory-mapped file allocates it, and
# where nothing is left the read is a SIGBUS. The engine reads ("populates") mapped files when it loads
# a shard: every payload index of an appendable segment, and the vectors of its "Cached" tier. It
# creates those files sparse (4-32 MiB index pages, a 32 MiB vector chunk) and a writing process
# touches only what it writes, so the first load after new files appeared fills them: ~150 MiB for a
# new shard with our indexes; later loads find them filled and take nothing
# (`python scripts/bench_open.py`). On a disk file system the same reads take page cache, never disk.
HOLES_FILL_ON_READ = frozenset({"tmpfs"})
OPEN_MARGIN_BYTES = 1 << 20  # the small files a load writes (its config, the id tracker's versions)


def holes_fill_on_read(folder: Path) -> bool:
    """Whether reading a mapped file's hole allocates it on the file system holding ``folder``."""
    return filesystem_type(folder) in HOLES_FILL_ON_READ


def _cold_parts(segment: Path) -> set[str]:
    """The folders of a segment that a load maps without reading them (from its ``segment.json``)."""
    try:
        config = json.loads((segment / "segment.json").read_text(encoding="utf-8"))["config"]
        vectors = dict(config.get("vector_data") or {})
        payload = config.get("payload_storage_type") or {}
        cold = {f"vector_storage-{name}" for name, v in vectors.items() if "InRam" not in str(v["storage_type"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()  # cannot tell: every file counts
    if isinstance(payload, dict) and payload.get("type") == "mmap":
        cold.add("payload_storage")
    return cold


def open_need(shard_dir: Path) -> int:
    """Bytes a load of the shard may allocate where holes fill on read: the holes (size beyond the
    allocated blocks) of the segment files that a load reads."""
    need = 0
    segments = shard_dir / "segments"
    for segment in sorted(segments.iterdir()) if segments.is_dir() else []:
        cold = _cold_parts(segment)
        for folder, dirs, files in os.walk(segment):
            if folder == str(segment):
                dirs[:] = [d for d in dirs if d not in cold]
            for name in files:
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(folder, name))
                    need += max(0, st.st_size - st.st_blocks * 512)
    return need


def _check_room_to_open(shard_dir: Path, to: str = "open the store") -> None:
    if holes_fill_on_read(shard_dir):
        check_free_space(shard_dir, open_need(shard_dir) + OPEN_MARGIN_BYTES, to=to)


def _settle(shard: Any, shard_dir: Path, deadline: float, created: bool) -> Any:
    """Where holes fill on read, load a shard that just got new files once more, now: the load's
    one-time growth is checked here, not met by a later open (a query) on a fuller disk."""
    if not holes_fill_on_read(shard_dir):
        return shard
    shard.flush()
    shard.close()
    try:
        _check_room_to_open(shard_dir, "create the store" if created else "open the store")
    except StoreFullError:
        if created:  # nothing is in it yet: leave no half-made store behind
            shutil.rmtree(shard_dir, ignore_errors=True)
        raise
    return _load_shard(shard_dir, deadline)


def _open_shard(
    shard_dir: Path, dim: int | None, create: bool, deadline: float, indexed: Sequence[str] | None
) -> tuple[Any, int]:
    import qdrant_edge as qe

    created = False
    if (shard_dir / "edge_config.json").is_file():
        stored = _edge_dim(shard_dir)
        check_dim(f"edge:{shard_dir}", stored, dim)
        _check_room_to_open(shard_dir)
        shard = _load_shard(shard_dir, deadline)
        _clear_temp_segments(shard_dir)
    elif not create:
        raise StoreError(f"there is no index at {shard_dir}; run `mediasearch index` first")
    elif dim is None:
        raise StoreError(f"cannot create the store at {shard_dir} without knowing the vector size")
    else:
        stored, created = dim, True
        try:
            shard = qe.EdgeShard.create(str(shard_dir), _edge_config(dim))
        except Exception as exc:
            raise StoreError(f"cannot create the store at {shard_dir}: {first_line(exc)}") from exc
    try:
        added = _ensure_edge_indexes(shard, indexed)
    except Exception as exc:
        shard.close()
        raise StoreError(f"cannot index payload fields in {shard_dir}: {first_line(exc)}") from exc
    if created or added:
        shard = _settle(shard, shard_dir, deadline, created)
    return shard, stored


def read_only_home(folder: Path, exc: OSError) -> str:
    """The one line for an index folder this process may not write (every command takes the store's lock,
    so status and query too)."""
    why = "is on a read-only file system" if exc.errno == errno.EROFS else "is not writable by this user"
    return (
        f"the index folder {folder} {why}: mediasearch writes a lock there even to read the index; "
        "make it writable, or give --home (MEDIASEARCH_HOME) a writable folder"
    )


def open_edge(
    home: Path, collection: str, dim: int | None, create: bool, wait_s: float, indexed: Sequence[str] | None = None
) -> EdgeStore:
    folder = edge_store_dir(home)
    try:
        make_private(home)  # the store holds what the library shows: its owner's alone
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store directory {folder}: {exc.strerror or exc}") from exc
    shard_dir = folder / collection
    # A new shard needs room for its first segment. An existing one is opened whatever the free space:
    # what is indexed stays readable on a full disk, and an unchanged re-index, which writes nothing,
    # is not refused for want of the space its writes would need (each write checks for itself).
    if create and not shard_dir.exists():
        check_free_space(folder)
    deadline = time.monotonic() + max(0.0, wait_s)
    lock = _OwnerLock(folder / f"{collection}.owner")
    if not _retry_until(lambda: lock.try_acquire() or None, deadline):
        raise _locked_error(shard_dir, lock.holder())
    try:
        shard, stored = _open_shard(shard_dir, dim, create, deadline, indexed)
    except BaseException:
        lock.release()
        raise
    return EdgeStore(shard, shard_dir, collection, stored, lock)


# ---------------------------------------------------------------------------------------------
# Edge: the store


class EdgeConditions:
    """``filters.Conditions`` in Qdrant Edge's types."""

    def __init__(self) -> None:
        import qdrant_edge

        self.qe: Any = qdrant_edge

    def match(self, key: str, value: str) -> Any:
        return self.qe.FieldCondition(key, match=self.qe.MatchValue(value))

    def text(self, key: str, words: str) -> Any:
        return self.qe.FieldCondition(key, match=self.qe.MatchText(words))

    def range(self, key: str, gte: float | None, lt: float | None) -> Any:
        return self.qe.FieldCondition(key, range=self.qe.RangeFloat(gte=gte, lt=lt))

    def geo(self, key: str, lat: float, lon: float, metres: float) -> Any:
        return self.qe.FieldCondition(key, geo_radius=self.qe.GeoRadius(self.qe.GeoPoint(lon=lon, lat=lat), metres))

    def not_ids(self, ids: tuple[str, ...]) -> Any:
        return self.qe.HasIdCondition(set(ids))

    def combine(self, must: list[Any], must_not: list[Any]) -> Any:
        return self.qe.Filter(must=must or None, must_not=must_not or None)


def _search_params(exact: bool, ef: int) -> Any:
    """An exact scan reads the stored vectors alone; the graph walks the int8 copy and re-scores its
    best ``OVERSAMPLING`` x limit on the stored vectors (``store.base.QUANTIZATION``)."""
    import qdrant_edge as qe

    if exact:
        return qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
    quantized = qe.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
    return qe.SearchParams(exact=False, hnsw_ef=ef, quantization=quantized)


def _edge_filter(flt: Filter | None) -> Any:
    return None if flt is None or flt.is_empty() else translate(flt, EdgeConditions())


def _edge_payload_selector(fields: Sequence[str] | None) -> Any:
    import qdrant_edge as qe

    return payload_selector(fields, qe.PayloadSelector.Include)


class EdgeStore(StoreBase):
    """A Qdrant Edge shard under ``home/store/<collection>/``, owned by this process."""

    def __init__(self, shard: Any, shard_dir: Path, collection: str, dim: int, lock: _OwnerLock) -> None:
        self._shard: Any = shard
        self._dir = shard_dir
        self._lock = lock
        self._last_flush = time.monotonic()
        self._unflushed = False  # a write since the last flush (close skips a flush with nothing to do)
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
            if isinstance(write_error(self._dir, exc), StoreFullError):
                raise write_error(self._dir, exc) from exc
            raise StoreError(f"store at {self._dir}: {what} failed: {first_line(exc)}") from exc

    def _update(self, what: str, operation: Any) -> None:
        check_free_space(self._dir)
        with self._engine(what):
            self._unflushed = True
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
            raise StoreError(f"cannot read {path}: {first_line(exc)}") from exc
        return meta if isinstance(meta, dict) else None

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace the collection's metadata (atomically)."""
        path = self._dir.with_name(f"{self.collection}.meta.json")
        write_small_file(path, json.dumps(meta, indent=2, sort_keys=True))

    def upsert(self, points: Sequence[PointIn]) -> None:
        """Insert or replace points (by id)."""
        if not points:
            return
        import qdrant_edge as qe

        batch = [qe.Point(p.id, {VECTOR_NAME: vector_list(p.vector, self.dim)}, p.payload) for p in points]
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
        return [to_record(r) for r in found]

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

        selector, edge_filter = _edge_payload_selector(fields), _edge_filter(flt)

        def fetch(offset: Any) -> tuple[Any, Any]:
            request = qe.ScrollRequest(
                offset=offset, limit=batch, filter=edge_filter, with_payload=selector, with_vector=with_vectors
            )
            with self._engine("scroll"):
                return self._shard.scroll(request)

        return paged(fetch)

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
            query=qe.Query.Nearest(vector_list(vector, self.dim), using=VECTOR_NAME),
            filter=_edge_filter(flt),
            with_payload=True,
            with_vector=with_vectors,
            params=_search_params(self._use_exact(exact), self._search_ef(limit)),
        )
        with self._engine("search"):
            hits = self._shard.query(request)
        return [to_record(h) for h in hits]

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

    def flush_if_due(self) -> None:
        """Flush writes older than the auto-flush delay (a long-lived owner calls it when idle)."""
        if self._unflushed and time.monotonic() - self._last_flush >= AUTO_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Make every write so far durable on disk (survives a power cut)."""
        with self._engine("flush"):
            self._shard.flush()
        self._last_flush, self._unflushed = time.monotonic(), False

    def optimize(self) -> bool:
        """Merge segments and build the HNSW index (blocking, minutes at 100k+ points)."""
        with self._engine("optimize"):
            self._unflushed = True
            changed = bool(self._shard.optimize())
        if changed and holes_fill_on_read(self._dir):
            self._reload_after_optimize()
        return changed

    def _reload_after_optimize(self) -> None:
        """Load the shard again after an optimise made new segment files (see ``_settle``), so that the
        growth of their first load is met here, not by the next command that opens the store."""
        self.flush()
        shard, self._shard = self._shard, None
        try:
            self._shard = _settle(shard, self._dir, time.monotonic() + LOCK_RETRY_S * 50, created=False)
        except BaseException:
            self._lock.release()  # closed: it releases the store as close() would
            raise

    def graph_points(self) -> int:
        """How many points the search graph holds (0 before ``optimize`` builds one)."""
        with self._engine("info"):
            return int(self._shard.info().indexed_vectors_count)

    def close(self) -> None:
        """Flush, close the shard and release the store to other processes (idempotent)."""
        if self._shard is None:
            return
        try:
            if self._unflushed:  # ~0.1 s even with nothing to write: a no-op re-index pays it otherwise
                self.flush()
        finally:
            shard, self._shard = self._shard, None
            try:
                shard.close()
            finally:
                self._lock.release()


# ---------------------------------------------------------------------------------------------
# Server
