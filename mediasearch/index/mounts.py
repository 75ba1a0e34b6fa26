"""Mount points under the indexed folders, remembered: the files under one that is now missing or
empty (an unmounted disk) are kept and reported, never removed.

A missing or empty root given to `index` was always left alone; a disk mounted *inside* a root was
not: ``index ~`` with ``~/ext`` unmounted saw an empty folder and removed everything that had been
under it (and so did the daemon's watcher, which indexes the nearest folder that is present). So each
run records the mount points it finds at or under its roots (one JSON file in the home, written
atomically); a remembered one that is missing or empty protects what the store holds under it, as a
missing root does, until it is mounted again or the user runs `mediasearch forget` on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from mediasearch.fsutil import atomic_write
from mediasearch.media import mounts as mount_table
from mediasearch.media.discover import root_status

__all__ = ["MountLog"]


class MountLog:
    """The mount points seen under the roots of this home's runs, by path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, float] = _load(path) if path is not None else {}
        self._changed = False

    def update(self, roots: Sequence[str]) -> None:
        """Remember the mount points at or under ``roots`` now (a run reads only roots that are present)."""
        for point in mount_table.mount_points_under(roots):
            if point not in self.known:
                self.known[point] = time.time()
                self._changed = True

    def away(self, roots: Sequence[str]) -> list[tuple[str, str]]:
        """The remembered mount points under ``roots`` that are now "missing" or "empty" (but not the
        roots themselves: a root has its own rule), with which."""
        inside = [p for p in self.known if any(_strictly_under(p, r) for r in roots)]
        return sorted((p, status) for p in inside if (status := root_status(p)) != "ok")

    def forget(self, target: str) -> None:
        """`mediasearch forget TARGET`: the mount points at or under it are no longer protected."""
        gone = [p for p in self.known if p == target or _strictly_under(p, target)]
        for point in gone:
            del self.known[point]
        self._changed |= bool(gone)

    def save(self) -> None:
        if not self._changed or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps({"version": 1, "mount_points": self.known}, indent=0))
        except OSError:
            return  # a read-only home: the mount points are found again by the next run that can write
        self._changed = False


def _strictly_under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/") and path != folder


def _load(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(p): float(t) for p, t in data["mount_points"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
