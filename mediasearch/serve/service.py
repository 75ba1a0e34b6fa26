"""The daemon's service: what the HTTP API calls. It holds the open store and the warm model, the
watched roots, and the one index worker that runs every write (event batches, rescans, index /
forget / tag requests, the HNSW build) one at a time; reads go on beside it under a readers-writer lock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mediasearch.errors import (
    MediaSearchError,
    ModelMismatchError,
    NotIndexedError,
    QueryError,
    StoreError,
    StoreLockedError,
)
from mediasearch.fsutil import under
from mediasearch.library import home, roots
from mediasearch.library.client import DaemonInfo
from mediasearch.library.home import Counts
from mediasearch.library.local import LocalLibrary
from mediasearch.library.requests import EXACT_SEARCH_MAX_POINTS, IndexOptions, IndexReport
from mediasearch.media.decode_pool import DecoderPool
from mediasearch.media.discover import display_path, path_from_payload
from mediasearch.media.thumbnails import ThumbnailCache
from mediasearch.serve.changes import NewFiles, changes, points_changed
from mediasearch.serve.files import FileChangedError, ServedFile, open_checked, opened_checked
from mediasearch.serve.options import DaemonOptions
from mediasearch.serve.people_service import PeopleService
from mediasearch.serve.rwlock import LockTimeout, ReadWriteLock
from mediasearch.serve.watcher import Coalescer, Watcher
from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.library.requests import Query, Store, Vocabulary

LOG_NAME = "mediasearch.serve.daemon"
ROOTS_KEY = "daemon_roots"
TICK_S = 0.2
OPTIMIZE_GROWTH = 0.2  # rebuild HNSW once the store has changed by this fraction since the last build
THUMB_CACHE = 256  # thumbnails kept in memory (all are kept on disk, under the home's cache)
THUMB_WORKERS = 2  # processes that decode video thumbnails (under the indexing time limit)
QUERY_WAIT_S = 10.0  # a query waits this long for a collection switch or an HNSW build, then gets 503
REOPEN_TRIES = 3  # after an HNSW build, attempts to open the store again before the "error" state
REOPEN_WAIT_S = 20.0  # each attempt waits this long for the build's process to let go of the store
RECOVER_EVERY_S = 30.0  # in the "error" state, how often the store is tried again
FAULT_RETRY_S = (15.0, 30.0, 60.0, 120.0, 300.0, 600.0)  # a watched run that failed is retried after these


class NotReadyError(MediaSearchError):
    """The daemon is starting, stopping or rebuilding its index: try again shortly."""


class Cancelled(Exception):
    """The daemon is stopping: the run in flight is abandoned before its next write."""


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


class _LogProgress:
    """The indexer's progress as a log line every ``every`` seconds (per-file lines come at the end), and as
    the ``indexing`` part of the status, for a client's progress bar."""

    def __init__(
        self, log: logging.Logger, paths: Sequence[str] = (), every: float = 30.0, doing: str = "indexing"
    ) -> None:
        self.log, self.every, self.paths, self.doing = log, every, list(paths), doing
        self.total = self.files = self.frames = self.phase = 0
        self._next = 0.0

    @property
    def started(self) -> bool:
        return self.phase > 0

    def to_json(self) -> dict[str, Any]:
        """``{"paths", "phase", "files", "done", "frames"}``: the run's paths, its phase (1: the CLIP pass, 2:
        the enrichers), the phase's files, files done and frames."""
        counts = {"files": self.total, "done": self.files, "frames": self.frames}
        return {"paths": self.paths, "phase": self.phase, **counts}

    def start(self, files: int) -> None:
        self.total, self._next = files, time.monotonic() + self.every
        self.files = self.frames = 0
        self.phase += 1
        if files:
            self.log.info("%s %d files", self.doing, files)

    def advance(self, files: int = 0, frames: int = 0) -> None:
        self.files += files
        self.frames += frames
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            self.log.info("%s: %d of %d files so far (%d frames)", self.doing, self.files, self.total, self.frames)

    def finish(self) -> None:
        pass


