"""The daemon (`mediasearch serve` / `watch`): the one owner of a home's store, with the model kept warm.

Threads: the main thread runs the model's CPU work (`lane.py`) until SIGTERM/SIGINT; uvicorn serves
the HTTP API (`api.py`) in its own thread; one "index" worker runs every write one at a time (event
batches, rescans, index / forget / tag requests, the HNSW build); a scheduler turns settled
file-system events and the rescan schedule into jobs for it. Queries run in the HTTP threads on the
same open store, handing their encoding to the main thread while it is idle.

Stopping abandons the index run in flight before its next write, so every file in the store is
whole; a kill -9 loses at most the batch being encoded. Either way the next start rescans the roots
and catches up (point ids are deterministic: nothing is ever duplicated).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import logging.handlers
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mediasearch import lane
from mediasearch.errors import (
    ConfigError,
    MediaSearchError,
    ModelMismatchError,
    StoreError,
    StoreLockedError,
)
from mediasearch.library import home
from mediasearch.library.client import (
    DaemonError,
    DaemonInfo,
    connect_url,
    find_daemon,
    remove_port_file,
    write_port_file,
)
from mediasearch.library.home import Counts
from mediasearch.library.local import LocalLibrary
from mediasearch.library.requests import EXACT_SEARCH_MAX_POINTS, IndexOptions, IndexReport, StoredFile
from mediasearch.media.decode_pool import DecoderPool
from mediasearch.media.discover import display_path, path_from_payload
from mediasearch.media.thumbnails import ThumbnailCache
from mediasearch.serve.files import FileChangedError, ServedFile, open_checked, opened_checked
from mediasearch.serve.rwlock import LockTimeout, ReadWriteLock
from mediasearch.serve.watcher import Coalescer, Watcher, under
from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.library.requests import Query, Store

LOG_NAME = "mediasearch.serve.daemon"
LOG_FILE = Path("logs") / "daemon.log"
ROOTS_KEY = "daemon_roots"
TICK_S = 0.2
OPTIMIZE_GROWTH = 0.2  # rebuild HNSW once the store has changed by this fraction since the last build
THUMB_CACHE = 256  # thumbnails kept in memory (all are kept on disk, under the home's cache)
THUMB_WORKERS = 2  # processes that decode video thumbnails (under the indexing time limit)
QUERY_WAIT_S = 10.0  # a query waits this long for a collection switch or an HNSW build, then gets 503
REOPEN_TRIES = 3  # after an HNSW build, attempts to open the store again before the "error" state
REOPEN_WAIT_S = 20.0  # each attempt waits this long for the build's process to let go of the store
RECOVER_EVERY_S = 30.0  # in the "error" state, how often the store is tried again


class NotReadyError(MediaSearchError):
    """The daemon is starting, stopping or rebuilding its index: try again shortly."""


class NotIndexedError(MediaSearchError):
    """The path asked for is not in the index (thumbnails are served for indexed files only)."""


class Cancelled(Exception):
    """The daemon is stopping: the run in flight is abandoned before its next write."""


@dataclass(frozen=True)
class DaemonOptions:
    """How `serve` / `watch` run (the command line's options)."""

    roots: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    rescan_every: float = 86400.0  # seconds; 0: only at start
    debounce: float = 2.0
    poll: bool = False
    poll_interval: float = 10.0
    index: IndexOptions = field(default_factory=IndexOptions)
    echo: bool = False  # also log every file on stderr
    optimize_min_points: int | None = None  # None: the store's exact-search threshold


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_interval(text: str) -> float:
    """'90', '30s', '15m', '6h', '1d' → seconds; '0', 'off' or 'never' → 0 (only at start)."""
    if text.strip().lower() in ("off", "never"):
        return 0.0
    m = _INTERVAL.match(text.lower())
    if not m:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90, 30s, 15m, 6h, 1d, or off)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Anything but loopback is reachable by others: it needs a real token."""
    if is_loopback(host):
        return
    if not token:
        raise ConfigError(f"--host {host} is not loopback: it needs --token (or MEDIASEARCH_TOKEN)")
    if len(token) < 16:
        raise ConfigError("the token must be at least 16 characters long")


class _GuardedStore:
    """The index's store as an index run sees it: once stopping, the next write raises Cancelled
    (before writing, so every file already written stays whole)."""

    def __init__(self, store: Store, cancel: threading.Event, written: Callable[[Any], None] | None = None) -> None:
        self._store, self._cancel, self._written = store, cancel, written

    def upsert(self, points: Any) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        self._store.upsert(points)
        if self._written is not None:
            self._written(points)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _NewFiles:
    """Counts the files an index run adds as it writes them, so that status follows a long run (files
    it replaces or removes are settled when the run ends)."""

    def __init__(self, before: dict[str, StoredFile], grow: Callable[[Counts], None]) -> None:
        self._known, self._grow = set(before), grow
        self._videos: set[str] = set()

    def __call__(self, points: Any) -> None:
        files = images = videos = frames = 0
        for point in points:
            path = path_from_payload(point.payload)
            kind = point.payload.get("kind")
            if path in self._videos:
                frames += 1
            elif path not in self._known:
                self._known.add(path)
                files += 1
                images += kind == "image"
                if kind == "video":
                    self._videos.add(path)
                    videos, frames = videos + 1, frames + 1
        if files or frames:
            self._grow(Counts(files, images, videos, frames))


class _LogProgress:
    """The indexer's progress as a log line every ``every`` seconds (per-file lines come at the end)."""

    def __init__(self, log: logging.Logger, every: float = 30.0) -> None:
        self.log, self.every = log, every
        self.total = self.files = self.frames = 0
        self._next = 0.0

    def start(self, files: int) -> None:
        self.total, self._next = files, time.monotonic() + self.every
        if files:
            self.log.info("indexing %d files", files)

    def advance(self, files: int = 0, frames: int = 0) -> None:
        self.files += files
        self.frames += frames
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            self.log.info("indexed %d of %d files so far (%d frames)", self.files, self.total, self.frames)

    def finish(self) -> None:
        pass




