"""The indexer: discover → diff against the store → decode (worker pool) → encode (batched) → upsert.

Every file's points are written in one upsert as soon as its last frame is encoded (by a writer thread,
while the next batch encodes), so a crash loses at most the batches in flight: the one being encoded
and the one being written; point ids derive from (path, timestamp), so a re-run overwrites instead of
duplicating, and a file whose stored point count is short of ``frames_total`` is redone.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mediasearch import lane
from mediasearch.decode_pool import DecoderPool
from mediasearch.discover import (
    FileEntry,
    ancestor_dirs,
    discover,
    display_path,
    fingerprint,
    path_from_payload,
    path_payload,
    root_status,
)
from mediasearch.errors import MediaError
from mediasearch.store import Filter, PointIn, Store, point_id

if TYPE_CHECKING:
    import torch

    from mediasearch.model import Embedder

# The store keeps payload floats to about 7 significant decimals of a second; closer than this is "same".
MTIME_TOLERANCE_S = 1e-5
STATE_FIELDS = ("path", "path_raw", "size", "mtime", "fingerprint", "frames_total", "kind", "timestamp")


@dataclass(frozen=True)
class IndexOptions:
    """How to sample and batch; defaults follow DESIGN.md."""

    frame_interval: float = 2.0
    max_frames: int = 600
    batch_size: int = 0  # 0: the model's own, chosen for its device
    workers: int = 0
    include_hidden: bool = False
    decode_timeout: float = 30.0  # per video, plus decode_pool.PER_FRAME_S per sampled frame
    exact_times: bool = False  # sample videos at exactly the planned times, not at keyframes near them


@dataclass
class IndexSummary:
    """What an index run did; ``to_json`` is the CLI contract."""

    scanned: int = 0
    skipped: int = 0  # files passed over for their extension (not a format mediasearch reads)
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)

    def error(self, path: str, reason: str, *, failed: bool = True) -> None:
        self.errors.append({"path": display_path(path), "error": reason})
        self.failed += int(failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "skipped": self.skipped,
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
        }


class Progress(Protocol):
    """Where the indexer reports progress; the CLI passes a rich bar, others nothing."""

    def start(self, files: int) -> None: ...

    def advance(self, files: int = 0, frames: int = 0) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, files: int) -> None:
        pass

    def advance(self, files: int = 0, frames: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass


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
    """The payload shared by all points of one file (DESIGN.md "The index remembers")."""
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
    else:
        payload["date"] = entry.mtime
    return payload


@dataclass
class Decoded:
    """One file, decoded and preprocessed by a worker."""

    entry: FileEntry
    old: StoredFile | None
    fingerprint: str = ""
    meta: Any = None
    timestamps: list[float | None] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)
    error: str | None = None
    fatal: bool = False


def decode_file(
    entry: FileEntry,
    old: StoredFile | None,
    model: Embedder,
    options: IndexOptions,
    videos: DecoderPool | None = None,
) -> Decoded:
    """Decode one file into preprocessed tensors; never raises for a bad file.

    Videos go through ``videos`` (worker processes with a time limit) when given.
    """
    from mediasearch.decode import load_image, sample_video

    out = Decoded(entry, old)
    try:
        out.fingerprint = fingerprint(entry.path, entry.size)
        target = getattr(model, "image_size", 224)
        if entry.kind == "image":
            jpeg = _jpeg_for_gpu(entry.path, model)
            if jpeg is not None:  # decoded with its batch, on the GPU
                out.timestamps, out.tensors, out.meta = [None], [jpeg[0]], jpeg[1]
            else:
                image, out.meta = load_image(entry.path, target=target)
                out.timestamps, out.tensors = [None], [model.preprocess(image)]
        else:
            sample = (videos.sample_video if videos is not None else sample_video)(
                entry.path,
                interval=options.frame_interval,
                max_frames=options.max_frames,
                target=target,
                exact=options.exact_times,
            )
            out.meta, out.error = sample.meta, sample.error
            out.timestamps = [f.timestamp for f in sample.frames]
            out.tensors = [model.preprocess(f.image) for f in sample.frames]
            if not out.tensors:
                out.error, out.fatal = sample.error or "no frame could be decoded", True
    except MediaError as exc:
        out.error, out.fatal = str(exc), True
    except OSError as exc:
        out.error, out.fatal = f"cannot read file: {exc.strerror or exc}", True
    return out


def _jpeg_for_gpu(path: str, model: Embedder) -> tuple[Any, Any] | None:
    """A JPEG's bytes and metadata when the model runs on CUDA and its transform can run there too."""
    if getattr(model, "device", "cpu") != "cuda":
        return None
    from mediasearch.gpu_decode import geometry_of, read_jpeg

    return read_jpeg(path) if geometry_of(getattr(model, "transform", None)) is not None else None


