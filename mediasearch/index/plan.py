"""The plan: what the store holds for some roots, how that differs from the files under them (unchanged,
to encode, moved, removed), the moves applied, and ``forget``.

One plan covers every root of a run, so a file under nested roots is planned once and a file moved from
one root to another is a move. What the store holds for a file is judged by the exact set of its points:
one per planned frame, all describing the same version of the file (size, mtime, fingerprint); anything
else (an update stopped between writing the new points and deleting the old) is redone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mediasearch.errors import MediaError
from mediasearch.fsutil import outermost, under
from mediasearch.index.versions import ENRICHERS_KEY, encoded_record
from mediasearch.media.discover import (
    FileEntry,
    ancestor_dirs,
    display_path,
    fingerprint,
    path_from_payload,
    path_payload,
)
from mediasearch.store.base import Filter, PointIn, Record, Store, point_id

# The store keeps payload floats to about 7 significant decimals of a second; closer than this is "same".
MTIME_TOLERANCE_S = 1e-5
STATE_FIELDS = ("path", "path_raw", "size", "mtime", "fingerprint", "frames_total", "kind", "timestamp")


@dataclass
class StoredFile:
    """What the store holds for one file: the version of it (size, mtime, fingerprint) its points describe.

    ``consistent`` is False when the file's points describe more than one version: an update that wrote
    the new points and was stopped before it deleted the old ones. Such a file is redone, which deletes
    every id it had that the new version does not reuse.
    """

    path: str
    size: int
    mtime: float
    fingerprint: str
    frames_total: int
    kind: str
    ids: list[str] = field(default_factory=list)
    timestamps: list[float | None] = field(default_factory=list)
    consistent: bool = True

    @property
    def complete(self) -> bool:
        """Exactly the points a run over this version writes: one per planned frame, all of one version.

        (Each file's points are written in one upsert, so a version's frame set is all there or absent.)
        """
        return self.consistent and len(self.ids) == self.frames_total == len(set(self.timestamps))

    def add(self, record_id: str, payload: dict[str, Any]) -> None:
        """Count one more point of this file."""
        self.ids.append(record_id)
        self.timestamps.append(payload.get("timestamp"))
        if _version(payload) != (self.size, self.mtime, self.fingerprint, self.frames_total, self.kind):
            self.consistent = False


def _version(p: dict[str, Any]) -> tuple[int, float, str, int, str]:
    return int(p["size"]), float(p["mtime"]), str(p["fingerprint"]), int(p["frames_total"]), str(p["kind"])


@dataclass
class Plan:
    """The diff between the files under some roots and the store."""

    unchanged: list[FileEntry] = field(default_factory=list)
    encode: list[tuple[FileEntry, StoredFile | None]] = field(default_factory=list)
    moves: list[tuple[FileEntry, StoredFile]] = field(default_factory=list)
    removed: list[StoredFile] = field(default_factory=list)
    unreadable: list[tuple[FileEntry, str]] = field(default_factory=list)  # found, but could not be read
    read_roots: list[str] = field(default_factory=list)  # the roots whose files were listed
    protected: list[str] = field(default_factory=list)  # paths under them whose files were not (unreadable)


def file_key(path: str) -> str:
    """A str form of the real path bytes (safe for names that are not UTF-8), for point ids."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_stored(store: Store, folder: str) -> dict[str, StoredFile]:
    """Every file the store holds under ``folder``, keyed by its real path."""
    return _collect(store.scroll(Filter(dir_prefix=display_path(folder)), fields=STATE_FIELDS, batch=4096))


def load_stored_file(store: Store, path: str) -> dict[str, StoredFile]:
    """What the store holds for the one file ``path`` (nothing, or one entry)."""
    records = store.scroll(Filter(path=display_path(path)), fields=STATE_FIELDS)
    return {p: sf for p, sf in _collect(records).items() if p == path}  # a lossy shown name may match others


def _collect(records: Iterable[Record]) -> dict[str, StoredFile]:
    files: dict[str, StoredFile] = {}
    for rec in records:
        p = rec.payload
        path = path_from_payload(p)
        sf = files.get(path)
        if sf is None:
            size, mtime, fprint, frames_total, kind = _version(p)
            sf = files[path] = StoredFile(path, size, mtime, fprint, frames_total, kind)
        sf.add(rec.id, p)
    return files


def stored_under(store: Store, paths: Sequence[str]) -> dict[str, StoredFile]:
    """What the store holds under each path (a folder, or one file), each file once however they nest.

    A path is looked up both ways, whatever is on disk now: a file that was deleted (or replaced by a
    folder) since it was indexed is still what the store holds at that path (`forget` drops it too)."""
    out: dict[str, StoredFile] = {}
    for path in outermost([os.path.abspath(p) for p in paths]):
        out.update(load_stored(store, path))
        out.update(load_stored_file(store, path))
    return out


def under_any(path: str, dirs: Sequence[str]) -> bool:
    """True when ``path`` is one of ``dirs`` or inside one of them."""
    return any(under(path, d) for d in dirs)


def make_plan(entries: Sequence[FileEntry], stored: dict[str, StoredFile], protected: Sequence[str]) -> Plan:
    """Sort files into unchanged / to encode / moved / removed. ``protected`` paths are never removed.

    ``stored`` is what the store holds under the same roots as ``entries``; one plan over all of them,
    so that a file moved from one root to another is a move.
    """
    plan = Plan(protected=list(protected))
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
    gone = [sf for path, sf in stored.items() if path not in seen and not under_any(path, protected)]
    by_print: dict[tuple[int, str], list[StoredFile]] = {}
    for sf in gone:
        if sf.complete:
            by_print.setdefault((sf.size, sf.fingerprint), []).append(sf)
    sizes = {size for size, _ in by_print}
    for entry in new:
        candidates = None
        if entry.size in sizes:
            try:
                candidates = by_print.get((entry.size, fingerprint(entry.path, entry.size)))
            except MediaError as exc:  # gone or unreadable since discovery: listed, the run goes on
                plan.unreadable.append((entry, str(exc)))
                continue
        if candidates:
            plan.moves.append((entry, candidates.pop()))
        else:
            plan.encode.append((entry, None))
    moved_from = {id(sf) for _, sf in plan.moves}
    plan.removed = [sf for sf in gone if id(sf) not in moved_from]
    return plan


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
        ENRICHERS_KEY: encoded_record(),
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
            # A file without a capture date is dated by its mtime (file_payload): a copy-then-delete move
            # has a new mtime, so a new date, as a clean run would give it.
            if isinstance(payload.get("date"), int | float) and abs(payload["date"] - old.mtime) < MTIME_TOLERANCE_S:
                payload["date"] = entry.mtime
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
