"""The OCR engine: PP-OCRv4 detection and recognition (rapidocr-onnxruntime's bundled ONNX models).

Detection runs on a reduced copy of the picture (long side ``DET_SIDE``); only where it finds boxes
are the lines cut out of the larger picture, turned upright by the angle classifier and recognised,
so a picture without text costs one detector pass. Sessions are built once per thread count and
shared; onnxruntime runs them on at most ``threads`` cores.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mediasearch.errors import MediaError
from mediasearch.lane import usable_cpus
from mediasearch.ocr.junk import keep_line

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DET_SIDE = 640  # the first detection, long side: a photo without text costs a 640x480 pass
FINE_SIDE = 1600  # a second detection at up to this size where the first found only small print
FINE_BELOW = 14  # px: lines lower than this in the first pass are read again from the larger pass
REC_SIDE = 2560  # lines are cut out of the picture reduced to at most this long side
DET_BOX_THRESH = 0.5  # mean text probability inside a box for the detector to keep it
DET_UNCLIP = 1.6  # how far a box grows around the text core (PaddleOCR's default)
MIN_SIDE = 32  # smaller pictures are padded up to this before detection
# A picture smaller than the detection size is enlarged to it inside a frame of its border colour, up
# to half its short side wide: in a tight crop (a word that fills the picture) the text touches the
# edge, where the detector finds no box or a cut one (PaddleOCR users pad such crops). At the unclip
# ratio 1.6 a box reaches about 0.4 of the text's height past its letters; half the short side clears
# that for text as tall as the picture.
FRAME = 0.5


@dataclass(frozen=True)
class TextLine:
    """One recognised line: its text, the recogniser's confidence, and its box normalised to the
    picture (left, top, right, bottom in [0, 1])."""

    text: str
    conf: float
    box: tuple[float, float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """The payload / JSON form: {"text", "conf", "box"}."""
        return {"text": self.text, "conf": round(self.conf, 3), "box": [round(v, 4) for v in self.box]}


class OcrEngine:
    """Reads the text in pictures; ``threads`` bounds the cores onnxruntime uses (default: at most 2)."""

    def __init__(self, *, threads: int | None = None, det_side: int = DET_SIDE, detector: str | None = None) -> None:
        self.threads = max(1, threads if threads is not None else min(2, usable_cpus()))
        self.det_side = det_side
        self.detector = detector or detector_runtime()
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown OCR detector runtime {self.detector!r} (one of: {', '.join(DETECTORS)})")
        self._parts = _parts(self.threads, self.detector)

    def read(self, picture: Image.Image | np.ndarray) -> list[TextLine]:
        """The lines written in ``picture`` (PIL image or RGB array), top to bottom; junk left out."""
        rgb = _as_rgb(picture)
        height, width = rgb.shape[:2]
        if min(height, width) < 2:
            return []
        big, _ = _reduced(rgb, REC_SIDE)
        boxes = self.detect_boxes(big)
        if not boxes:
            return []
        results = self._recognised([_crop(big, box) for box in boxes])
        lines = []
        for box, (text, conf) in zip(boxes, results, strict=True):
            line = TextLine(text.strip(), conf, _normalised(box, big.shape[1], big.shape[0]))
            if keep_line(line.text, line.conf):
                lines.append(line)
        return lines

    def _recognised(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, confidence) of each line crop, turned upright first where the angle classifier says
        it is upside down."""
        parts = self._parts
        with parts.lock:
            turned, verdicts, _ = parts.cls(crops)
            results = [(str(text), float(conf)) for text, conf, *_rest in parts.rec(turned)[0]]
            # The lines it turned: said upside down, surely enough (its own rule)
            flipped = [i for i, (label, sure) in enumerate(verdicts) if "180" in label and sure > parts.cls.cls_thresh]
            if flipped:
                # The classifier takes some upright lines for upside down ones (red print on a dark
                # sign, 0.98 sure), and the recogniser reads nothing in them turned: read them as they
                # are too and keep the more confident reading. Only flipped lines cost a second read.
                again, _ = parts.rec([crops[i] for i in flipped])
                for i, (text, conf, *_rest) in zip(flipped, again, strict=True):
                    if float(conf) > results[i][1]:
                        results[i] = (str(text), float(conf))
        return results

    def detect_boxes(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Quadrilaterals (4x2 float32, in ``rgb``'s pixels) around the text, top to bottom."""
        boxes, scale = self._detect(rgb, self.det_side, frame=True)
        if boxes and scale < 1.0 and self.det_side < FINE_SIDE:
            # Small print (a document, a receipt, a page) is found but cut into pieces or missed at the
            # first size: detect again at a larger one. Pictures without text never get here.
            low = min(float(box[:, 1].max() - box[:, 1].min()) for box in boxes) * scale
            if low < FINE_BELOW:
                boxes, scale = self._detect(rgb, FINE_SIDE, frame=False)
        if not boxes:
            return []
        height, width = rgb.shape[:2]
        for box in boxes:
            box[:, 0] = box[:, 0].clip(0, width - 1)
            box[:, 1] = box[:, 1].clip(0, height - 1)
        return _reading_order(boxes)

    def _detect(self, rgb: np.ndarray, side: int, *, frame: bool) -> tuple[list[np.ndarray], float]:
        """The detector's boxes in ``rgb``'s pixels, and the scale it saw the picture at; with ``frame``,
        a picture smaller than ``side`` is framed and enlarged to it (`_framed`), else taken as it is
        (the second, larger pass over small print never enlarges)."""
        import numpy as np

        height, width = rgb.shape[:2]
        if frame and max(height, width) < side:
            small, scale, margin = _framed(rgb, side)
        else:
            (small, scale), margin = _reduced(rgb, side), 0
        small = _padded(small)
        parts = self._parts
        with parts.lock:
            boxes, _ = parts.det(small[:, :, ::-1])  # the Paddle models read BGR
        if boxes is None:
            return [], scale
        return [(np.asarray(box, dtype=np.float32) - margin) / scale for box in boxes], scale


@dataclass
class _Parts:
    det: Any
    cls: Any
    rec: Any
    lock: threading.Lock


@functools.lru_cache(maxsize=4)
def _parts(threads: int, detector: str) -> _Parts:
    """The detector (on ``detector``: one of ``DETECTORS``), angle classifier and recogniser, built once
    per thread count and runtime."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:  # pragma: no cover - a broken install
        raise MediaError(f"OCR needs the rapidocr-onnxruntime package ({exc})") from exc
    ocr = RapidOCR(
        intra_op_num_threads=threads,
        inter_op_num_threads=1,
        det_limit_type="max",
        det_limit_side_len=FINE_SIDE * 2,  # inputs arrive reduced already; never upscaled here
        det_box_thresh=DET_BOX_THRESH,
        det_unclip_ratio=DET_UNCLIP,
    )
    det = ocr.text_det
    if detector == "openvino bf16":
        det.infer = _OpenVinoDetector(det.infer.session._model_path, threads)
    # One session per part, used by one thread at a time (onnxruntime sessions are thread-safe, but
    # two concurrent runs on 2 cores only contend).
    return _Parts(det, ocr.text_cls, ocr.text_rec, threading.Lock())


def detector_runtime() -> str:
    """Where the text detector runs: ``openvino bf16`` on a CPU that multiplies bf16 natively (AVX512-BF16,
    AMX) with the ``openvino`` package installed — 2.2x faster than onnxruntime's fp32 here, finding
    the same lines (tests/ocr/test_detector_runtime.py) — else ``onnxruntime`` (its fp32, as shipped).
    ``MEDIASEARCH_OCR_DETECTOR=onnxruntime`` keeps onnxruntime everywhere. The recogniser and the angle
    classifier stay on onnxruntime fp32: a bf16 rounding there can change a character."""
    import importlib.util
    import os

    from mediasearch.cpuinfo import cpu_has_native_bf16

    if os.environ.get(DETECTOR_ENV, "").strip().lower() == "onnxruntime":
        return "onnxruntime"
    if cpu_has_native_bf16() and importlib.util.find_spec("openvino") is not None:
        return "openvino bf16"
    return "onnxruntime"


DETECTOR_ENV = "MEDIASEARCH_OCR_DETECTOR"
DETECTORS = ("onnxruntime", "openvino bf16")


class _OpenVinoDetector:
    """The detector's ONNX graph compiled by OpenVINO for bf16, called as rapidocr calls its session
    (one NCHW float32 batch in, ``[probability map]`` out); pictures of any size (dynamic shapes)."""

    def __init__(self, model_path: str, threads: int) -> None:
        import openvino

        core = openvino.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16"}
        self._compiled = core.compile_model(core.read_model(model_path), "CPU", config)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return [next(iter(self._compiled(batch).values()))]


def _as_rgb(picture: Image.Image | np.ndarray) -> np.ndarray:
    import numpy as np

    if isinstance(picture, np.ndarray):
        array = picture
    else:
        array = np.asarray(picture.convert("RGB"))
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[2] < 3:
        raise MediaError(f"OCR needs an RGB picture, got an array of shape {array.shape}")
    return np.ascontiguousarray(array[:, :, :3].astype(np.uint8, copy=False))


def _reduced(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """``rgb`` shrunk so its long side is at most ``side`` (area averaging), and the scale used."""
    import cv2

    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale >= 1.0:
        return rgb, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _framed(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float, int]:
    """A picture smaller than ``side``: enlarged so that it and a frame of its border colour, ``FRAME``
    of its short side wide or what room is left, make a long side of ``side`` (never shrunk: the frame
    narrows instead). Returns the framed picture, the scale and the frame's width in its pixels."""
    import cv2
    import numpy as np

    height, width = rgb.shape[:2]
    long_side = max(height, width)
    frame = min(FRAME * min(height, width), (side - long_side) / 2)
    scale = side / (long_side + 2 * frame)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    inner = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC) if scale > 1.0 else rgb
    margin = round(frame * scale)
    edges = np.concatenate([inner[0], inner[-1], inner[:, 0], inner[:, -1]])
    out = np.empty((size[1] + 2 * margin, size[0] + 2 * margin, 3), dtype=np.uint8)
    out[:] = np.median(edges, axis=0).astype(np.uint8)
    out[margin : margin + size[1], margin : margin + size[0]] = inner
    return out, scale, margin


def _padded(rgb: np.ndarray) -> np.ndarray:
    """Pad a tiny picture with its edge colour so the detector (strides of 32) can read it."""
    import numpy as np

    height, width = rgb.shape[:2]
    if height >= MIN_SIDE and width >= MIN_SIDE:
        return rgb
    pad = ((0, max(0, MIN_SIDE - height)), (0, max(0, MIN_SIDE - width)), (0, 0))
    return np.pad(rgb, pad, mode="edge")


def _crop(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The line inside ``box``, warped upright (BGR for the recogniser); tall crops turned 90 degrees."""
    import cv2
    import numpy as np

    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(
        rgb[:, :, ::-1], matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if height / width >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def _normalised(box: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    xs, ys = box[:, 0], box[:, 1]
    return (
        float(xs.min()) / width,
        float(ys.min()) / height,
        min(1.0, float(xs.max() + 1) / width),
        min(1.0, float(ys.max() + 1) / height),
    )


def _reading_order(boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Top to bottom; boxes whose tops are within half a line of each other, left to right."""
    ordered = sorted(boxes, key=lambda b: (float(b[:, 1].min()), float(b[:, 0].min())))
    rows: list[list[np.ndarray]] = []
    for box in ordered:
        top = float(box[:, 1].min())
        height = float(box[:, 1].max()) - top
        if rows:
            row_top = float(rows[-1][0][:, 1].min())
            row_height = float(rows[-1][0][:, 1].max()) - row_top
            if abs(top - row_top) < 0.5 * max(1.0, min(height, row_height)):
                rows[-1].append(box)
                continue
        rows.append([box])
    return [box for row in rows for box in sorted(row, key=lambda b: float(b[:, 0].min()))]