def _prefetch(
    items: Sequence[tuple[FileEntry, StoredFile | None]],
    fn: Callable[..., Decoded],
    workers: int,
    ahead: int = 0,
    initializer: Callable[[], None] | None = None,
) -> Iterator[Decoded]:
    """Run ``fn`` over items in a thread pool, yielding in order.

    Up to ``ahead`` files (at least 2 per worker) are decoded ahead of the consumer, so that the
    workers fill the next batch while the current one encodes; videos, which can hold hundreds of
    frames each, at most 2 per worker.
    """
    ahead = max(ahead, 2 * workers, 2)
    queue = deque(items)
    pending: deque[tuple[Future[Decoded], bool]] = deque()
    videos = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode", initializer=initializer) as pool:
        while queue or pending:
            while queue and len(pending) < ahead and (queue[0][0].kind != "video" or videos < 2 * workers):
                entry, old = queue.popleft()
                is_video = entry.kind == "video"
                videos += is_video
                pending.append((pool.submit(fn, entry, old), is_video))
            future, is_video = pending.popleft()
            videos -= is_video
            yield future.result()


def _inference_threads(model: Embedder, workers: int, threads: int) -> int:
    """All of ``threads`` for a real model; a tiny one (the demo) gets those the decode workers leave:
    its many small operations are slower split across busy cores than run on one."""
    from mediasearch.model import BF16_MIN_PARAMS, image_tower_params

    if image_tower_params(getattr(model, "model", None)) >= BF16_MIN_PARAMS:
        return threads
    return max(1, threads - workers)


def _one_torch_thread() -> None:
    """A decode worker's own torch work (preprocessing) on its own thread: several threads each with
    a team of OpenMP threads would oversubscribe the cores that inference needs (3-8x slower here)."""
    import torch

    torch.set_num_threads(1)