def changes(before: dict[str, StoredFile], after: dict[str, StoredFile]) -> list[tuple[str, str]]:
    """(verb, path) per file that changed between two snapshots: indexed, updated, moved, removed."""
    gone = {p: sf for p, sf in before.items() if p not in after}
    by_print = {(sf.size, sf.fingerprint): p for p, sf in gone.items()}
    out: list[tuple[str, str]] = []
    for path, sf in sorted(after.items()):
        old = before.get(path)
        if old is None:
            source = by_print.pop((sf.size, sf.fingerprint), None)
            if source is not None:
                gone.pop(source, None)
                out.append(("moved", f"{display_path(source)} -> {display_path(path)}"))
            else:
                out.append(("indexed", display_path(path)))
        elif (old.size, old.mtime, sorted(old.ids)) != (sf.size, sf.mtime, sorted(sf.ids)):
            out.append(("updated", display_path(path)))
    out += [("removed", display_path(p)) for p in sorted(gone)]
    return out


def points_changed(before: dict[str, StoredFile], after: dict[str, StoredFile]) -> int:
    """Points written or deleted between two snapshots (what makes an HNSW graph stale): every point,
    old or new, of each file added, removed or changed; a file left as it was counts nothing."""
    total = 0
    for path in before.keys() | after.keys():
        old, new = before.get(path), after.get(path)
        if old is not None and new is not None and (old.size, old.mtime, sorted(old.ids)) == (
            new.size, new.mtime, sorted(new.ids)
        ):
            continue
        total += len({*(old.ids if old else ()), *(new.ids if new else ())})
    return total


def setup_logging(home: Path, echo: bool) -> logging.Logger:
    """One line per event in ``HOME/logs/daemon.log`` (rotated); warnings (or everything) on stderr."""
    path = home / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 << 20, backupCount=5, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    console.setLevel(logging.INFO if echo else logging.WARNING)
    log = logging.getLogger(LOG_NAME)
    log.setLevel(logging.INFO)
    log.propagate = False
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(file_handler)
    log.addHandler(console)
    server_log = logging.getLogger("uvicorn.error")
    server_log.setLevel(logging.WARNING)
    server_log.addHandler(file_handler)
    return log


