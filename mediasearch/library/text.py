"""The ``text`` use case: what is written in a picture, or in a video's sampled frames.

An indexed file whose OCR pass is done answers from the index (no engine, no decoding); any other
file is read now, its video frames sampled as indexing samples them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mediasearch.errors import MediaError, MissingFileError, QueryError

if TYPE_CHECKING:
    from mediasearch.store.base import Store

READ_SIDE = 1500  # the long side a file read now is reduced to (index.enrichers.ocr.MAX_SIDE)
FRAME_INTERVAL_S = 2.0  # as indexing samples videos (IndexOptions)
MAX_FRAMES = 600


@dataclass
class TextLine:
    """One line: its text, confidence, box (left, top, right, bottom in [0, 1]) and, in a video, time."""

    text: str
    conf: float
    box: list[float]
    timestamp: float | None = None


@dataclass
class FileText:
    """``text --json``: the file, its kind, where the lines come from ("index" or "read") and the lines
    in reading order (by time, then top to bottom, for a video)."""

    path: str
    kind: str
    source: str
    lines: list[TextLine] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def file_text(store: Store | None, path: str) -> FileText:
    """The text of ``path``: from ``store`` when it holds the file's OCR, else read now."""
    from mediasearch.media.discover import display_path

    path = os.path.abspath(path)
    shown = display_path(path)
    stored = _from_index(store, shown) if store is not None else None
    if stored is not None:
        return stored
    if not os.path.isfile(path):
        raise MissingFileError(f"{shown}: no such file")
    try:
        return _read_now(path, shown)
    except MediaError as exc:
        raise QueryError(f"{shown}: {exc}") from None
    except OSError as exc:
        raise QueryError(f"{shown}: {exc.strerror or exc}") from None


def _from_index(store: Store, shown: str) -> FileText | None:
    from mediasearch.store.base import Filter

    fields = ("path", "kind", "timestamp", "ocr_lines", "enrichers")
    points = list(store.scroll(Filter(path=shown), fields=fields))
    if not points or any("ocr" not in (p.payload.get("enrichers") or {}) for p in points):
        return None
    points.sort(key=lambda p: p.payload.get("timestamp") or 0.0)
    lines = [
        TextLine(str(line["text"]), float(line["conf"]), list(line["box"]), p.payload.get("timestamp"))
        for p in points
        for line in p.payload.get("ocr_lines") or []
    ]
    return FileText(shown, str(points[0].payload.get("kind", "image")), "index", _deduplicated(lines))


def _read_now(path: str, shown: str) -> FileText:
    import numpy as np

    from mediasearch.media.decode import load_image, sample_video
    from mediasearch.media.discover import VIDEO_EXTS
    from mediasearch.ocr.engine import OcrEngine
    from mediasearch.ocr.frames import read_frames

    engine = OcrEngine()
    frames: list[tuple[float | None, Any]]
    if path.lower().rsplit(".", 1)[-1] in VIDEO_EXTS:
        sample = sample_video(path, interval=FRAME_INTERVAL_S, max_frames=MAX_FRAMES, target=READ_SIDE // 2)
        frames = [(f.timestamp, np.asarray(_fit(f.image))) for f in sample.frames]
        kind = "video"
    else:
        image, _ = load_image(path, target=READ_SIDE, whole=True)
        frames = [(None, np.asarray(_fit(image)))]
        kind = "image"
    lines = [
        TextLine(line.text, round(line.conf, 3), [round(v, 4) for v in line.box], timestamp)
        for timestamp, read in read_frames(engine, frames)
        for line in read
    ]
    return FileText(shown, kind, "read", _deduplicated(lines))


def _fit(image: Any) -> Any:
    image = image.convert("RGB")
    if max(image.size) > READ_SIDE:
        image = image.copy()
        image.thumbnail((READ_SIDE, READ_SIDE))
    return image


def _deduplicated(lines: list[TextLine]) -> list[TextLine]:
    """A video's line repeated on consecutive frames (a slide held on screen) is shown once, at the
    first frame that has it."""
    out: list[TextLine] = []
    last: dict[str, float | None] = {}
    for line in lines:
        if line.timestamp is not None and line.text in last and last[line.text] is not None:
            if line.timestamp - (last[line.text] or 0.0) <= FRAME_INTERVAL_S * 1.5:
                last[line.text] = line.timestamp
                continue
        last[line.text] = line.timestamp
        out.append(line)
    return out