class _Encoder:
    """Accumulates frames into batches, encodes them, and writes each file once it is complete.

    Writes run on one writer thread while the next batch encodes; a batch's points are handed over
    only after the previous batch is written, so a crash loses at most the batch being written and
    the one being encoded, and files are counted done only once their points are stored.
    """

    def __init__(self, model: Embedder, store: Store, summary: IndexSummary, progress: Progress, batch: int):
        self.model, self.store, self.summary = model, store, summary
        self.progress, self.batch = progress, batch
        self.queue: list[tuple[Decoded, int]] = []
        self.vectors: dict[int, dict[int, np.ndarray]] = {}
        self.files: dict[int, Decoded] = {}
        self.tagger: Callable[[np.ndarray], list[list[str]]] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._writing: tuple[Future[None], list[Decoded]] | None = None

    def add(self, item: Decoded) -> None:
        key = id(item)
        self.files[key], self.vectors[key] = item, {}
        self.queue.extend((item, i) for i in range(len(item.tensors)))
        while len(self.queue) >= self.batch:
            self._run(self.queue[: self.batch])
            self.queue = self.queue[self.batch :]

    def close(self) -> None:
        """Encode what is left and wait until everything is written."""
        if self.queue:
            self._run(self.queue)
            self.queue = []
        self._wait()

    def shutdown(self) -> None:
        """Let a write in progress finish (the store stays consistent), start no other."""
        self._writer.shutdown(wait=True)

    def _run(self, chunk: list[tuple[Decoded, int]]) -> None:
        batch, failed = _stack([item.tensors[i] for item, i in chunk], self.model)
        if failed:  # JPEGs that neither the GPU nor the CPU could decode
            for k, reason in failed.items():
                self._drop(chunk[k][0], reason)
            chunk = [c for k, c in enumerate(chunk) if k not in failed]
            if not chunk:
                return
        feats = self.model.encode_tensors(batch)
        touched: dict[int, Decoded] = {}
        for (item, i), vec in zip(chunk, feats, strict=True):
            self.vectors[id(item)][i] = vec
            item.tensors[i] = _EMPTY
            touched[id(item)] = item
        points: list[PointIn] = []
        finished: list[Decoded] = []
        for key, item in touched.items():
            if len(self.vectors[key]) == len(item.tensors):
                points.extend(self._points(item, self.vectors.pop(key)))
                finished.append(self.files.pop(key))
        if finished:
            self._wait()
            self._writing = (self._writer.submit(self._write, points, finished), finished)

    def _drop(self, item: Decoded, reason: str) -> None:
        self.files.pop(id(item), None)
        self.vectors.pop(id(item), None)
        self.summary.error(item.entry.path, reason)
        self.progress.advance(files=1)

    def _wait(self) -> None:
        """Wait for the batch being written (its errors surface here), then count its files done."""
        if self._writing is None:
            return
        future, finished = self._writing
        self._writing = None
        future.result()
        for item in finished:
            self._finish(item)

    def _write(self, points: list[PointIn], finished: list[Decoded]) -> None:
        """On the writer thread: the new points, then the points the files no longer have."""
        if points:
            self.store.upsert(points)
        for item in finished:
            if item.old is not None:
                new_ids = {point_id(file_key(item.entry.path), ts) for ts in item.timestamps}
                stale = [i for i in item.old.ids if i not in new_ids]
                if stale:
                    self.store.delete(stale)

    def _points(self, item: Decoded, vecs: dict[int, np.ndarray]) -> list[PointIn]:
        base = file_payload(item.entry, item.fingerprint, len(item.timestamps), item.meta)
        matrix = np.stack([vecs[i] for i in range(len(item.timestamps))])
        if self.tagger is not None:
            tags = self.tagger(matrix)
        key = file_key(item.entry.path)
        points = []
        for i, ts in enumerate(item.timestamps):
            payload = {**base, "timestamp": ts}
            if self.tagger is not None:
                payload["tags"] = tags[i]
            points.append(PointIn(point_id(key, ts), matrix[i], payload))
        return points

    def _finish(self, item: Decoded) -> None:
        if item.old is not None and item.old.complete:
            self.summary.updated += 1
        else:
            self.summary.added += 1
        self.summary.frames += len(item.timestamps) if item.entry.kind == "video" else 0
        if item.error:
            self.summary.error(item.entry.path, f"partly read: {item.error}", failed=False)
        self.progress.advance(files=1, frames=len(item.timestamps))


def _stack(tensors: list[Any], model: Embedder) -> tuple[torch.Tensor, dict[int, str]]:
    """One batch tensor, and the items that could not be decoded (only JPEGs left for the GPU can fail
    here). For a GPU, CPU tensors go through pinned memory, so that the copy runs asynchronously."""
    import torch

    from mediasearch.gpu_decode import JpegBytes, geometry_of, prepare_batch

    device = getattr(model, "device", "cpu")
    if any(isinstance(t, JpegBytes) for t in tensors):
        geometry = geometry_of(getattr(model, "transform", None))
        assert geometry is not None  # _jpeg_for_gpu checked it
        return prepare_batch(tensors, geometry, device, lambda path: _cpu_input(path, model))
    if device == "cpu":  # on the lane, like the encoding, so that this thread starts no OpenMP team
        return lane.run(lambda: torch.stack(tensors)), {}
    if device != "cuda":
        return torch.stack(tensors), {}
    first = tensors[0]
    out = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=True)
    return torch.stack(tensors, out=out), {}