class Service(PeopleService):
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
        self.progress: _LogProgress | None = None  # of the index run under way
        self._next_recover = 0.0
        self.fault: dict[str, Any] | None = None  # a watched run that failed (disk full, ...): "degraded"
        self._fault_paths: list[str] = []
        self._fault_retry_at = 0.0
        self._thumbs = ThumbnailCache(settings.cache_dir / "thumbnails", THUMB_CACHE)
        self._videos = DecoderPool(THUMB_WORKERS, options.index.decode_timeout)
        # The enrichment pass runs after each index run, in the background: roots whose CLIP pass is done,
        # a job that gives way to any other (``_enrich_job``), and its progress for /status.
        self._to_enrich: set[str] = set()
        self._give_way = threading.Event()
        self._enriching: _LogProgress | None = None
        self.signals: dict[str, dict[str, int]] = {}  # per enricher, points done and pending (after each pass)

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
        if fn != self._enrich_job:
            self._give_way.set()  # a pass in progress stops after its file: this job comes first

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
        job_paths: list[str] | None = None  # the folders of the index job in flight (None: another job)
        while not self.cancel.wait(TICK_S):
            if job is not None and not job.done():
                if self._enriching is not None and (self.coalescer.pending() or time.monotonic() >= next_rescan):
                    self._give_way.set()  # changes on disk come before the enrichers
                continue
            if job is not None:
                self._after_job(job, job_paths)
                job, job_paths = None, None
            try:
                if self.state == "error":
                    if time.monotonic() >= self._next_recover:
                        self._next_recover = time.monotonic() + RECOVER_EVERY_S
                        job = self._submit(self._recover_job)
                    continue
                if self.state != "ready" or self.busy:  # e.g. a request's job: the store may be closed
                    continue
                self._flush_when_idle()
                if self.fault is not None and time.monotonic() >= self._fault_retry_at:
                    job_paths = list(self._fault_paths)
                    job = self._submit(self._run_index, job_paths, self.options.index)
                    continue
                if time.monotonic() >= next_rescan:
                    job = self._submit(self._rescan_job)
                    next_rescan = time.monotonic() + every if every > 0 else math.inf
                    continue
                folders = self.coalescer.ready()
                if folders:
                    job_paths = list(folders)
                    job = self._submit(self._run_index, folders, self.options.index)
                elif self._to_enrich and not self.coalescer.pending():
                    job = self._submit(self._enrich_job)
                elif self._needs_optimize():
                    job = self._submit(self._optimize_job)
            except MediaSearchError as exc:  # the scheduler must outlive any one failure
                self.log.error("scheduling: %s", exc)

    def _after_job(self, job: Future[Any], paths: list[str] | None) -> None:
        """After a scheduled job: a watched run that failed (a full disk, a read-only home, ...) puts the
        daemon in the "degraded" state, saying why, and is retried with backoff; one that worked clears it."""
        exc = job.exception() if not job.cancelled() else None
        if paths is None:
            return
        if exc is None:
            if self.fault is not None:
                self.log.info("the failed run went through: ready again (%s)", self.fault["reason"])
                self.fault, self._fault_paths = None, []
            return
        if not isinstance(exc, MediaSearchError) or isinstance(exc, NotReadyError):
            return
        tries = self.fault["retries"] + 1 if self.fault is not None else 0
        wait = FAULT_RETRY_S[min(tries, len(FAULT_RETRY_S) - 1)]
        since = self.fault["since"] if self.fault is not None else time.time()
        self._fault_paths = sorted(set(self._fault_paths) | set(paths))
        self._fault_retry_at = time.monotonic() + wait
        self.fault = {"reason": str(exc), "since": since, "retries": tries, "next_retry": time.time() + wait}
        self.log.warning("degraded: %s; the run is tried again in %.0f s", exc, wait)

    def shown_state(self) -> tuple[str, str]:
        """The state and message to show: "degraded" (and why) while a failed watched run waits for a retry."""
        if self.state == "ready" and self.fault is not None:
            retry = max(0.0, self.fault["next_retry"] - time.time())
            return "degraded", f"{self.fault['reason']} (tried again in {retry:.0f} s)"
        return self.state, self.message

    def _flush_when_idle(self) -> None:
        """Make the last writes durable within the store's auto-flush delay even when no write follows
        (the store flushes on a write that comes that much later, and the daemon may then sit idle)."""
        store = self.lib.index_side.store if self.lib is not None else None
        flush_if_due = getattr(store, "flush_if_due", None)
        if flush_if_due is not None:
            try:
                flush_if_due()
            except MediaSearchError as exc:
                self.log.warning("flushing the store: %s", exc)

    def _run_index(self, paths: Sequence[str], options: IndexOptions, tagging: bool | None = None) -> IndexReport:
        """One index run with a line in the log per file changed or skipped."""
        lib = self._library()
        before = lib.snapshot(paths)
        counting = not lib.index_side.activate_when_done  # queries use this collection: keep its counts
        base = self.counts
        written = NewFiles(before, self._grow) if counting else None
        store = cast("Store", _GuardedStore(lib.index_side.store, self.cancel, written))
        self.progress = _LogProgress(self.log, paths)
        try:
            summary = lib.run_index(paths, options, tag=tagging, progress=self.progress, store=store, enrich=False)
            self._to_enrich.update(paths)  # the scheduler runs the enrichers once nothing else waits
        finally:
            self.progress = None
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
            self.log.warning("failed %s: %s", err["path"], err["error"])
        return summary

    def _enrich_job(self) -> None:
        """The enrichment pass over the roots indexed since the last one; it stops after the file in hand
        when another job is submitted (or the daemon stops), and the rest waits for the next quiet moment.
        Reads go on meanwhile: only writes wait for it."""
        lib = self._library()
        roots, self._to_enrich = sorted(self._to_enrich), set()
        self._give_way.clear()
        report = IndexReport()
        store = cast("Store", _GuardedStore(lib.index_side.store, self.cancel))
        self._enriching = _LogProgress(self.log, roots, doing="enriching")

        def stop() -> bool:
            return self.cancel.is_set() or self._give_way.is_set()

        try:
            lib.enrich(roots, report, progress=self._enriching, store=store, stop=stop)
        finally:
            if stop():
                self._to_enrich.update(roots)
            self._enriching = None
        self.signals = lib.enrichment_progress()
        if any(report.enriched.values()):
            self.log.info("enriched %s", ", ".join(f"{k} {v}" for k, v in report.enriched.items() if v))
        for err in report.errors:
            self.log.warning("not enriched %s: %s", err["path"], err["error"])

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
        """Items that look like the indexed file ``path``, as `similar --json` prints them (a picture that
        is not indexed is sent as a query's image bytes instead: no request learns what else exists)."""
        real = self.indexed_path(path)
        with self._querying(model) as lib:
            return [h.to_json() for h in lib.similar(real, query)]

    def explain(self, query: Query, model: str | None = None) -> dict[str, Any]:
        """How the query's text is read (`query --explain`), with the home's people and places known."""
        from mediasearch.library.wire import to_json

        with self._querying(model) as lib:
            return dict(to_json(lib.explain(query)))

    def duplicates(self, paths: Sequence[str], threshold: float | None = None) -> list[dict[str, Any]]:
        """Groups of copies among the indexed files under ``paths``, as `duplicates --json` prints them."""
        with self._querying() as lib:
            return [asdict(g) for g in lib.duplicates(paths, threshold)]

    def text(self, path: str) -> dict[str, Any]:
        """The recognised text of the indexed file ``path``, as `text --json` prints one file (any other
        path is refused, existing or not: the CLI reads such a file itself)."""
        real = self.indexed_path(path)
        with self._querying() as lib:
            return lib.text(real).to_json()

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
        allowed = self.library_roots()
        paths = [roots.checked(p, allowed) for p in paths]
        missing = [p for p in paths if watch and not os.path.isdir(p)]
        if missing:
            raise QueryError(f"cannot watch {missing[0]}: it is not a folder")

        def job() -> dict[str, Any]:
            summary = self._run_index(paths, options, tagging)
            self._finish(summary)
            if watch:
                self._set_roots([*self.roots, *paths])
            return summary.to_json()

        return cast("dict[str, Any]", self._wait(self._submit(job)))

    def forget(self, path: str) -> dict[str, Any]:
        """Drop a folder from every collection; roots at or under it are no longer watched. The path is
        a library root, or a file or folder under one that holds indexed files."""
        allowed = self.library_roots()
        path = roots.checked(path, allowed)

        def job() -> dict[str, Any]:
            lib = self._library()
            before = lib.snapshot([path])
            if not before and path not in allowed:
                raise NotIndexedError(f"nothing is indexed at {display_path(path)}")
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


    def tag(self, vocabulary: Vocabulary | None, prompts: str | None = None) -> dict[str, Any]:
        """Tag everything indexed (as `mediasearch tag`) with the labels sent, or learned prompts from a
        file under the library roots or the home; new items are tagged from then on."""
        if prompts is not None:
            prompts = roots.checked(prompts, [*self.library_roots(), str(self.settings.home)])

        def job() -> dict[str, Any]:
            return asdict(self._query_side(None).tag(None, prompts, vocabulary=vocabulary))

        return cast("dict[str, Any]", self._wait(self._submit(job)))

    def tags(self) -> dict[str, int]:
        with self._querying() as lib:
            return lib.tags()

    def places(self) -> list[dict[str, Any]]:
        with self._querying() as lib:
            return [asdict(p) for p in lib.places()]

    def status(self) -> dict[str, Any]:
        """`status --json`, plus what the daemon is doing; the counts are kept current, not counted."""
        with self._querying() as lib:
            out = asdict(lib.status(self.counts))
        out["enrichers"] = self.signals
        out["daemon"] = self.describe()
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "url": self.info.url if self.info else None,
            "state": self.shown_state()[0],
            "fault": self.fault,
            "roots": self.roots,
            "watching": dict(self.watcher.modes),
            "busy": self.busy,
            "pending_folders": self.coalescer.pending(),
            "enriching": self._enrichment(),
            "last_scan": self.last_scan,
            "last_change": self.last_change,
            "started": self.started,
            "indexing": self.progress.to_json() if self.progress is not None and self.progress.started else None,
        }

    def _enrichment(self) -> dict[str, Any] | None:
        """The enrichment pass in progress (files done of files pending), or None."""
        running = self._enriching
        if running is None:
            return {"files": 0, "done": 0, "waiting": len(self._to_enrich)} if self._to_enrich else None
        return {"files": running.total, "done": running.files, "waiting": 0}

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

    def library_roots(self) -> list[str]:
        """The folders requests may name: those watched, and those the owner indexed on this machine."""
        return sorted({*self.roots, *roots.recorded(self.settings.home)})

    def indexed_path(self, path: str) -> str:
        """The stored path of the indexed file ``path`` names; NotIndexedError for any other path,
        whether or not it exists."""
        return self._indexed(path)[0]

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
