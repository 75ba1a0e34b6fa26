"""Reading a sequence of video frames: a frame that looks like the one before it (a slide held on
screen, a paused shot) takes that frame's lines instead of being read again."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

    from mediasearch.ocr.engine import OcrEngine, TextLine

# A frame is "the same" as the one before when no pixel of their 64x64 grey copies differs by this much
# (0-255): compression noise stays well below it, a changed word on a slide goes above it.
SAME_FRAME = 12.0
K = TypeVar("K")


def read_frames(engine: OcrEngine, frames: Iterable[tuple[K, np.ndarray]]) -> Iterator[tuple[K, list[TextLine]]]:
    """(key, lines) for each (key, RGB pixels), in the order given (time order for a video)."""
    previous: tuple[np.ndarray, list[TextLine]] | None = None
    for key, pixels in frames:
        thumb = _thumb(pixels)
        if previous is not None and float(abs(previous[0] - thumb).max()) < SAME_FRAME:
            yield key, previous[1]
            continue
        lines = engine.read(pixels)
        previous = (thumb, lines)
        yield key, lines


def read_in_worker(
    path: str, *, frames: list[tuple[K, np.ndarray]], threads: int = 1
) -> list[tuple[K, list[TextLine]]]:
    """``read_frames`` as a worker process of the enrichment pass calls it (``path`` names the file)."""
    from mediasearch.ocr.engine import OcrEngine

    return list(read_frames(OcrEngine(threads=threads), frames))


def _thumb(pixels: np.ndarray) -> np.ndarray:
    import cv2
    import numpy as np

    array = np.asarray(pixels)
    grey = array.mean(axis=2) if array.ndim == 3 else array
    return cv2.resize(grey.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