class Service:
    """What the HTTP API calls: the open store, the warm model, the watched roots, the index worker."""

    def __init__(self, settings: Settings, options: DaemonOptions, log: logging.Logger) -> None:
        self.settings = settings
        self.options = options
        self.log = log
        self.state = "starting"
        self.message = "loading the model and opening the store"
        self.cancel = threading.Event()
        self.roots: list[str] = []
        self.info: DaemonInfo | None = None
        self.last_scan: dict[str, Any] | None = None
        self.last_change: float | None = None  # when an index run last changed the store (the page shows it)
        self.started = time.time()
        self.stop_reason = ""
        self.coalescer = Coalescer([], options.debounce, ignore=[str(p) for p in home.own_folders(settings)])
        self.watcher = Watcher(self.coalescer, log, poll=options.poll, poll_interval=options.poll_interval)
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index")
        self._jobs = 0
        self._jobs_lock = threading.Lock()
        self.lib: LocalLibrary | None = None  # the use cases, over the store and model held open
        # Reads share it; a switch of collection or an HNSW build (which closes the store) holds it alone.
        self._rw = ReadWriteLock()
        self._scheduler: threading.Thread | None = None
        self.counts = Counts()  # of the collection queries use: counted at start, then kept current
        self._changes = 0  # points written or deleted since the HNSW graph was last built
        self._checked_changes = -1
        self._next_recover = 0.0
        self._thumbs = ThumbnailCache(settings.cache_dir / "thumbnails", THUMB_CACHE)
        self._videos = DecoderPool(THUMB_WORKERS, options.index.decode_timeout)

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the model, open the store (waiting while another process holds it), start watching."""
        opened = self._open_retrying()
        if opened is None:
            return
        query = opened
        if opened.activate_when_done:  # a new model: queries stay on the old index until this one is full
            query = home.open_for_query(replace(self.settings, model=None, pretrained=None))
        self.lib = LocalLibrary(self.settings, index_side=opened, query_side=query)
        self.counts = self.lib.query_counts()  # the one full count; runs and forgets keep it current
        self._changes = self._changes_since_build(self.lib)
        self._set_roots(self._remembered_roots() + [os.path.abspath(r) for r in self.options.roots])
        self.state, self.message = "ready", ""
        self._scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        self._scheduler.start()
        model = opened.model.spec.describe()
        self.log.info("ready: home %s, model %s, roots %s", self.settings.home, model, self.roots or "none")

    def _open_retrying(self) -> home.Opened | None:
        warned = False
        while not self.cancel.is_set():
            try:
                self.settings = self._settings_for_home()
                return home.open_for_index(self.settings)
            except StoreLockedError as exc:
                if not warned:
                    self.log.warning("%s: waiting for it", exc)
                    warned = True
                self.message = str(exc)
                self.cancel.wait(2.0)
        return None

    def _settings_for_home(self) -> Settings:
        """Without --model, keep indexing with the model that built the home's index."""
        return home.index_settings(self.settings)

    def stop(self) -> None:
        """Abandon the run in flight safely, stop watching, flush and close the store."""
        self.state, self.message = "stopping", "the daemon is stopping"
        self.cancel.set()
        self.watcher.stop()
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
        self._runner.shutdown(wait=True, cancel_futures=True)
        self._videos.close()
        with self._rw.write():
            if self.lib is not None:
                self.lib.close()
            self.lib = None

    # -- roots ------------------------------------------------------------------------------------

    def _remembered_roots(self) -> list[str]:
        roots = home.load_state(self.settings).get(ROOTS_KEY) or []
        return [str(r) for r in roots if isinstance(r, str)]

    def _set_roots(self, roots: Sequence[str]) -> None:
        self.roots = sorted(set(roots))
        home.save_state(self.settings, {ROOTS_KEY: self.roots})
        self.coalescer.set_roots(self.roots)
        for root in self.roots:
            self.watcher.watch(root)

    # -- the worker -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._jobs > 0

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._jobs_lock:
            self._jobs += 1

        def run() -> Any:
            try:
                return fn(*args)
            except Cancelled:
                self.log.info("stopping: the rest of this run is left for the next start")
                raise NotReadyError("the daemon is stopping") from None
            except MediaSearchError as exc:
                self.log.error("%s", exc)
                raise
            except Exception:
                self.log.exception("unexpected error in %s", getattr(fn, "__name__", "a job"))
                raise
            finally:
                with self._jobs_lock:
                    self._jobs -= 1

        try:
            return self._runner.submit(run)
        except RuntimeError:  # shut down
            with self._jobs_lock:
                self._jobs -= 1
            raise NotReadyError("the daemon is stopping") from None

    def _wait(self, future: Future[Any]) -> Any:
        from concurrent.futures import CancelledError

        try:
            return future.result()
        except CancelledError:
            raise NotReadyError("the daemon is stopping") from None

    def _schedule(self) -> None:
        """Turn the rescan schedule and settled events into jobs, one at a time."""
        every = self.options.rescan_every
        next_rescan = time.monotonic()  # the first rescan catches up with what changed while down
        job: Future[Any] | None = None
        while not self.cancel.wait(TICK_S):
            if job is not None and not job.done():
                continue
            try:
                if self.state == "error":
                    if time.monotonic() >= self._next_recover:
                        self._next_recover = time.monotonic() + RECOVER_EVERY_S
                        job = self._submit(self._recover_job)
                    continue
                if self.state != "ready" or self.busy:  # e.g. a request's job: the store may be closed
                    continue
                if time.monotonic() >= next_rescan:
                    job = self._submit(self._rescan_job)
                    next_rescan = time.monotonic() + every if every > 0 else math.inf
                    continue
                folders = self.coalescer.ready()
                if folders:
                    job = self._submit(self._run_index, folders, self.options.index)
                elif self._needs_optimize():
                    job = self._submit(self._optimize_job)
            except MediaSearchError as exc:  # the scheduler must outlive any one failure
                self.log.error("scheduling: %s", exc)

    def _run_index(self, paths: Sequence[str], options: IndexOptions, tagging: bool | None = None) -> IndexReport:
        """One index run with a line in the log per file changed or skipped."""
        lib = self._library()
        before = lib.snapshot(paths)
        counting = not lib.index_side.activate_when_done  # queries use this collection: keep its counts
        base = self.counts
        written = _NewFiles(before, self._grow) if counting else None
        store = cast("Store", _GuardedStore(lib.index_side.store, self.cancel, written))
        try:
            summary = lib.run_index(paths, options, tag=tagging, progress=_LogProgress(self.log), store=store)
        finally:
            after = lib.snapshot(paths)
            done = changes(before, after)
            for verb, what in done:
                self.log.info("%s %s", verb, what)
            self._changes += points_changed(before, after)
            if counting:  # exact now: what the run added as it went, and what it removed or replaced
                self.counts = base + Counts.of(after.values()) - Counts.of(before.values())
            if done:
                self.last_change = time.time()
        for err in summary.errors:
            self.log.warning("skipped %s: %s", err["path"], err["error"])
        return summary

    def _grow(self, added: Counts) -> None:
        self.counts = self.counts + added

    def _rescan_job(self) -> None:
        self.coalescer.clear()
        self.watcher.refresh(self.roots)
        roots = list(self.roots)
        summary = self._run_index(roots, self.options.index) if roots else IndexReport()
        if roots:
            self._finish(summary)
        data = summary.to_json()
        self.last_scan = {**{k: v for k, v in data.items() if k != "errors"}, "finished": time.time()}
        self.log.info("rescan of %d roots: %s", len(roots), {k: v for k, v in data.items() if k != "errors"})

    def _finish(self, summary: IndexReport) -> None:
        """Record the run; once a new model's index is complete, queries move over to it."""
        lib = self._library()
        if not lib.index_side.activate_when_done:
            lib.complete(summary)  # records the run: nothing the readers use changes
            return
        with self._rw.write():
            lib.complete(summary)
        self.counts = lib.query_counts()
        self.log.info("queries now use %s", lib.index_side.collection)

    def _library(self) -> LocalLibrary:
        if self.lib is None:
            raise NotReadyError(self.message or "the daemon is not ready")
        return self.lib

    # -- HNSW build -------------------------------------------------------------------------------

    def _changes_since_build(self, lib: LocalLibrary) -> int:
        """At start: every point when the graph was never built (a store built by `mediasearch index`
        alone), else how far the size has moved since the build recorded in the collection's meta."""
        if self.settings.qdrant_url:
            return 0
        built = lib.search_index_built()
        count = lib.point_count()
        return count if built is None else abs(count - built)

    def _needs_optimize(self) -> bool:
        """After enough change (points written or deleted) to a collection big enough for approximate
        search; at start, when such a collection lacks its graph."""
        if self._changes == self._checked_changes or self.settings.qdrant_url:
            return False
        self._checked_changes = self._changes
        threshold = self.options.optimize_min_points or EXACT_SEARCH_MAX_POINTS
        count = self._library().point_count()
        if count <= threshold or self._changes < OPTIMIZE_GROWTH * count:
            return False
        self._changes, self._checked_changes = 0, -1
        return True

    def _optimize_job(self) -> None:
        """Build HNSW in a child process: the engine holds the GIL while it optimises, which would
        freeze this whole process (measured: 34 s for 60k points). Queries wait meanwhile (503).
        A store that cannot be opened again afterwards is retried, then reported: the "error" state."""
        lib = self._library()
        self.log.info("building the search index (HNSW) of %s", lib.index_side.collection)
        started = time.monotonic()
        with self._rw.write():
            self.state, self.message = "optimizing", "the daemon is building its search index (HNSW)"
            code: int | None = None
            try:
                code = lib.build_search_index(self.cancel)
                self.state, self.message = "ready", ""
            except StoreError as exc:
                self._reopen_after_build(lib, exc)
            finally:
                if self.cancel.is_set():
                    self.state = "stopping"
                elif self.state == "optimizing":  # an unexpected error: the store may still be usable
                    self.state, self.message = "ready", ""
        self.log.info("search index built in %.0f s (exit %s)", time.monotonic() - started, code)

    def _reopen_after_build(self, lib: LocalLibrary, exc: StoreError) -> None:
        """Try the store again a few times; if it still cannot be opened, say so (state "error") and
        let the scheduler retry every RECOVER_EVERY_S, instead of hanging or failing every query."""
        for attempt in range(1, REOPEN_TRIES + 1):
            self.log.warning("cannot open the store again after its HNSW build (attempt %d): %s", attempt, exc)
            try:
                lib.reopen_index_store(REOPEN_WAIT_S)
            except StoreError as again:
                exc = again
                continue
            self.state, self.message = "ready", ""
            return
        self.state = "error"
        every = f"retrying every {RECOVER_EVERY_S:.0f} s"
        self.message = f"cannot open the store after building its search index: {exc}; {every}"
        self._next_recover = time.monotonic() + RECOVER_EVERY_S
        self.log.error("%s", self.message)

    def _recover_job(self) -> None:
        lib = self._library()
        with self._rw.write():
            try:
                lib.reopen_index_store(REOPEN_WAIT_S)
            except StoreError as exc:
                self.message = f"cannot open the store after building its search index: {exc}; retrying"
                self.log.warning("%s", self.message)
                return
            self.state, self.message = "ready", ""
        self.log.info("the store is open again: ready")

    # -- requests ---------------------------------------------------------------------------------

    def _query_side(self, model: str | None) -> LocalLibrary:
        if self.state != "ready" or self.lib is None:
            raise NotReadyError(self.message or f"the daemon is {self.state}")
        _check_model(model, self.lib.model_name(), self.settings.home, "answers queries")
        return self.lib

    @contextlib.contextmanager
    def _querying(self, model: str | None = None) -> Iterator[LocalLibrary]:
        """The query side, held for reading: other reads go on at the same time; a switch of collection
        or an HNSW build waits for them, and they for it (503 after QUERY_WAIT_S, not a long wait)."""
        self._query_side(model)
        try:
            with self._rw.read(timeout=QUERY_WAIT_S):
                yield self._query_side(model)
        except LockTimeout:
            raise NotReadyError(self.message or "the daemon is busy: try again") from None

    def query(self, query: Query, model: str | None = None) -> list[dict[str, Any]]:
        """Hits as `query --json` prints them."""
        with self._querying(model) as lib:
            return [h.to_json() for h in lib.search(query)]

    def similar(self, path: str, query: Query, model: str | None = None) -> list[dict[str, Any]]:
        """Items that look like ``path`` (indexed or not), as `similar --json` prints them."""
        with self._querying(model) as lib:
            return [h.to_json() for h in lib.similar(path, query)]

    def explain(self, query: Query, model: str | None = None) -> dict[str, Any]:
        """How the query's text is read (`query --explain`), with the home's people known."""
        from mediasearch.library.wire import to_json

        with self._querying(model) as lib:
            return dict(to_json(lib.explain(query)))

    def duplicates(self, paths: Sequence[str], threshold: float | None = None) -> list[dict[str, Any]]:
        """Groups of copies among the indexed files under ``paths``, as `duplicates --json` prints them."""
        with self._querying() as lib:
            return [asdict(g) for g in lib.duplicates(paths, threshold)]

    def index(
        self,
        paths: Sequence[str],
        options: IndexOptions,
        *,
        tagging: bool | None = None,
        watch: bool = False,
        model: str | None = None,
    ) -> dict[str, Any]:
        """Bring the index in step with ``paths`` (as `mediasearch index` does); ``watch`` adds them as roots."""
        lib = self._library()
        _check_model(model, lib.index_side.model.spec.name, self.settings.home, "indexes")
        paths = [os.path.abspath(p) for p in paths]

        def job() -> dict[str, Any]:
            summary = self._run_index(paths, options, tagging)
            self._finish(summary)
            if watch:
                self._set_roots([*self.roots, *paths])
            return summary.to_json()

        return cast("dict[str, Any]", self._wait(self._submit(job)))

    def forget(self, path: str) -> dict[str, Any]:
        """Drop a folder from every collection; roots at or under it are no longer watched."""
        path = os.path.abspath(path)

        def job() -> dict[str, Any]:
            lib = self._library()
            before = lib.snapshot([path])
            dropped = lib.forget(path)
            after = lib.snapshot([path])
            for verb, what in changes(before, after):
                self.log.info("%s %s (forgotten)", verb, what)
            self._changes += points_changed(before, after)
            if lib.index_side.activate_when_done:  # queries use another collection, changed too
                self.counts = lib.query_counts()
            else:
                self.counts = self.counts + Counts.of(after.values()) - Counts.of(before.values())
            kept = [r for r in self.roots if not under(r, path)]
            for root in set(self.roots) - set(kept):
                self.watcher.unwatch(root)
            self._set_roots(kept)
            return {"path": path, "files": dropped}

        return cast("dict[str, Any]", self._wait(self._submit(job)))


    def tag(self, vocab: str | None, prompts: str | None = None) -> dict[str, Any]:
        """Tag everything indexed (as `mediasearch tag`); new items are tagged from then on."""

        def job() -> dict[str, Any]:
            return asdict(self._query_side(None).tag(vocab, prompts))

        return cast("dict[str, Any]", self._wait(self._submit(job)))

    def tags(self) -> dict[str, int]:
        with self._querying() as lib:
            return lib.tags()

    def status(self) -> dict[str, Any]:
        """`status --json`, plus what the daemon is doing; the counts are kept current, not counted."""
        with self._querying() as lib:
            out = asdict(lib.status(self.counts))
        out["daemon"] = self.describe()
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "url": self.info.url if self.info else None,
            "state": self.state,
            "roots": self.roots,
            "watching": dict(self.watcher.modes),
            "busy": self.busy,
            "pending_folders": self.coalescer.pending(),
            "last_scan": self.last_scan,
            "last_change": self.last_change,
            "started": self.started,
        }

    def thumbnail(self, path: str, size: int, at: float | None = None) -> bytes:
        """A JPEG thumbnail of an indexed file (a video's frame at ``at`` s); any other path is refused.
        Made from the descriptor checked against the index; a video's in a decoder worker, under the
        indexing time limit (not in this HTTP thread)."""
        real, payload = self._indexed(path)
        try:
            with opened_checked(real, payload) as served:
                return self._thumbs.get(real, served.kind, size, at, fd=served.fd, videos=self._videos)
        except FileChangedError as exc:
            raise NotIndexedError(str(exc)) from None
        except OSError:
            raise NotIndexedError(f"{display_path(real)} is indexed but cannot be read any more") from None

    def media(self, path: str) -> ServedFile:
        """The indexed file ``path`` names, open and checked against the index (the caller serves from
        the descriptor and closes it); any other path is refused."""
        real, payload = self._indexed(path)
        try:
            return open_checked(real, payload)
        except FileChangedError as exc:
            raise NotIndexedError(str(exc)) from None

    def _indexed(self, path: str) -> tuple[str, dict[str, Any]]:
        """The stored path and payload of the indexed file ``path`` names (after lexical clean-up)."""
        if not path or "\x00" in path or not os.path.isabs(path):
            raise NotIndexedError("give the absolute path of an indexed file")
        shown = display_path(os.path.normpath(path))
        with self._querying() as lib:  # held for the look-up only: reading the file needs no store
            payload = lib.indexed_record(shown)
        if payload is None:
            raise NotIndexedError(f"{display_path(path)} is not in the index")
        return path_from_payload(payload), payload


