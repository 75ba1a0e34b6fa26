"""The OCR enricher: the text written in each picture and sampled video frame (``mediasearch.ocr``).

It writes ``ocr_text`` (the normalised text with the extra words that let a whole-word match find
prefixes and digit-for-letter readings: ``ocr.text.index_text``; full-text indexed on both backends)
and ``ocr_lines`` (``[{"text", "conf", "box"}]``, the lines as read, box normalised to the picture).
A video frame that looks like the one before it (a slide held on screen) takes that frame's lines
instead of being read again (``ocr.frames``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mediasearch.index.enrich import FileInput, drop_fields
from mediasearch.settings import Settings
from mediasearch.store.base import Store

if TYPE_CHECKING:
    from mediasearch.ocr.engine import OcrEngine, TextLine

OCR_VERSION = 1  # bump when the engine or its settings read differently: `index` reads every item again
# The picture the lines are cut from (detection runs smaller: ocr.engine.DET_SIDE). 1500, not 1600: a
# 4000x3000 JPEG then decodes at half scale (DCT scaling), 4x fewer pixels than a full decode.
MAX_SIDE = 1500


class OcrEnricher:
    name = "ocr"
    version = OCR_VERSION
    reads: Literal["pixels", "payload"] = "pixels"
    max_side = MAX_SIDE
    fields: tuple[str, ...] = ("ocr_text", "ocr_lines")

    def __init__(self) -> None:
        self._engine: OcrEngine | None = None

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        from mediasearch.ocr.frames import read_frames

        frames = sorted(item.frames, key=lambda f: f.timestamp or 0.0)
        read = read_frames(self.engine, ((f.point_id, f.pixels) for f in frames if f.pixels is not None))
        return {point_id: fields_of(lines) for point_id, lines in read}

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
