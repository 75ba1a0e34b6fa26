"""The faces enricher: the faces of every picture and video frame (dlib, on a picture of at most
1024 px), kept in the faces store and grouped into people; each point's payload gets ``people`` (the
ids of the people in it, clearest face first) and ``faces`` (how many). Turned off (``faces = false``,
``index --no-faces``), it deletes every face and what was said about people. Faces never leave the
machine: the models ship in ``face-recognition-models``; nothing is downloaded.

In the enrichment pass the faces are found in ``lanes`` worker processes, several files at once
(``compute``: dlib holds the interpreter's lock for a whole call, so threads could not overlap), and
grouped into people on the main thread in file order (``apply``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mediasearch.faces.engine import MAX_SIDE
from mediasearch.index.enrich import LANE_NICE, FileInput, drop_fields
from mediasearch.settings import Settings
from mediasearch.store.base import Store

if TYPE_CHECKING:
    import numpy as np

    from mediasearch.faces.engine import Face
    from mediasearch.index.people import People
    from mediasearch.media.decode_pool import DecoderPool

FRAMES_FN = "mediasearch.faces.engine:faces_of_frames"  # what a worker process runs on one file's frames
PRELOAD = ("numpy", "dlib", "mediasearch.faces.engine")  # imported by a worker before its first file's clock
VERSION = 1  # bump when detection, alignment or the descriptor change: every item's faces are found again


class FacesEnricher:
    name = "faces"
    version = VERSION
    reads: Literal["pixels", "payload"] = "pixels"
    max_side = MAX_SIDE
    fields: tuple[str, ...] = ("people", "faces")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._people: People | None = None
        self._engine: _WorkerEngine | None = None
        self._pool: DecoderPool | None = None  # the pass's worker processes (``lanes``)

    def _book(self) -> People:
        if self._people is None:
            from mediasearch.index.people import acquire_people

            s = self.settings
            self._people = acquire_people(s.home, s.qdrant_url, s.qdrant_api_key)
        return self._people

    def _detector(self) -> Any:
        """The engine: in this process on the main thread (the command line); off it (a daemon, whose
        other threads answer requests), in a worker process, since dlib holds the interpreter's lock
        for the whole of a call (0.1-0.5 s), which would stall every request meanwhile."""
        if threading.current_thread() is threading.main_thread():
            from mediasearch.faces.engine import shared_engine

            return shared_engine()
        if self._engine is None:
            self._engine = _WorkerEngine()
        return self._engine

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        return self.apply(item, self.compute(item), store)

    @contextlib.contextmanager
    def lanes(self, count: int) -> Iterator[None]:
        """For one pass: up to ``count`` worker processes that find faces, one file each at a time."""
        from mediasearch.media.decode_pool import DecoderPool

        self._pool = DecoderPool(count, _WorkerEngine.TIMEOUT_S, FRAMES_FN, "the face finder", PRELOAD, nice=LANE_NICE)
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            pool.close()

    def compute(self, item: FileInput) -> list[list[Face]]:
        """The faces of each frame with pixels (clearest first), in a worker process of the pass when
        it has lanes open; else here (the main thread) or in a worker (any other thread)."""
        pixels = [f.pixels for f in item.frames if f.pixels is not None]
        pool = self._pool
        if pool is not None:
            found: list[list[Face]] = pool.call(item.path, FRAMES_FN, {"frames": pixels}, frames=len(pixels))
            return found
        engine = self._detector()
        return [engine.faces(p) for p in pixels]

    def apply(self, item: FileInput, computed: list[list[Face]], store: Store) -> dict[str, dict[str, Any]]:
        """The faces found grouped into people (the people book: main thread, file order)."""
        from mediasearch.index.people import people_of_faces

        frames = [(f.point_id, f.timestamp) for f in item.frames if f.pixels is not None]
        found = [(pid, ts, faces) for (pid, ts), faces in zip(frames, computed, strict=True)]
        return people_of_faces(self._book(), item.path, found, item.payload.get("fingerprint"))

    def drop(self, store: Store) -> None:
        drop_fields(store, self)
        self._book().clear()

    def forget(self, point_ids: Sequence[str], store: Store) -> None:
        self._book().forget_points(point_ids)

    def tidy(self, store: Store) -> int:
        """After a run that removed or moved files: their faces follow (``People.tidy``)."""
        from mediasearch.store.faces import faces_exist

        if self._people is None and not faces_exist(self.settings.home, self.settings.qdrant_url):
            return 0  # no face was ever found: nothing to keep in step (and no store to create)
        return self._book().tidy(store)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._people is not None:
            from mediasearch.index.people import release_people

            release_people(self._people)
            self._people = None

    def __del__(self) -> None:
        self.close()


class _WorkerEngine:
    """``FaceEngine.faces`` in a worker process of a ``media.decode_pool.DecoderPool`` (under its time
    limit: a picture that hangs or crashes dlib costs that file alone)."""

    TIMEOUT_S = 120.0  # the first call loads the models; a loaded machine is slow at it

    def __init__(self) -> None:
        from mediasearch.media.decode_pool import DecoderPool

        self._pool = DecoderPool(1, self.TIMEOUT_S, "mediasearch.faces.engine:faces_of_pixels")

    def faces(self, pixels: np.ndarray) -> list[Face]:
        found: list[Face] = self._pool.call("(pixels)", "mediasearch.faces.engine:faces_of_pixels", {"pixels": pixels})
        return found

    def close(self) -> None:
        self._pool.close()


def make(settings: Settings) -> FacesEnricher | None:
    """The faces enricher, or None when dlib or the face models are not installed."""
    import importlib.util

    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        return None
    return FacesEnricher(settings)
