"""The OCR enricher: the text written in each picture and sampled video frame (``mediasearch.ocr``).

It writes ``ocr_text`` (the normalised text with the extra words that let a whole-word match find
prefixes and digit-for-letter readings: ``ocr.text.index_text``; full-text indexed on both backends)
and ``ocr_lines`` (``[{"text", "conf", "box"}]``, the lines as read, box normalised to the picture).
A video frame that looks like the one before it (a slide held on screen) takes that frame's lines
instead of being read again (``ocr.frames``).

In the enrichment pass the pictures are read in ``lanes`` worker processes, several files at once, each
on one core (``compute``; a picture that hangs or crashes the engine costs that file alone), and the
fields are made on the main thread (``apply``).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mediasearch.index.enrich import LANE_NICE, FileInput, drop_fields
from mediasearch.settings import Settings
from mediasearch.store.base import Store

if TYPE_CHECKING:
    from mediasearch.media.decode_pool import DecoderPool
    from mediasearch.ocr.engine import OcrEngine, TextLine

# Bump when the engine or its settings read differently: `index` reads every item again.
# 2: pictures read whole (not CLIP's 4:1 crop), small ones framed for detection, flipped lines read both ways.
OCR_VERSION = 2
# The picture the lines are cut from (detection runs smaller: ocr.engine.DET_SIDE). 1500, not 1600: a
# 4000x3000 JPEG then decodes at half scale (DCT scaling), 4x fewer pixels than a full decode.
MAX_SIDE = 1500
FRAMES_FN = "mediasearch.ocr.frames:read_in_worker"  # what a worker process runs on one file's frames
PRELOAD = ("numpy", "cv2", "rapidocr_onnxruntime", "mediasearch.ocr.engine", "mediasearch.ocr.frames")
TIMEOUT_S = 120.0  # per file, plus decode_pool.PER_FRAME_S per frame (the first file loads the models)


class OcrEnricher:
    name = "ocr"
    version = OCR_VERSION
    reads: Literal["pixels", "payload"] = "pixels"
    max_side = MAX_SIDE
    fields: tuple[str, ...] = ("ocr_text", "ocr_lines")

    def __init__(self) -> None:
        self._engine: OcrEngine | None = None
        self._pool: DecoderPool | None = None  # the pass's worker processes (``lanes``)
        self._threads = 0  # onnxruntime threads per worker

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        return self.apply(item, self.compute(item), store)

    @contextlib.contextmanager
    def lanes(self, count: int) -> Iterator[None]:
        """For one pass: up to ``count`` worker processes that read pictures, one file each at a time,
        sharing the usable cores (one each on a machine with as many cores as lanes)."""
        from mediasearch.lane import usable_cpus
        from mediasearch.media.decode_pool import DecoderPool

        self._pool = DecoderPool(count, TIMEOUT_S, FRAMES_FN, "the text reader", PRELOAD, nice=LANE_NICE)
        self._threads = max(1, usable_cpus() // count)
        try:
            yield
        finally:
            pool, self._pool = self._pool, None
            pool.close()

    def compute(self, item: FileInput) -> list[tuple[str, list[TextLine]]]:
        """(point id, lines) of the frames with pixels, in time order; in a worker process of the pass
        when it has lanes open, else in this process."""
        from mediasearch.ocr.frames import read_frames

        frames = sorted(item.frames, key=lambda f: f.timestamp or 0.0)
        pictures = [(f.point_id, f.pixels) for f in frames if f.pixels is not None]
        pool = self._pool
        if pool is not None:
            kwargs = {"frames": pictures, "threads": self._threads}
            read: list[tuple[str, list[TextLine]]] = pool.call(item.path, FRAMES_FN, kwargs, frames=len(pictures))
            return read
        return list(read_frames(self.engine, pictures))

    def apply(
        self, item: FileInput, computed: list[tuple[str, list[TextLine]]], store: Store
    ) -> dict[str, dict[str, Any]]:
        return {point_id: fields_of(lines) for point_id, lines in computed}

    @property
    def engine(self) -> OcrEngine:
        if self._engine is None:
            from mediasearch.ocr.engine import OcrEngine

            self._engine = OcrEngine()
        return self._engine

    def drop(self, store: Store) -> None:
        drop_fields(store, self)

    def forget(self, point_ids: Sequence[str], store: Store) -> None:
        pass  # all in the points' payloads: they go with them


def fields_of(lines: Sequence[TextLine]) -> dict[str, Any]:
    """The payload fields for the lines read in one picture."""
    from mediasearch.ocr.text import index_text

    return {
        "ocr_text": index_text([line.text for line in lines]) or None,
        "ocr_lines": [line.as_dict() for line in lines],
    }


def make(settings: Settings) -> OcrEnricher | None:
    """The enricher, or None where rapidocr-onnxruntime is not installed."""
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        return None
    return OcrEnricher()
