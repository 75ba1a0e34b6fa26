"""Watch the roots: file-system events → debounced, coalesced folders to re-index.

An event names a file or folder; what gets re-indexed is the folder around it (the parent, or for a
move the nearest folder holding both ends, so the indexer sees it as a move and keeps the vectors).
Folders are handed out together once no event at all has come for ``debounce`` seconds (so the two
ends of a move, or a folder and its parent, go to the indexer as one run), and no file named in
their events changed more recently: a file still being copied is indexed once, when it stops
changing. Under a steady stream of events, a folder quiet for ``debounce`` still goes after
``max_delay``. watchdog is imported inside `Watcher` only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mediasearch.fsutil import outermost, under
from mediasearch.media.discover import media_kind

NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "davfs", "virtiofs"}
)
_MAX_TRACKED_FILES = 2000  # per folder; past this the mtime check is skipped (a big copy settles by events)


@dataclass
class _Pending:
    first_event: float
    last_event: float
    files: set[str] = field(default_factory=set)


class Coalescer:
    """Collects events per folder and hands out the folders that have settled."""

    def __init__(
        self,
        roots: Sequence[str],
        debounce: float,
        *,
        ignore: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.roots = [os.path.abspath(r) for r in roots]
        self.debounce = debounce
        self.max_delay = max(10.0, 10 * debounce)
        self.ignore = [os.path.abspath(p) for p in ignore]
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._last_event = -math.inf
        self._lock = threading.Lock()

    def set_roots(self, roots: Sequence[str]) -> None:
        with self._lock:
            self.roots = [os.path.abspath(r) for r in roots]

    def add(self, kind: str, src: str, dest: str | None = None, *, is_dir: bool = False) -> None:
        """Record one event (watchdog's event_type, paths); irrelevant ones are dropped."""
        paths = [os.path.abspath(p) for p in (src, dest) if p]
        if any(under(p, i) for p in paths for i in self.ignore):
            return
        if not is_dir and not any(media_kind(p) for p in paths):
            return
        if kind == "moved" and dest:
            folder = os.path.commonpath([os.path.dirname(paths[0]), os.path.dirname(paths[-1])])
        elif is_dir and kind == "created":
            folder = paths[0]
        else:
            folder = os.path.dirname(paths[0])
        self._touch(folder, [] if is_dir else paths[-1:])

    def _touch(self, folder: str, files: Sequence[str]) -> None:
        with self._lock:
            root = next((r for r in self.roots if under(folder, r) or under(r, folder)), None)
            if root is None:
                return
            if under(root, folder):  # an event above a root (the root itself moved or was made)
                folder = root
            now = self._clock()
            entry = self._pending.setdefault(folder, _Pending(now, now))
            entry.last_event = self._last_event = now
            if len(entry.files) < _MAX_TRACKED_FILES:
                entry.files.update(files)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def clear(self) -> None:
        """Forget what is pending (a full rescan is about to cover it)."""
        with self._lock:
            self._pending.clear()

    def ready(self) -> list[str]:
        """The settled folders (removed from the pending set), each one the indexer can trust."""
        now = self._clock()
        with self._lock:
            quiet = now - self._last_event >= self.debounce
            done = [
                f
                for f, p in self._pending.items()
                if quiet or (now - p.first_event >= self.max_delay and now - p.last_event >= self.debounce)
            ]
            settled = [f for f in done if not self._recently_written(self._pending[f].files)]
            for folder in settled:
                del self._pending[folder]
            roots = list(self.roots)
        return sorted(outermost([self._trusted(f, roots) for f in settled]))

    def _recently_written(self, files: set[str]) -> bool:
        """A file changed within the debounce window: a writer that pauses without an event."""
        now = time.time()
        for path in files:
            try:
                # A time in the future (clock skew, a touched date) is not a writer at work.
                if now - self.debounce < os.stat(path).st_mtime <= now + 1.0:
                    return True
            except OSError:
                continue
        return False

    @staticmethod
    def _trusted(folder: str, roots: Sequence[str]) -> str:
        """Climb to the nearest folder that exists and is not empty (the indexer leaves a missing or
        empty folder's entries alone, reading it as an unmounted disk), stopping at the root."""
        root = next((r for r in roots if under(folder, r)), folder)
        while folder != root and not _has_entries(folder):
            folder = os.path.dirname(folder)
        return folder


def _has_entries(folder: str) -> bool:
    try:
        with os.scandir(folder) as it:
            return next(it, None) is not None
    except OSError:
        return False


def mount_fstype(path: str, mounts_file: str = "/proc/self/mounts") -> str | None:
    """The file-system type of the mount holding ``path`` (Linux), or None when unknown."""
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for row in rows:
        if len(row) < 3:
            continue
        point = row[1].replace("\\040", " ")
        if under(real, point) and (best is None or len(point) > best[0]):
            best = (len(point), row[2])
    return best[1] if best else None


def is_network_fs(fstype: str | None) -> bool:
    """inotify sees only local changes on these (NFS, SMB, sshfs, ...)."""
    if fstype is None:
        return False
    return fstype in NETWORK_FS or fstype.startswith(("fuse.sshfs", "fuse.rclone", "fuse.s3fs", "nfs"))


class Watcher:
    """watchdog observers, one per root: inotify (or the platform's native API), polling as fallback."""

    def __init__(
        self, coalescer: Coalescer, log: logging.Logger, *, poll: bool = False, poll_interval: float = 10.0
    ) -> None:
        self.coalescer = coalescer
        self.log = log
        self.poll = poll
        self.poll_interval = poll_interval
        self.modes: dict[str, str] = {}
        self._observers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def watch(self, root: str) -> None:
        """Start watching ``root`` (recursively); a second call for the same root does nothing."""
        with self._lock:
            if root in self._observers or not os.path.isdir(root):
                return
            reason = self._poll_reason(root)
            observer = None
            if reason is None:
                observer, reason = self._native(root)
            if observer is None:
                observer = self._polling(root)
                self.log.warning("polling %s every %g s: %s", root, self.poll_interval, reason)
            self._observers[root] = observer
            self.modes[root] = "events" if reason is None else "polling"

    def _poll_reason(self, root: str) -> str | None:
        if self.poll:
            return "asked for with --poll"
        fstype = mount_fstype(root)
        if is_network_fs(fstype):
            return f"it is on a network file system ({fstype}), whose changes inotify does not see"
        return None

    def _native(self, root: str) -> tuple[Any, str | None]:
        """An inotify (or FSEvents, ...) observer, or None and why it could not start."""
        from watchdog.observers import Observer

        observer = Observer()
        try:
            observer.schedule(_handler(self.coalescer), root, recursive=True, event_filter=_event_types())
            observer.start()
        except OSError as exc:
            _stop(observer)
            return None, _watch_failure(exc)
        return observer, None

    def _polling(self, root: str) -> Any:
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.poll_interval)
        observer.schedule(_handler(self.coalescer), root, recursive=True, event_filter=_event_types())
        observer.start()
        return observer

    def refresh(self, roots: Sequence[str]) -> None:
        """Watch roots that appeared (a disk mounted again) and restart observers that died."""
        for root in roots:
            with self._lock:
                dead = root in self._observers and not self._observers[root].is_alive()
            if dead:
                self.unwatch(root)
            self.watch(root)

    def unwatch(self, root: str) -> None:
        with self._lock:
            observer = self._observers.pop(root, None)
            self.modes.pop(root, None)
        if observer is not None:
            _stop(observer)

    def stop(self) -> None:
        with self._lock:
            observers, self._observers = list(self._observers.values()), {}
        for observer in observers:
            _stop(observer)


