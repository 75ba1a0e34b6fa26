"""The enrichment pass: the signals besides the CLIP vector (metadata, places, OCR, faces), each made by
one *enricher* and recorded per point with its version, so that ``index`` runs what is missing or
outdated and nothing else (docs/architecture.md, "Signals and enrichers").

After the CLIP pass of a run (search works at once), :func:`enrich` finds the points under the run's
roots whose ``"enrichers"`` record lacks an enabled enricher or has an older version of it, groups them
by file, decodes each file's pixels once (at the largest size the pending enrichers want), runs each
pending enricher (metadata first; each later one reads the file's payload with what the earlier
ones wrote) and writes its fields together with its version in one ``set_payload`` per point: a
kill loses at most the file in hand, and the next run goes on from there. One enricher failing on one
file is one line in the report's errors. The model is never needed.

An enricher whose work is heavy and pure (faces, OCR) splits ``run`` in two (:class:`Concurrent`):
``compute`` (pixels in, results out; no store) runs in the pass's pool on several files at once, ahead
of the main thread, each call in one of ``lanes`` worker processes that the enricher opens for the pass;
``apply`` (what touches the store or the people) runs on the main thread, file after file in path order.
So a file's payload is written exactly as a one-lane pass writes it, and a file whose computation fails,
crashes its worker or overruns its time limit is one line in the errors while the others are enriched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from mediasearch.errors import MediaError, MediaSearchError
from mediasearch.fsutil import outermost
from mediasearch.index.options import IndexReport, NoProgress, Progress
from mediasearch.index.versions import ENRICHERS_KEY, record_of
from mediasearch.lane import usable_cpus
from mediasearch.media.discover import display_path, path_from_payload
from mediasearch.store.base import Filter, Store

if TYPE_CHECKING:
    import numpy as np

    from mediasearch.media.decode_pool import DecoderPool

SCAN_FIELDS = ("path", "path_raw", "kind", "timestamp", ENRICHERS_KEY)
META_KEY = "enrichers"  # collection meta: {name: version} of the enrichers that were on at the last pass
LANE_NICE = 10  # a pass's worker processes run this far below the caller: a daemon's queries come first


@dataclass(frozen=True)
class FrameInput:
    """One stored point of a file: an image's one point or a video frame's."""

    point_id: str
    timestamp: float | None  # None for an image
    pixels: np.ndarray | None  # HxWx3 uint8 RGB, long side <= the enricher's max_side; None for payload readers


@dataclass(frozen=True)
class FileInput:
    """One file as an enricher sees it: where it is, its stored payload, and the points to enrich."""

    path: str
    kind: str  # "image" | "video"
    payload: dict[str, Any]  # the stored payload of its first point (date, geo, camera, size, ...)
    frames: Sequence[FrameInput]


class Enricher(Protocol):
    """One signal. ``run`` gives, per point id, the payload fields to set; the pass records the version."""

    name: str  # "metadata", "places", "ocr", "faces" ("clip" is recorded by the CLIP pass)
    version: int  # bump it and `index` re-runs this enricher on every item, and nothing else
    reads: Literal["pixels", "payload"]
    max_side: int  # long side of the pixels it wants (0 for payload readers)
    fields: tuple[str, ...]  # the payload fields it writes (``drop_fields`` clears them)

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]: ...

    def drop(self, store: Store) -> None: ...  # turned off: delete its data (fields, side collections)

    def forget(self, point_ids: Sequence[str], store: Store) -> None: ...  # points left the index


@runtime_checkable
class Concurrent(Protocol):
    """An enricher whose heavy, pure part runs on several files at once (see the module's docstring)."""

    def lanes(self, count: int) -> contextlib.AbstractContextManager[None]: ...  # open for one pass

    def compute(self, item: FileInput) -> Any: ...  # any thread; no store; its result is picklable

    def apply(self, item: FileInput, computed: Any, store: Store) -> dict[str, dict[str, Any]]: ...  # main thread


@dataclass
class Pending:
    """One file's points that some enabled enricher has not done at its version."""

    path: str
    kind: str
    points: list[tuple[str, float | None, dict[str, int]]] = field(default_factory=list)  # id, timestamp, record
    todo: set[str] = field(default_factory=set)  # names of the enrichers that must run on it


def is_done(record: dict[str, int], enricher: Enricher) -> bool:
    return record.get(enricher.name) == enricher.version


def find_pending(store: Store, roots: Sequence[str], enrichers: Sequence[Enricher]) -> list[Pending]:
    """The files under ``roots`` (folders or files) with points some enricher has not done, in path order."""
    files: dict[str, Pending] = {}
    for rec in _scan(store, roots):
        record = record_of(rec.payload)
        todo = {e.name for e in enrichers if not is_done(record, e)}
        if not todo:
            continue
        path = path_from_payload(rec.payload)
        pending = files.get(path)
        if pending is None:
            pending = files[path] = Pending(path, str(rec.payload.get("kind", "image")))
        pending.points.append((rec.id, rec.payload.get("timestamp"), record))
        pending.todo |= todo
    return [files[p] for p in sorted(files)]


def _scan(store: Store, roots: Sequence[str]) -> Iterator[Any]:
    seen: set[str] = set()
    for root in outermost([os.path.abspath(r) for r in roots]):
        shown = display_path(root)
        for flt in (Filter(dir_prefix=shown), Filter(path=shown)):
            for rec in store.scroll(flt, fields=SCAN_FIELDS, batch=4096):
                if rec.id not in seen:
                    seen.add(rec.id)
                    yield rec


def enrich(
    store: Store,
    roots: Sequence[str],
    enrichers: Sequence[Enricher],
    summary: IndexReport,
    progress: Progress | None = None,
    *,
    workers: int = 0,
    videos: DecoderPool | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Run every enabled enricher on the points under ``roots`` that lack its current version.

    Counts go to ``summary.enriched`` (points per enricher), failures to its errors. ``stop`` (asked
    between files) ends the pass early: what is written stays, and the next pass goes on from there."""
    pending = find_pending(store, roots, enrichers)
    for e in enrichers:
        summary.enriched.setdefault(e.name, 0)
    if not pending:
        return
    progress = progress or NoProgress()
    progress.start(len(pending))
    by_name = {e.name: e for e in enrichers}
    workers = workers or min(4, usable_cpus())
    lanes = max(1, min(workers, usable_cpus(), len(pending)))  # files computed at once, never more than cores
    try:
        with contextlib.ExitStack() as opened:
            for e in enrichers:
                if isinstance(e, Concurrent):
                    opened.enter_context(e.lanes(lanes))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="enrich") as pool:
                # Pixels are decoded and computed on in the pool; results are written here, in order.
                ahead = _ahead(pool, pending, lambda p: _prepare(p, by_name, store, videos), 2 * workers, stop)
                for item, inputs in ahead:
                    _run_file(item, inputs, by_name, store, summary)
                    progress.advance(files=1, frames=len(item.points))
    finally:
        progress.finish()
    store.flush()


def _ahead(
    pool: ThreadPoolExecutor,
    items: Sequence[Pending],
    fn: Callable[[Pending], Any],
    ahead: int,
    stop: Callable[[], bool] | None,
) -> Iterator[tuple[Pending, Any]]:
    """``fn`` over ``items`` in the pool, at most ``ahead`` in flight, yielded in order."""
    futures: list[Any] = []
    queue = list(items)
    queue.reverse()
    while queue or futures:
        while queue and len(futures) < max(1, ahead):
            item = queue.pop()
            futures.append((item, pool.submit(fn, item)))
        item, future = futures.pop(0)
        if stop is not None and stop():
            for _, f in futures:
                f.cancel()
            return
        yield item, future.result()


@dataclass
class _Inputs:
    """One pending file decoded: its stored payload and its frames, or why it could not be read."""

    payload: dict[str, Any] = field(default_factory=dict)
    frames: dict[int, list[FrameInput]] = field(default_factory=dict)  # max_side -> frames (0: no pixels)
    error: str | None = None
    computed: dict[str, tuple[bool, Any]] = field(default_factory=dict)  # name -> (ok, result or error line)


def _prepare(item: Pending, by_name: dict[str, Enricher], store: Store, videos: DecoderPool | None) -> _Inputs:
    """The file decoded, then the heavy part of each of its concurrent enrichers computed (pool thread)."""
    out = _inputs(item, by_name, store, videos)
    records = {pid: record for pid, _, record in item.points}
    for name in sorted(item.todo):
        enricher = by_name[name]
        if not isinstance(enricher, Concurrent) or (enricher.reads == "pixels" and out.error is not None):
            continue
        todo = _todo(out, enricher, records)
        if not todo:
            continue
        try:
            out.computed[name] = (True, enricher.compute(FileInput(item.path, item.kind, out.payload, todo)))
        except MediaSearchError as exc:
            out.computed[name] = (False, str(exc))
        except Exception as exc:  # an enricher's bug must not stop the pass: one line, the file goes on
            out.computed[name] = (False, f"{type(exc).__name__}: {exc}")
    return out


def _todo(inputs: _Inputs, enricher: Enricher, records: dict[str, dict[str, int]]) -> list[FrameInput]:
    """The file's frames (at the enricher's size) that it has not done at its version."""
    frames = inputs.frames[enricher.max_side if enricher.reads == "pixels" else 0]
    return [f for f in frames if not is_done(records[f.point_id], enricher)]


def _inputs(item: Pending, by_name: dict[str, Enricher], store: Store, videos: DecoderPool | None) -> _Inputs:
    """The file's stored payload and, when a pending enricher reads pixels, its frames decoded once."""
    out = _Inputs()
    first = store.retrieve([item.points[0][0]])
    out.payload = dict(first[0].payload) if first else {}
    out.frames[0] = [FrameInput(pid, ts, None) for pid, ts, _ in item.points]
    sides = {by_name[n].max_side for n in item.todo if by_name[n].reads == "pixels"}
    if not sides:
        return out
    try:
        out.frames.update(_decode(item, max(sides), sides, videos))
    except MediaError as exc:
        out.error = str(exc)
    except OSError as exc:
        out.error = f"cannot read file: {exc.strerror or exc}"
    return out


def _decode(item: Pending, largest: int, sides: set[int], videos: DecoderPool | None) -> dict[int, list[FrameInput]]:
    """The pending points' pixels at each wanted long side, decoded once at the largest."""
    import numpy as np

    from mediasearch.media.decode import load_image
    from mediasearch.media.video import frames_at

    times = [ts for _, ts, _ in item.points]
    if item.kind == "video":
        wanted = [float(t or 0.0) for t in times]
        if videos is not None:
            sample = videos.call(
                item.path,
                "mediasearch.media.video:frames_at",
                {"times": wanted, "target": largest},
                frames=len(wanted),
            )
        else:
            sample = frames_at(item.path, wanted, target=largest)
        images = [_nearest(sample.frames, t).image for t in wanted]
    else:
        image, _ = load_image(item.path, target=largest, whole=True)  # the ends of a banner too
        images = [image]
    out: dict[int, list[FrameInput]] = {}
    for side in sides:
        scaled = [np.asarray(_fit(im, side), dtype=np.uint8) for im in images]
        out[side] = [FrameInput(pid, ts, px) for (pid, ts, _), px in zip(item.points, scaled, strict=True)]
    return out


def _nearest(frames: Sequence[Any], t: float) -> Any:
    return min(frames, key=lambda f: abs(f.timestamp - t))


def _fit(image: Any, side: int) -> Any:
    """The image with its long side at most ``side`` (RGB), shrunk by area averaging: the box filter
    costs a third of ``thumbnail``'s bicubic one (17 against 45 ms from 2000x1500 to 1500x1125 on one
    core), and a reduction needs no sharper filter (OCR's detector reduces its input by area
    averaging again)."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    if max(width, height) <= side:
        return image
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def _run_file(
    item: Pending, inputs: _Inputs, by_name: dict[str, Enricher], store: Store, summary: IndexReport
) -> None:
    """Run the file's pending enrichers and write each point's new fields with the versions, at once."""
    updates: dict[str, dict[str, Any]] = {pid: {} for pid, _, _ in item.points}
    records = {pid: dict(record) for pid, _, record in item.points}
    payload = dict(inputs.payload)  # what the later enrichers read: with what the earlier ones wrote
    first = item.points[0][0]  # whose stored payload that is
    for name in sorted(item.todo, key=lambda n: (n != "metadata", n)):  # metadata (dates, GPS) first
        enricher = by_name[name]
        if enricher.reads == "pixels" and inputs.error is not None:
            summary.error(item.path, f"{name}: {inputs.error}", failed=False)
            continue
        todo = _todo(inputs, enricher, records)
        if not todo:
            continue
        file_input = FileInput(item.path, item.kind, payload, todo)
        try:
            if name in inputs.computed:
                ok, computed = inputs.computed[name]
                if not ok:
                    summary.error(item.path, f"{name}: {computed}", failed=False)
                    continue
                fields = enricher.apply(file_input, computed, store)  # type: ignore[attr-defined]
            else:
                fields = enricher.run(file_input, store)
        except MediaSearchError as exc:
            summary.error(item.path, f"{name}: {exc}", failed=False)
            continue
        except Exception as exc:  # an enricher's bug must not stop the pass: one line, the file goes on
            summary.error(item.path, f"{name}: {type(exc).__name__}: {exc}", failed=False)
            continue
        for frame in todo:
            updates[frame.point_id].update(fields.get(frame.point_id, {}))
            records[frame.point_id][name] = enricher.version
        payload = {**payload, **fields.get(first, {})}
        summary.enriched[name] = summary.enriched.get(name, 0) + len(todo)
    _write(store, updates, records, item)


def _write(store: Store, updates: dict[str, dict[str, Any]], records: dict[str, dict[str, int]], item: Pending) -> None:
    """One set_payload per distinct payload (all the points of a file often share theirs)."""
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    before = {pid: record for pid, _, record in item.points}
    for pid, fields in updates.items():
        if records[pid] == before[pid]:
            continue  # nothing ran on it
        payload = {**fields, ENRICHERS_KEY: records[pid]}
        key = repr(sorted(payload.items(), key=lambda kv: kv[0]))
        groups.setdefault(key, ([], payload))[0].append(pid)
    for ids, payload in groups.values():
        store.set_payload(ids, payload)


def drop_fields(store: Store, enricher: Enricher) -> int:
    """Clear ``enricher``'s fields and its entry in the records of every point that has one; how many."""
    done = 0
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for rec in store.scroll(fields=(ENRICHERS_KEY,), batch=4096):
        record = record_of(rec.payload)
        if enricher.name not in record:
            continue
        record.pop(enricher.name)
        payload = {**dict.fromkeys(enricher.fields), ENRICHERS_KEY: record}
        key = repr(sorted(record.items()))
        groups.setdefault(key, ([], payload))[0].append(rec.id)
        done += 1
    for ids, payload in groups.values():
        for start in range(0, len(ids), 4096):
            store.set_payload(ids[start : start + 4096], payload)
    return done


def sync_enabled(store: Store, enabled: Sequence[Enricher], installed: Sequence[Enricher]) -> list[str]:
    """Drop the data of the installed enrichers that were on at the last pass and are off now; record
    the ones on. The names dropped."""
    meta = store.get_meta() or {}
    recorded = meta.get(META_KEY)
    before: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    on = {e.name for e in enabled}
    dropped = []
    for e in installed:
        if e.name not in on and e.name in before:
            e.drop(store)
            dropped.append(e.name)
    now = {e.name: e.version for e in enabled}
    if now != before:
        store.set_meta({**meta, META_KEY: now})
    return dropped

