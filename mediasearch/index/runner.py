"""The indexer: discover → diff against the store → decode (worker pool) → encode (batched) → upsert.

Every file's points are written in one upsert as soon as its last frame is encoded (by a writer thread,
while the next batch encodes), so a crash loses at most the batches in flight: the one being encoded
and the one being written; point ids derive from (path, timestamp), so a re-run overwrites instead of
duplicating, and a file whose stored point count is short of ``frames_total`` is redone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mediasearch.index.options import IndexOptions, IndexSummary, NoProgress, Progress
from mediasearch.index.pipeline import (
    Decoded,
    _Encoder,
    _inference_threads,
    _one_torch_thread,
    _prefetch,
    decode_file,
)
from mediasearch.index.plan import Plan, StoredFile, apply_moves, load_stored, make_plan
from mediasearch.media.decode_pool import DecoderPool
from mediasearch.media.discover import (
    FileEntry,
    discover,
    root_status,
)
from mediasearch.store.base import Store

if TYPE_CHECKING:

    from mediasearch.clip.spec import Embedder




# The encode stage's signature: (work, model, store, options, summary, progress, tagger) -> None.
EncodeStage = Callable[
    [
        Sequence[tuple[FileEntry, StoredFile | None]],
        "Embedder",
        Store,
        IndexOptions,
        IndexSummary,
        Progress,
        "Callable[[np.ndarray], list[list[str]]] | None",
    ],
    None,
]


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
    encode: EncodeStage | None = None,
) -> IndexSummary:
    """Bring the store in step with the given folders (or files) and say what changed.

    ``encode`` replaces the decode → encode → write stage (``index.distributed`` runs it on Ray); the
    plan, moves and removals stay here.
    """
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
    (encode or _encode_all)(work, model, store, options, summary, progress, tagger)
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
