"""What an index run changed, read from the store's snapshots before and after it: the log's lines per
file, the points that make the HNSW graph stale, and the files a run adds as it writes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mediasearch.library.home import Counts
from mediasearch.library.requests import StoredFile
from mediasearch.media.discover import display_path, path_from_payload


class NewFiles:
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