def _watch_failure(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "inotify watches ran out (raise fs.inotify.max_user_watches to get events again)"
    if exc.errno == errno.EMFILE:
        return "inotify instances ran out (raise fs.inotify.max_user_instances)"
    return f"file events are unavailable ({exc.strerror or exc})"


def _stop(observer: Any) -> None:
    # An observer that fails to stop must never stop the daemon's own shutdown.
    with contextlib.suppress(Exception):
        observer.stop()
        observer.join(timeout=5)


def _event_types() -> list[Any]:
    """Changes only: opening and reading files (as the indexer does) must not trigger anything."""
    from watchdog import events as ev

    return [
        ev.FileCreatedEvent,
        ev.FileModifiedEvent,
        ev.FileDeletedEvent,
        ev.FileMovedEvent,
        ev.FileClosedEvent,
        ev.DirCreatedEvent,
        ev.DirDeletedEvent,
        ev.DirMovedEvent,
    ]


def _handler(coalescer: Coalescer) -> Any:
    """A watchdog handler feeding ``coalescer`` (built here so that watchdog loads only when used)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            dest = getattr(event, "dest_path", None)
            src = os.fsdecode(event.src_path)
            coalescer.add(event.event_type, src, os.fsdecode(dest) if dest else None, is_dir=event.is_directory)

    return Handler()