def _check_model(model: str | None, name: str | None, home: Path, does: str) -> None:
    if model is not None and model != name:
        raise ModelMismatchError(
            f"the daemon for {home} {does} with {name}, not {model}: drop --model, or stop the daemon first"
        )








# -- the process ----------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything slow happens (port 0: any free port)."""
    address = "127.0.0.1" if host == "localhost" else host
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class HttpServer:
    """uvicorn in a thread of its own, so that the main thread keeps the signals."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="none", timeout_graceful_shutdown=3
        )
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DaemonError("the HTTP server did not start (see the log)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()


def _stop_on_signals(service: Service) -> threading.Event:
    """SIGTERM / SIGINT stop the daemon cleanly; a second one leaves at once (a restart catches up)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        service.stop_reason = f"received {signal.Signals(signum).name}"
        stop.set()
        service.cancel.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _already_served(home: Path) -> bool:
    try:
        return find_daemon(home, wait_s=0) is not None
    except DaemonError:
        return True  # there, but starting or not answering


def serve(settings: Settings, options: DaemonOptions, announce: Callable[[DaemonInfo], None] | None = None) -> None:
    """Run the daemon for ``settings.home`` until SIGTERM or SIGINT."""
    check_binding(options.host, options.token)
    if _already_served(settings.home):
        raise ConfigError(f"a daemon already serves {settings.home} (see {settings.home / 'daemon.json'})")
    settings.home.mkdir(parents=True, exist_ok=True)
    log = setup_logging(settings.home, options.echo)
    sock = bind(options.host, options.port)
    port = int(sock.getsockname()[1])
    url = connect_url(options.host, port)
    token = options.token or secrets.token_urlsafe(24)
    info = DaemonInfo(os.getpid(), url, token, uuid.uuid4().hex, options.host, socket.gethostname(), time.time())
    service = Service(settings, options, log)
    service.info = info
    from mediasearch.serve.api import create_app

    app = create_app(service, token, instance=lambda: {"instance": info.instance, "pid": info.pid})
    http = HttpServer(app, sock)
    stop = _stop_on_signals(service)
    http.start()
    write_port_file(settings.home, info)
    log.info("serving %s at %s (pid %d)", settings.home, url, info.pid)
    if announce is not None:
        announce(info)
    try:
        with lane.serving() as compute:  # the model's CPU work runs on this thread (see lane.py)
            service.start()
            compute.serve(stop)
        log.info("stopping: %s", service.stop_reason)
    finally:
        service.stop()
        http.stop()
        remove_port_file(settings.home, info.instance)
        log.info("stopped")
