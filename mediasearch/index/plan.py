"""The indexer: discover → diff against the store → decode (worker pool) → encode (batched) → upsert.

Every file's points are written in one upsert as soon as its last frame is encoded (by a writer thread,
while the next batch encodes), so a crash loses at most the batches in flight: the one being encoded
and the one being written; point ids derive from (path, timestamp), so a re-run overwrites instead of
duplicating, and a file whose stored point count is short of ``frames_total`` is redone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mediasearch.media.discover import (
    FileEntry,
    ancestor_dirs,
    display_path,
    fingerprint,
    path_from_payload,
    path_payload,
)
from mediasearch.store.base import Filter, PointIn, Store, point_id

if TYPE_CHECKING:

    pass


# The store keeps payload floats to about 7 significant decimals of a second; closer than this is "same".
MTIME_TOLERANCE_S = 1e-5
STATE_FIELDS = ("path", "path_raw", "size", "mtime", "fingerprint", "frames_total", "kind", "timestamp")


@dataclass
class StoredFile:
    """What the store holds for one file."""

    path: str
    size: int
    mtime: float
    fingerprint: str
    frames_total: int
    kind: str
    ids: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.ids) >= self.frames_total


@dataclass
class Plan:
    """The diff between a folder tree and the store."""

    unchanged: list[FileEntry] = field(default_factory=list)
    encode: list[tuple[FileEntry, StoredFile | None]] = field(default_factory=list)
    moves: list[tuple[FileEntry, StoredFile]] = field(default_factory=list)
    removed: list[StoredFile] = field(default_factory=list)


def file_key(path: str) -> str:
    """A str form of the real path bytes (safe for names that are not UTF-8), for point ids."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_stored(store: Store, folder: str) -> dict[str, StoredFile]:
    """Every file the store holds under ``folder``, keyed by its real path."""
    files: dict[str, StoredFile] = {}
    for rec in store.scroll(Filter(dir_prefix=display_path(folder)), fields=STATE_FIELDS):
        p = rec.payload
        path = path_from_payload(p)
        sf = files.get(path)
        if sf is None:
            sf = files[path] = StoredFile(
                path,
                size=int(p["size"]),
                mtime=float(p["mtime"]),
                fingerprint=str(p["fingerprint"]),
                frames_total=int(p["frames_total"]),
                kind=str(p["kind"]),
            )
        sf.ids.append(rec.id)
    return files


def make_plan(entries: Sequence[FileEntry], stored: dict[str, StoredFile], protected: Sequence[str]) -> Plan:
    """Sort files into unchanged / to encode / moved / removed. ``protected`` dirs are never removed."""
    plan = Plan()
    seen: set[str] = set()
    new: list[FileEntry] = []
    for entry in entries:
        seen.add(entry.path)
        old = stored.get(entry.path)
        if old is None:
            new.append(entry)
        elif old.size == entry.size and abs(old.mtime - entry.mtime) < MTIME_TOLERANCE_S and old.complete:
            plan.unchanged.append(entry)
        else:
            plan.encode.append((entry, old))
    gone = [sf for path, sf in stored.items() if path not in seen and not _under(path, protected)]
    by_print: dict[tuple[int, str], list[StoredFile]] = {}
    for sf in gone:
        if sf.complete:
            by_print.setdefault((sf.size, sf.fingerprint), []).append(sf)
    sizes = {size for size, _ in by_print}
    for entry in new:
        candidates = by_print.get((entry.size, _safe_fingerprint(entry))) if entry.size in sizes else None
        if candidates:
            plan.moves.append((entry, candidates.pop()))
        else:
            plan.encode.append((entry, None))
    moved_from = {id(sf) for _, sf in plan.moves}
    plan.removed = [sf for sf in gone if id(sf) not in moved_from]
    return plan


def _safe_fingerprint(entry: FileEntry) -> str:
    try:
        return fingerprint(entry.path, entry.size)
    except OSError:
        return ""


def _under(path: str, dirs: Sequence[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip(os.sep) + os.sep) for d in dirs)


def file_payload(entry: FileEntry, fprint: str, frames_total: int, meta: Any) -> dict[str, Any]:
    """The payload shared by all points of one file (docs/architecture.md, "What a point holds")."""
    payload: dict[str, Any] = {
        **path_payload(entry.path),
        "dirs": ancestor_dirs(entry.path),
        "root": entry.root,
        "kind": entry.kind,
        "size": entry.size,
        "mtime": entry.mtime,
        "fingerprint": fprint,
        "frames_total": frames_total,
        "tags": [],
    }
    if meta is not None:
        payload.update(
            width=meta.width,
            height=meta.height,
            duration=meta.duration,
            camera=meta.camera,
            date=meta.date if meta.date is not None else entry.mtime,
        )
        if getattr(meta, "lat", None) is not None and getattr(meta, "lon", None) is not None:
            payload["geo"] = {"lat": meta.lat, "lon": meta.lon}  # a Qdrant geo point (store/base.py GEO_FIELDS)
    else:
        payload["date"] = entry.mtime
    return payload


def apply_moves(store: Store, moves: Sequence[tuple[FileEntry, StoredFile]]) -> None:
    """Re-key moved files' points under their new path, re-using the stored vectors."""
    for entry, old in moves:
        records = store.retrieve(old.ids, with_vectors=True)
        key = file_key(entry.path)
        moved_fields = {
            **path_payload(entry.path),
            "dirs": ancestor_dirs(entry.path),
            "root": entry.root,
            "mtime": entry.mtime,
        }
        points = []
        for rec in records:
            payload = {k: v for k, v in rec.payload.items() if k != "path_raw"}
            payload.update(moved_fields)
            assert rec.vector is not None
            points.append(PointIn(point_id(key, payload.get("timestamp")), rec.vector, payload))
        store.upsert(points)
        stale = [i for i in old.ids if i not in {p.id for p in points}]
        if stale:
            store.delete(stale)


def forget(store: Store, target: str) -> int:
    """Drop the file ``target``, or every file under the folder ``target``; returns how many files went.

    A stored path is matched as it is stored (shown), so a file that no longer exists is forgotten too.
    """
    target = os.path.abspath(target)
    shown = display_path(target)
    files = set(load_stored(store, target))
    exact = {path_from_payload(r.payload) for r in store.scroll(Filter(path=shown), fields=("path", "path_raw"))}
    if exact:
        store.delete_where(Filter(path=shown))
    if files:
        store.delete_where(Filter(dir_prefix=shown))
    if files or exact:
        store.flush()
    return len(files | exact)


def stored_under(store: Store, paths: Sequence[str]) -> dict[str, StoredFile]:
    """What the store holds under each path (a folder, or one file)."""
    out: dict[str, StoredFile] = {}
    for path in paths:
        if os.path.isfile(path):
            out.update((p, sf) for p, sf in load_stored(store, os.path.dirname(path)).items() if p == path)
        else:
            out.update(load_stored(store, path))
    return out
