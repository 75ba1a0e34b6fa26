"""Files that failed to decode, remembered so that an unchanged broken file costs nothing next time.

A real library always holds a few broken files (a truncated download, a camera's half-written card).
Decoding them again on every run, and loading the model for them, would make every re-index slow; so
each one is kept with its size, mtime, content fingerprint and reason. While the file is unchanged
(same size and mtime, or same size and fingerprint: a copy that only touched it), a run lists it as
failed with its reason and does not decode it; a changed file, or ``index --retry-failed``, tries
again. The list is one JSON file in the home, written atomically at the end of a run (one writer at a
time: the run that holds the store); a run stopped before that simply tries its failures again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mediasearch.errors import MediaError
from mediasearch.fsutil import atomic_write
from mediasearch.media.discover import FileEntry, display_path, fingerprint

__all__ = ["RETRY_HINT", "Failure", "FailureLog", "remembered_reason"]

MTIME_TOLERANCE_S = 1e-5
RETRY_HINT = "unchanged since it failed; `mediasearch index --retry-failed` tries again"
_TRANSIENT = ("cannot read file:",)  # I/O and permissions: not the file's content, so not remembered


@dataclass(frozen=True)
class Failure:
    """One file that failed: the version of it that failed, why, and when it was first seen failing."""

    size: int
    mtime: float
    fingerprint: str
    reason: str
    since: float


def remembered_reason(reason: str) -> str:
    """How a remembered failure reads in a run's errors."""
    return f"{reason} ({RETRY_HINT})"


class FailureLog:
    """The failures of one home, by file path (the real path, as discovery gives it)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._items: dict[str, Failure] = _load(path) if path is not None else {}
        self._changed = False

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, Failure]]:
        return sorted(self._items.items())

    def remembered(self, entry: FileEntry) -> Failure | None:
        """The failure of this very version of the file, if it failed before (no read when the size and
        mtime match; the fingerprint, 128 KiB, when only the mtime moved)."""
        failure = self._items.get(entry.path)
        if failure is None or failure.size != entry.size:
            return None
        if abs(failure.mtime - entry.mtime) < MTIME_TOLERANCE_S:
            return failure
        try:
            same = bool(failure.fingerprint) and fingerprint(entry.path, entry.size) == failure.fingerprint
        except MediaError:
            return None
        if not same:
            return None
        self._items[entry.path] = Failure(entry.size, entry.mtime, failure.fingerprint, failure.reason, failure.since)
        self._changed = True
        return failure

    def record(self, entry: FileEntry, reason: str) -> None:
        """Remember that this version of the file failed (not for I/O errors, which are not its content's)."""
        if reason.startswith(_TRANSIENT):
            return
        old = self._items.get(entry.path)
        try:
            fprint = fingerprint(entry.path, entry.size)
        except MediaError:
            fprint = ""
        since = old.since if old is not None and old.fingerprint == fprint else time.time()
        self._items[entry.path] = Failure(entry.size, entry.mtime, fprint, reason, since)
        self._changed = True

    def forget(self, paths: Iterable[str]) -> None:
        for path in paths:
            if self._items.pop(path, None) is not None:
                self._changed = True

    def prune(self, gone: Callable[[str], bool]) -> None:
        """Drop the failures of files that ``gone`` says are no longer there."""
        self.forget([p for p in self._items if gone(p)])

    def save(self) -> None:
        """Write the list if it changed (atomically; the home may be read-only: then it is not kept)."""
        if not self._changed or self.path is None:
            return
        data = {"version": 1, "files": {p: asdict(f) for p, f in sorted(self._items.items())}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(data, indent=0))
        except OSError:
            return  # the run's report still lists every failure; the next run decodes them again
        self._changed = False

    def listing(self) -> list[dict[str, Any]]:
        """For ``status``: each failing file shown, with its reason and since when."""
        return [{"path": display_path(p), "error": f.reason, "since": round(f.since, 3)} for p, f in self.items()]


def _failure(f: dict[str, Any]) -> Failure:
    return Failure(int(f["size"]), float(f["mtime"]), str(f["fingerprint"]), str(f["reason"]), float(f["since"]))


def _load(path: Path) -> dict[str, Failure]:
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        files = data["files"] if isinstance(data, dict) else {}
        return {str(p): _failure(f) for p, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no list yet, or a damaged one: every failure is simply tried again
