"""Indexing on a Ray cluster: the driver plans, Ray tasks decode, an actor pool encodes.

The driver runs today's indexer (``runner.index_paths``: discovery, the diff against the store, moves
and removals) and hands this module its encode stage. Each file is decoded by a Ray task
(``pipeline.decode_file``, on CPUs, retried when its worker dies); the decoded files go, a group at a
time, to the least busy encoder actor (one per GPU; a fraction of a CPU each on a CPU-only cluster, so
that decoding and encoding never wait on each other for a whole core). Points keep their
deterministic ids, so a killed run is resumed by running the same command.

Where the points go:

- a Qdrant server or cluster: each actor writes its points itself (``wait=False``); once every file
  is encoded the driver waits for the collection to be green and to hold every point written;
- the embedded store (Edge, or the in-process ":memory:" server): the actors hand the points back and
  the driver writes them, one upsert per group, as the sequential indexer does.

Either way the driver deletes a re-encoded file's stale points and counts a file done only once its
points are stored, with one progress bar.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mediasearch.errors import ConfigError, ModelError
from mediasearch.index.encode_core import Decoded, delete_stale, file_done, file_failed, file_points
from mediasearch.index.options import IndexOptions, IndexReport, Progress
from mediasearch.index.pipeline import EncodeStage, Tagger, decode_file
from mediasearch.index.plan import StoredFile
from mediasearch.lane import tune_openmp
from mediasearch.media.decode_pool import DecoderPool
from mediasearch.media.discover import FileEntry
from mediasearch.store.base import PointIn, Store

if TYPE_CHECKING:
    from mediasearch.clip.spec import Embedder

DECODE_CPUS = 0.5  # a decode task; two run per core while encoders hold their fractions
ENCODER_CPUS = 0.5  # an encoder actor on a CPU-only cluster (a whole core each for two actors deadlocks 2 cores)
WRITE_BATCH = 256  # points per request when an actor writes to a server
TASK_RETRIES = 3
ACTOR_RESTARTS = 2


@dataclass(frozen=True)
class RayOptions:
    """How to run on Ray: which cluster, how many encoder actors, where the points are written."""

    address: str | None = None  # None: the Ray this process already runs, else a new local one
    actors: int = 0  # 0: one per GPU of the cluster, or one on a CPU-only cluster
    num_cpus: int | None = None  # a new local cluster's CPUs (None: all of this machine's)
    write: str = "auto"  # "actors": straight into the server; "driver": handed back; auto: actors for a server
    server: tuple[str, str | None] | None = None  # (url, api key) the actors write to, when they do
    files_per_call: int = 0  # images per actor call (0: the batch size); a video goes alone


@dataclass
class Encoded:
    """What an actor returns for one file: its points (or only their ids, when it wrote them)."""

    entry: FileEntry
    old: StoredFile | None
    ids: list[str] = field(default_factory=list)
    points: list[PointIn] | None = None
    error: str | None = None
    fatal: bool = False


@dataclass(frozen=True)
class Preprocessor:
    """What a decode task needs of the model: its transform and input size (not its weights)."""

    transform: Callable[[Any], Any]
    image_size: int
    device: str = "cpu"  # decode tasks leave JPEGs to the CPU: the GPU path stacks on the encoder's device

    def preprocess(self, image: Any) -> Any:
        return self.transform(image)


class EncoderActor:
    """Loads the model once and turns decoded files into points (a Ray actor; plain class for tests)."""

    def __init__(
        self,
        load_model: Callable[[], Embedder],
        tagger: Tagger | None,
        server: tuple[str, str | None, str] | None,
        cpu_share: int = 0,
    ) -> None:
        tune_openmp()  # before torch loads in this worker: idle OpenMP threads spin less (see lane.py)
        # On CPUs, the encoders split the machine's cores: Ray's OMP_NUM_THREADS=1 for a fractional CPU
        # would leave cores idle (the sequential indexer's model, too, runs on every core).
        self.threads = max(1, (os.cpu_count() or 1) // cpu_share) if cpu_share else 0
        self.model = load_model()
        self.tagger = tagger
        self.store: Any = None
        if server is not None:
            from mediasearch.store.collections import open_store

            url, api_key, collection = server
            self.store = open_store(
                home=None,  # type: ignore[arg-type]  # a server needs no home
                collection=collection,
                dim=self.model.dim,
                qdrant_url=url,
                api_key=api_key,
                create=False,
            )

    def encode(self, *items: Decoded) -> list[Encoded]:
        """Encode the frames of ``items`` in model batches; write their points or hand them back."""
        good = [it for it in items if not it.fatal]
        vectors = self._vectors([t for it in good for t in it.tensors])
        out = [Encoded(it.entry, it.old, error=it.error, fatal=True) for it in items if it.fatal]
        start, written = 0, []
        for it in good:
            n = len(it.tensors)
            points = file_points(it, vectors[start : start + n], self.tagger)
            start += n
            written += points
            out.append(Encoded(it.entry, it.old, [p.id for p in points], points, it.error))
        if self.store is not None:
            for start in range(0, len(written), WRITE_BATCH):  # the server acknowledges, applies later
                self.store.upsert(written[start : start + WRITE_BATCH], wait=False)
            for e in out:
                e.points = None
        return out

    def _vectors(self, tensors: list[Any]) -> np.ndarray:
        import torch

        dim = int(getattr(self.model, "dim", 0))
        if self.threads and torch.get_num_threads() != self.threads:  # per thread: set where it encodes
            torch.set_num_threads(self.threads)
        if not tensors:
            return np.zeros((0, dim), np.float32)
        size = int(getattr(self.model, "batch_size", 32)) or 32
        from mediasearch.index.preprocess import stack_inputs
        from mediasearch.media.gpu_decode import geometry_of

        # Decode tasks hand over uint8 pixels when the transform is open_clip's (index/preprocess.py).
        geometry = geometry_of(getattr(self.model, "transform", None))
        parts = [
            self.model.encode_tensors(stack_inputs(tensors[i : i + size], geometry))
            for i in range(0, len(tensors), size)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def ready(self) -> bool:
        """Encode a tiny batch once: the first call pays for kernel selection (seconds on a CPU in bf16)."""
        import torch

        size = int(getattr(self.model, "image_size", 224))
        self._vectors([torch.zeros(3, size, size)] * 2)
        return True

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


_VIDEOS: dict[float, DecoderPool] = {}  # a Ray worker process's video decoder, by time limit


def _decode(entry: FileEntry, old: StoredFile | None, prep: Preprocessor, options: IndexOptions) -> Decoded:
    """A Ray task: one file decoded and preprocessed on a CPU (never raises for a bad file). A video is
    decoded in a decoder process under the indexing time limit, as the sequential indexer does: a file
    that hangs the decoder costs that file, not a task that never ends."""
    tune_openmp()
    import torch

    torch.set_num_threads(1)  # two or more of these share a core with the encoders
    videos = None
    if entry.kind == "video":
        videos = _VIDEOS.get(options.decode_timeout)
        if videos is None:  # one per Ray worker process, re-used task after task; it dies with the process
            videos = _VIDEOS[options.decode_timeout] = DecoderPool(1, options.decode_timeout)
    return decode_file(entry, old, cast("Embedder", prep), options, videos)


def encode_stage(load_model: Callable[[], Embedder], ray_options: RayOptions) -> EncodeStage:
    """The encode stage for ``runner.index_paths(..., encode=...)``, run on Ray."""

    def stage(
        work: Sequence[tuple[FileEntry, StoredFile | None]],
        model: Embedder,
        store: Store,
        options: IndexOptions,
        summary: IndexReport,
        progress: Progress,
        tagger: Tagger | None,
    ) -> None:
        if not work:
            progress.start(0)
            progress.finish()
            return
        with ray_session(ray_options.address, ray_options.num_cpus):
            _RayRun(load_model, ray_options, model, store, options, summary, progress, tagger).run(work)

    return stage


class ray_session:  # noqa: N801 - used as a context manager, like open()
    """Use the Ray this process runs, join ``address``, or start a local Ray; shut down only what it started."""

    def __init__(self, address: str | None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus, self.started = address, num_cpus, False

    def __enter__(self) -> ray_session:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--ray needs Ray: pip install 'mediasearch[ray]'") from exc
        if ray.is_initialized():
            return self
        if self.address:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        else:  # workers import this very copy of mediasearch (a checkout run with PYTHONPATH too)
            env = {"PYTHONPATH": _package_path()}
            tune_openmp(env)  # the workers' OpenMP spins as this process's does
            ray.init(num_cpus=self.num_cpus, log_to_driver=False, include_dashboard=False,
                     logging_level=logging.WARNING, runtime_env={"env_vars": env})
        self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _package_path() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above mediasearch/
    rest = os.environ.get("PYTHONPATH", "")
    return here + (os.pathsep + rest if rest else "")


class _RayRun:
    """One run's driver loop: decode tasks ahead of the actors, results written and counted in order."""

    def __init__(
        self,
        load_model: Callable[[], Embedder],
        ray_options: RayOptions,
        model: Embedder,
        store: Store,
        options: IndexOptions,
        summary: IndexReport,
        progress: Progress,
        tagger: Tagger | None,
    ) -> None:
        import ray

        self.store, self.options, self.summary, self.progress = store, options, summary, progress
        self.prep = ray.put(Preprocessor(model.transform, int(getattr(model, "image_size", 224))))  # type: ignore[attr-defined]
        self.group = ray_options.files_per_call or options.batch_size or int(getattr(model, "batch_size", 32)) or 32
        target = self._target(ray_options, store)
        self.actors = _start_actors(load_model, tagger, target, ray_options.actors)
        self.direct = target is not None
        self.written: list[str] = []

    @staticmethod
    def _target(ray_options: RayOptions, store: Store) -> tuple[str, str | None, str] | None:
        server = ray_options.server
        if ray_options.write == "driver" or server is None or server[0] == ":memory:":
            return None  # the in-process server lives in the driver: only it can write there
        return (server[0], server[1], store.collection)

    def run(self, work: Sequence[tuple[FileEntry, StoredFile | None]]) -> None:
        import ray

        self.progress.start(len(work))
        try:
            self._loop(_groups(work, self.group))
            if self.direct:
                wait_applied = getattr(self.store, "wait_applied", None)
                if wait_applied is not None:
                    wait_applied(self.written)
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.progress.finish()

    def _loop(self, groups: Iterator[list[tuple[FileEntry, StoredFile | None]]]) -> None:
        import ray

        decode = ray.remote(num_cpus=DECODE_CPUS, max_retries=TASK_RETRIES)(_decode)
        load = dict.fromkeys(range(len(self.actors)), 0)
        inflight: dict[Any, tuple[int, list[tuple[FileEntry, StoredFile | None]]]] = {}
        window = 2 * len(self.actors)  # each actor has one call running and one whose files decode
        pending = deque(groups)
        while pending or inflight:
            while pending and len(inflight) < window:
                group = pending.popleft()
                i = min(load, key=load.__getitem__)
                refs = [decode.remote(entry, old, self.prep, self.options) for entry, old in group]
                inflight[self.actors[i].encode.remote(*refs)] = (i, group)
                load[i] += 1
            ready, _ = ray.wait(list(inflight), num_returns=1)
            i, group = inflight.pop(ready[0])
            load[i] -= 1
            self._collect(ready[0], group)

    def _collect(self, ref: Any, group: list[tuple[FileEntry, StoredFile | None]]) -> None:
        import ray
        from ray.exceptions import RayError

        try:
            results: list[Encoded] = ray.get(ref)
        except RayError as exc:  # retried already: these files stay unindexed until the next run
            reason = f"encoding failed on the Ray cluster: {_first_line(exc)}"
            for entry, _ in group:
                file_failed(self.summary, self.progress, entry, reason, remember=False)
            return
        points = [p for e in results for p in e.points or ()]
        if points:
            self.store.upsert(points)
        for e in results:
            self._finish(e)

    def _finish(self, e: Encoded) -> None:
        if e.fatal:
            file_failed(self.summary, self.progress, e.entry, e.error or "cannot decode")
            return
        if self.direct:
            self.written += e.ids
        delete_stale(self.store, e.old, e.ids)
        file_done(self.summary, self.progress, e, len(e.ids))


