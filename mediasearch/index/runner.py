"""The indexer: plan (discover, diff against the store) → decode (worker pool) → encode (batched) → upsert.

Planning needs only the store, so a run with nothing to encode never loads the model. Every file's points
are written in one upsert as soon as its last frame is encoded (by a writer thread, while the next batch
encodes), so a crash loses at most the batches in flight; point ids derive from (path, timestamp), so a
re-run overwrites instead of duplicating. An update writes the new points, then deletes the old ones the
new version does not reuse: a crash between the two leaves a file whose points describe two versions,
which the next run's plan redoes (``plan.StoredFile.complete``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mediasearch.index.encode_core import Decoded, file_failed
from mediasearch.index.failures import FailureLog, remembered_reason
from mediasearch.index.mounts import MountLog
from mediasearch.index.options import IndexOptions, IndexReport, NoProgress, Progress
from mediasearch.index.pipeline import (
    EncodeStage,
    Tagger,
    _Encoder,
    _inference_threads,
    _one_torch_thread,
    _prefetch,
    decode_file,
)
from mediasearch.index.plan import Plan, StoredFile, apply_moves, make_plan, stored_under, under_any
from mediasearch.media.decode_pool import DecoderPool
from mediasearch.media.discover import FileEntry, discover, root_status
from mediasearch.store.base import Store

if TYPE_CHECKING:
    from mediasearch.clip.spec import Embedder

ModelLoader = Callable[[], tuple["Embedder", Tagger | None]]


def index_paths(
    roots: Sequence[str],
    model: Embedder | None,
    store: Store,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    tagger: Tagger | None = None,
    encode: EncodeStage | None = None,
    *,
    load_model: ModelLoader | None = None,
    exclude: Sequence[str | Path] = (),
    failures: FailureLog | None = None,
    mounts: MountLog | None = None,
) -> IndexReport:
    """Bring the store in step with the given folders (or files) and say what changed.

    Plans first; the model is needed only when something must be encoded: pass it, or ``load_model``
    (which gives the model and the tagger), called only then, so that a run with nothing to encode never
    imports torch. ``encode`` replaces the decode → encode → write stage (``index.distributed`` runs it
    on Ray); the plan, moves and removals stay here. Folders in ``exclude`` (the home's own) are not
    indexed. ``failures`` remembers the files that failed to decode: an unchanged one is listed with
    its reason and not decoded again (unless ``options.retry_failed``). ``mounts`` remembers the mount
    points under the roots: what is indexed under one that is now missing or empty is kept.
    """
    if model is None and load_model is None:
        raise ValueError("index_paths needs a model or a way to load one")
    options = options or IndexOptions()
    progress = progress or NoProgress()
    summary = IndexReport()
    started = time.perf_counter()
    plan = plan_roots(roots, store, options, summary, exclude, mounts)
    failures = failures if failures is not None else FailureLog(None)
    tried, held = _hold_back_failures(plan, failures, options, summary)
    apply_moves(store, plan.moves)
    if plan.removed:
        store.delete([i for sf in plan.removed for i in sf.ids])
    for entry, reason in plan.unreadable:
        summary.error(entry.path, reason)
    summary.moved, summary.removed, summary.unchanged = len(plan.moves), len(plan.removed), len(plan.unchanged)
    if plan.encode:
        if model is None:
            assert load_model is not None
            model, tagger = load_model()
        (encode or _encode_all)(plan.encode, model, store, options, summary, progress, tagger)
    if plan.moves or plan.removed or plan.encode:
        store.flush()
    _remember_failures(plan, failures, tried + held, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _hold_back_failures(
    plan: Plan, failures: FailureLog, options: IndexOptions, summary: IndexReport
) -> tuple[list[str], list[str]]:
    """Take the files that failed before, unchanged, out of the plan's work (each listed as failed with
    its reason); the paths of the files the run will try, and of those held back."""
    if options.retry_failed or not len(failures):
        return [entry.path for entry, _ in plan.encode], []
    work, held = [], []
    for entry, old in plan.encode:
        failure = failures.remembered(entry)
        if failure is None:
            work.append((entry, old))
        else:
            held.append(entry.path)
            summary.error(entry.path, remembered_reason(failure.reason))
    plan.encode = work
    return [entry.path for entry, _ in work], held


def _remember_failures(plan: Plan, failures: FailureLog, listed: list[str], summary: IndexReport) -> None:
    """Keep this run's decode failures; forget those of files that now decoded, or that are gone.
    ``listed``: the files the plan had to encode (tried, or held back as failing)."""
    failures.forget(p for p in plan_paths(plan.encode) if p not in summary.broken)
    for entry, reason in summary.broken.values():
        failures.record(entry, reason)
    seen = {e.path for e in plan.unchanged} | set(plan_paths(plan.moves)) | set(listed)
    seen |= set(plan_paths(plan.unreadable))
    failures.prune(lambda p: under_any(p, plan.read_roots) and not under_any(p, plan.protected) and p not in seen)
    failures.save()


def plan_paths(pairs: Sequence[tuple[FileEntry, object]]) -> list[str]:
    return [entry.path for entry, _ in pairs]


def plan_roots(
    roots: Sequence[str],
    store: Store,
    options: IndexOptions,
    summary: IndexReport,
    exclude: Sequence[str | Path] = (),
    mounts: MountLog | None = None,
) -> Plan:
    """One plan over every root: the files under the roots that are present and not empty, against what
    the store holds under them. A missing or empty root changes nothing (its files stay indexed) unless
    it lies inside a root that is present; a remembered mount point inside a root (``mounts``) that is
    missing or empty changes nothing either. Folders in ``exclude`` are not read: what the store holds
    under them is removed."""
    roots = list(dict.fromkeys(os.path.abspath(r) for r in roots))
    status = {root: root_status(root) for root in roots}
    ok = [root for root in roots if status[root] == "ok"]
    stored = stored_under(store, roots)
    for root in roots:
        if status[root] != "ok":
            _report_root(root, status[root], stored, ok, summary)
    errored: list[str] = _unmounted(ok, stored, mounts, summary)

    def on_error(path: str, reason: str) -> None:
        errored.append(path)  # an unreadable folder or file: what is indexed under it stays
        summary.error(path, reason)

    def on_skip(path: str) -> None:
        summary.skip(path)

    found = discover(ok, include_hidden=options.include_hidden, on_error=on_error, on_skip=on_skip, exclude=exclude)
    entries = list(found)
    summary.scanned = len(entries)
    plan = make_plan(entries, {p: sf for p, sf in stored.items() if under_any(p, ok)}, errored)
    plan.read_roots = ok
    return plan


def _unmounted(
    ok: list[str], stored: dict[str, StoredFile], mounts: MountLog | None, summary: IndexReport
) -> list[str]:
    """The remembered mount points under the roots read that are missing or empty now (each reported
    once when files are indexed under it): nothing under them is removed."""
    if mounts is None:
        return []
    mounts.update(ok)
    mounts.save()
    away = mounts.away(ok)
    for point, status in away:
        indexed = sum(under_any(p, [point]) for p in stored)
        if indexed:
            summary.error(
                point,
                f"mount point is {status} (unmounted disk?): the {indexed} files indexed under it are left "
                "as they are; forget it with `mediasearch forget` if it is gone for good",
                failed=False,
            )
    return [point for point, _ in away]


def _report_root(root: str, status: str, stored: dict[str, StoredFile], ok: list[str], summary: IndexReport) -> None:
    """Say why a missing or empty root was not read (an empty one inside a present root is not news)."""
    indexed = sum(under_any(p, [root]) for p in stored)
    if under_any(root, ok):  # inside a present root, which says what is there
        if status == "missing":
            summary.error(root, "no such file or folder")
    elif root in stored and indexed == 1:  # an indexed file that is gone
        summary.error(
            root,
            "no such file, but it is indexed: left as it is; forget it with `mediasearch forget` "
            "if it is gone for good (or index its folder)",
            failed=False,
        )
    elif indexed:
        summary.error(
            root,
            f"folder is {status} but {indexed} files under it are indexed: left as they are "
            "(unmounted disk?); forget it with `mediasearch forget` if it is gone for good",
            failed=False,
        )
    elif status == "missing":
        summary.error(root, "no such file or folder")


def _encode_all(
    work: Sequence[tuple[FileEntry, StoredFile | None]],
    model: Embedder,
    store: Store,
    options: IndexOptions,
    summary: IndexReport,
    progress: Progress,
    tagger: Tagger | None,
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
                file_failed(summary, progress, item.entry, item.error or "cannot decode")
                continue
            encoder.add(item)
        encoder.close()
    finally:
        encoder.shutdown()
        videos.close()
        torch.set_num_threads(threads)  # also the default of threads started later (the workers lowered it)
        progress.finish()
