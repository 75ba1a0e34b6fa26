"""The encoding half of a run: decode a file (worker threads, videos in a process pool), encode in
batches on the model's lane, write each file's points in one upsert from a writer thread.

A file's new points are written before the points its old version no longer has are deleted; the plan
(``plan.StoredFile.complete``) redoes a file that a crash left between the two.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch import lane
from mediasearch.errors import MediaError
from mediasearch.index.encode_core import Decoded, delete_stale, file_done, file_failed, file_points
from mediasearch.index.options import IndexOptions, IndexReport, Progress
from mediasearch.index.plan import StoredFile
from mediasearch.media.decode_pool import DecoderPool
from mediasearch.media.discover import (
    FileEntry,
    fingerprint,
)
from mediasearch.store.base import PointIn, Store

if TYPE_CHECKING:
    import torch

    from mediasearch.clip.spec import Embedder

Tagger = Callable[[np.ndarray], list[list[str]]]

# The encode stage's signature: (work, model, store, options, summary, progress, tagger) -> None. The
# runner's own stage decodes in threads here; ``index.distributed`` gives one that runs on Ray.
EncodeStage = Callable[
    [
        Sequence[tuple[FileEntry, StoredFile | None]],
        "Embedder",
        Store,
        IndexOptions,
        IndexReport,
        Progress,
        "Tagger | None",
    ],
    None,
]


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
    from mediasearch.media.decode import load_image, sample_video

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
                out.timestamps, out.tensors = [None], [_preprocess(image, model)]
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
            out.tensors = [_preprocess(f.image, model) for f in sample.frames]
            if not out.tensors:
                out.error, out.fatal = sample.error or "no frame could be decoded", True
    except MediaError as exc:
        out.error, out.fatal = str(exc), True
    except OSError as exc:
        out.error, out.fatal = f"cannot read file: {exc.strerror or exc}", True
    return out


def _preprocess(image: Any, model: Embedder) -> torch.Tensor:
    """A decode worker's half of preprocessing: uint8 pixels when the batch is normalised as a whole
    (see ``preprocess``), else the model's own transform."""
    from mediasearch.index.preprocess import cpu_geometry, pixels

    geometry = cpu_geometry(model)
    out = pixels(image, geometry) if geometry is not None else None
    return out if out is not None else model.preprocess(image)


def _jpeg_for_gpu(path: str, model: Embedder) -> tuple[Any, Any] | None:
    """A JPEG's bytes and metadata when the model runs on CUDA and its transform can run there too."""
    if getattr(model, "device", "cpu") != "cuda":
        return None
    from mediasearch.media.gpu_decode import geometry_of, read_jpeg

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
    from mediasearch.clip.loading import BF16_MIN_PARAMS, image_tower_params

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

    def __init__(self, model: Embedder, store: Store, summary: IndexReport, progress: Progress, batch: int):
        self.model, self.store, self.summary = model, store, summary
        self.progress, self.batch = progress, batch
        self.queue: list[tuple[Decoded, int]] = []
        self.vectors: dict[int, dict[int, np.ndarray]] = {}
        self.files: dict[int, Decoded] = {}
        self.tagger: Callable[[np.ndarray], list[list[str]]] | None = None
        self.written: dict[int, list[str]] = {}  # a finished file's new point ids, until its stale ones go
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
        file_failed(self.summary, self.progress, item.entry, reason, remember=False)

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
            delete_stale(self.store, item.old, self.written.pop(id(item)))

    def _points(self, item: Decoded, vecs: dict[int, np.ndarray]) -> list[PointIn]:
        matrix = np.stack([vecs[i] for i in range(len(item.timestamps))])
        points = file_points(item, matrix, self.tagger)
        self.written[id(item)] = [p.id for p in points]
        return points

    def _finish(self, item: Decoded) -> None:
        file_done(self.summary, self.progress, item, len(item.timestamps))


def _stack(tensors: list[Any], model: Embedder) -> tuple[torch.Tensor, dict[int, str]]:
    """One batch tensor, and the items that could not be decoded (only JPEGs left for the GPU can fail
    here). For a GPU, CPU tensors go through pinned memory, so that the copy runs asynchronously."""
    import torch

    from mediasearch.media.gpu_decode import JpegBytes, geometry_of, prepare_batch

    device = getattr(model, "device", "cpu")
    if any(isinstance(t, JpegBytes) for t in tensors):
        geometry = geometry_of(getattr(model, "transform", None))
        assert geometry is not None  # _jpeg_for_gpu checked it
        return prepare_batch(tensors, geometry, device, lambda path: _cpu_input(path, model))
    if device == "cpu":  # on the lane, like the encoding, so that this thread starts no OpenMP team
        return lane.run(lambda: _cpu_batch(tensors, model)), {}
    if device != "cuda":
        return torch.stack(tensors), {}
    first = tensors[0]
    out = torch.empty((len(tensors), *first.shape), dtype=first.dtype, pin_memory=True)
    return torch.stack(tensors, out=out), {}


def _cpu_batch(tensors: list[Any], model: Embedder) -> torch.Tensor:
    """The batch from the workers' uint8 pixels (normalised here, in one pass) and float tensors."""
    from mediasearch.index.preprocess import cpu_geometry, stack_inputs

    return stack_inputs(tensors, cpu_geometry(model))


def _cpu_input(path: str, model: Embedder) -> torch.Tensor:
    from mediasearch.media.decode import load_image

    image, _ = load_image(path, target=getattr(model, "image_size", 224))
    return model.preprocess(image)

class _Empty:
    pass


_EMPTY: Any = _Empty()