def _start_actors(
    load_model: Callable[[], Embedder],
    tagger: Tagger | None,
    target: tuple[str, str | None, str] | None,
    wanted: int,
) -> list[Any]:
    """One encoder per GPU of the cluster (or ``wanted``); on CPUs, ``wanted`` or one, at a fraction of a CPU."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = wanted or gpus or 1
    resources = {"num_gpus": 1} if gpus else {"num_cpus": ENCODER_CPUS}
    cls: Any = ray.remote(**resources, max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)(EncoderActor)
    from ray.exceptions import RayError

    share = 0 if gpus else count  # CPU encoders split the cores among them, as the sequential model takes all
    actors: list[Any] = [cls.remote(load_model, tagger, target, share) for _ in range(count)]
    try:
        ray.get([a.ready.remote() for a in actors])  # a model that cannot load fails here, once
    except RayError as exc:
        for actor in actors:
            ray.kill(actor)
        raise ModelError(f"the encoders could not start on the Ray cluster: {_first_line(exc)}") from exc
    return actors


def _groups(
    work: Sequence[tuple[FileEntry, StoredFile | None]], size: int
) -> Iterator[list[tuple[FileEntry, StoredFile | None]]]:
    """Images ``size`` at a time; each video on its own (it can hold hundreds of frames)."""
    group: list[tuple[FileEntry, StoredFile | None]] = []
    for item in work:
        if item[0].kind == "video":
            yield [item]
            continue
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