def _cpu_input(path: str, model: Embedder) -> torch.Tensor:
    from mediasearch.decode import load_image

    image, _ = load_image(path, target=getattr(model, "image_size", 224))
    return model.preprocess(image)


class _Empty:
    pass


_EMPTY: Any = _Empty()


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


def _scan_root(root: str, options: IndexOptions, summary: IndexSummary) -> tuple[list[FileEntry], list[str]]:
    errored: list[str] = []

    def on_error(path: str, reason: str) -> None:
        errored.append(path)
        summary.error(path, reason)

    def on_skip(path: str) -> None:
        summary.skipped += 1

    entries = list(discover([root], include_hidden=options.include_hidden, on_error=on_error, on_skip=on_skip))
    return entries, errored


def index_paths(
    roots: Sequence[str],
    model: Embedder,
    store: Store,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    tagger: Callable[[np.ndarray], list[list[str]]] | None = None,
) -> IndexSummary:
    """Bring the store in step with the given folders (or files) and say what changed."""
    options = options or IndexOptions()
    progress = progress or NoProgress()
    summary = IndexSummary()
    started = time.perf_counter()
    work: list[tuple[FileEntry, StoredFile | None]] = []
    for root in (os.path.abspath(r) for r in roots):
        plan = _plan_root(root, store, options, summary)
        if plan is None:
            continue
        apply_moves(store, plan.moves)
        if plan.removed:
            store.delete([i for sf in plan.removed for i in sf.ids])
        summary.moved += len(plan.moves)
        summary.removed += len(plan.removed)
        summary.unchanged += len(plan.unchanged)
        work.extend(plan.encode)
    _encode_all(work, model, store, options, summary, progress, tagger)
    store.flush()
    summary.seconds = time.perf_counter() - started
    return summary


def _plan_root(root: str, store: Store, options: IndexOptions, summary: IndexSummary) -> Plan | None:
    status = root_status(root)
    stored = load_stored(store, root)
    if status != "ok" and stored:
        summary.error(
            root,
            f"folder is {status} but {len(stored)} files under it are indexed: left as they are "
            "(unmounted disk?); forget it with `mediasearch forget` if it is gone for good",
            failed=False,
        )
        return None
    if status == "missing":
        summary.error(root, "no such file or folder")
        return None
    entries, errored = _scan_root(root, options, summary)
    summary.scanned += len(entries)
    return make_plan(entries, stored, errored)


def _encode_all(
    work: Sequence[tuple[FileEntry, StoredFile | None]],
    model: Embedder,
    store: Store,
    options: IndexOptions,
    summary: IndexSummary,
    progress: Progress,
    tagger: Callable[[np.ndarray], list[list[str]]] | None,
) -> None:
    import torch

    workers = options.workers or min(4, os.cpu_count() or 1)
    batch = options.batch_size or getattr(model, "batch_size", 32)
    encoder = _Encoder(model, store, summary, progress, batch)
    encoder.tagger = tagger
    progress.start(len(work))
    videos = DecoderPool(workers, options.decode_timeout)
    threads = torch.get_num_threads()  # this thread's own count: the workers' setting must not reach it
    torch.set_num_threads(_inference_threads(model, workers, threads))
    def decode(entry: FileEntry, old: StoredFile | None) -> Decoded:
        return decode_file(entry, old, model, options, videos)

    try:
        for item in _prefetch(work, decode, workers, ahead=batch + 2 * workers, initializer=_one_torch_thread):
            if item.fatal:
                summary.error(item.entry.path, item.error or "cannot decode")
                progress.advance(files=1)
                continue
            encoder.add(item)
        encoder.close()
    finally:
        encoder.shutdown()
        videos.close()
        torch.set_num_threads(threads)  # also the default of threads started later (the workers lowered it)
        progress.finish()


def forget(store: Store, folder: str) -> int:
    """Drop every point under ``folder``; returns how many files were dropped."""
    folder = os.path.abspath(folder)
    files = load_stored(store, folder)
    if files:
        store.delete_where(Filter(dir_prefix=display_path(folder)))
        store.flush()
    return len(files)
