"""Find faces in a picture and describe each by a 128-d vector (dlib).

The models ship in the ``face-recognition-models`` package: the 5-point landmark model (for
alignment), the ResNet face descriptor and, optionally, the mmod CNN detector. The default detector
is dlib's HOG detector, which needs no model file. The package's ``__init__`` imports
``pkg_resources`` (gone from current setuptools), so its files are located without importing it.
The 68-point landmark model it also ships is never used (100 MB, not for commercial use).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.errors import ModelError

MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CNN_FILE = "mmod_human_face_detector.dat"
MAX_SIDE = 1024  # faces are looked for on a picture reduced to this size
SMALL_SIDE = 640  # a picture this small or smaller is looked at twice as large (small faces)
CHIP_SIZE = 150  # the descriptor's input: an aligned 150x150 crop
CHIP_PADDING = 0.25
MIN_SCORE = 0.0  # HOG detections below this are mostly patterns that look like a face
DETECTORS = ("hog", "cnn")


@dataclass(frozen=True)
class Face:
    """One face: its box as fractions of the picture (left, top, right, bottom), its descriptor
    (128 floats; faces of one person lie within ~0.6 of each other), and how clear it is (0..1)."""

    box: tuple[float, float, float, float]
    embedding: np.ndarray
    quality: float


def models_dir() -> Path:
    """The folder of the face models, found without importing their package."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "models"
        if (folder / DESCRIPTOR_FILE).is_file() and (folder / LANDMARKS_FILE).is_file():
            return folder
    raise ModelError(
        "the face models are missing: install them with `pip install face-recognition-models` "
        "(or turn faces off with `faces = false` in the config)"
    )


class FaceEngine:
    """Detector, landmarks and descriptor, loaded once on first use; safe to share between threads
    (dlib's objects are not re-entrant, so calls are serialised)."""

    def __init__(self, detector: str = "hog") -> None:
        if detector not in DETECTORS:
            raise ModelError(f"unknown face detector {detector!r}: use one of {', '.join(DETECTORS)}")
        self.detector_name = detector
        self._models: tuple[Any, Any, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any, Any]:
        if self._models is None:
            import dlib

            folder = models_dir()
            try:
                if self.detector_name == "cnn":
                    detector: Any = dlib.cnn_face_detection_model_v1(str(folder / CNN_FILE))
                else:
                    detector = dlib.get_frontal_face_detector()
                landmarks = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
                descriptor = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))
            except RuntimeError as exc:
                raise ModelError(f"cannot load the face models in {folder}: {exc}") from exc
            self._models = (detector, landmarks, descriptor)
        return self._models

    def faces(self, rgb: np.ndarray) -> list[Face]:
        """The faces in an RGB picture (H x W x 3, uint8), clearest first."""
        picture, scale = _reduce(np.ascontiguousarray(rgb, dtype=np.uint8))
        height, width = picture.shape[:2]
        with self._lock:
            detector, landmarks, descriptor = self._load()
            found = self._detect(detector, picture)
            if not found:
                return []
            shapes = [landmarks(picture, rect) for rect, _ in found]
            import dlib

            chips = dlib.get_face_chips(picture, dlib.full_object_detections(shapes), CHIP_SIZE, CHIP_PADDING)
            vectors = descriptor.compute_face_descriptor(chips)
        faces = []
        for (rect, score), chip, vector in zip(found, chips, vectors, strict=True):
            box = (
                max(0.0, rect.left() / width),
                max(0.0, rect.top() / height),
                min(1.0, rect.right() / width),
                min(1.0, rect.bottom() / height),
            )
            side = min(rect.width(), rect.height()) * scale
            faces.append(Face(box, np.asarray(vector, dtype=np.float32), quality(side, np.asarray(chip), score)))
        return sorted(faces, key=lambda f: -f.quality)

    def _detect(self, detector: Any, picture: np.ndarray) -> list[tuple[Any, float]]:
        upsample = 1 if max(picture.shape[:2]) <= SMALL_SIDE else 0
        if self.detector_name == "cnn":
            found = [(d.rect, float(d.confidence)) for d in detector(picture, upsample)]
        else:
            rects, scores, _ = detector.run(picture, upsample, MIN_SCORE)
            found = list(zip(rects, (float(s) for s in scores), strict=True))
        return found


def _reduce(picture: np.ndarray) -> tuple[np.ndarray, float]:
    """The picture at most ``MAX_SIDE`` on its longer side, and the factor back to the given size."""
    height, width = picture.shape[:2]
    longest = max(height, width)
    if longest <= MAX_SIDE:
        return picture, 1.0
    from PIL import Image

    factor = MAX_SIDE / longest
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.BILINEAR)), 1.0 / factor


def quality(side_px: float, chip: np.ndarray, score: float) -> float:
    """How clear a face is, 0..1: its size in the picture, the sharpness of its aligned crop and the
    detector's confidence; the clearest face of a person is its cover."""
    size = min(1.0, side_px / 160.0)
    grey = chip.astype(np.float32).mean(axis=2) if chip.ndim == 3 else chip.astype(np.float32)
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    sharpness = min(1.0, float(laplacian.var()) / 400.0)
    confidence = 1.0 / (1.0 + float(np.exp(-2.0 * score)))
    return round(size * (0.5 + 0.5 * sharpness) * confidence, 4)


_ENGINES: dict[str, FaceEngine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(detector: str = "hog") -> FaceEngine:
    """This process's engine for ``detector`` (its models are loaded once, however many runs use it)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(detector)
        if engine is None:
            engine = _ENGINES[detector] = FaceEngine(detector)
        return engine


def faces_of_frames(path: str, *, frames: list[np.ndarray], detector: str = "hog") -> list[list[Face]]:
    """The faces of each of a file's pictures, as a worker process of the enrichment pass calls it."""
    engine = shared_engine(detector)
    return [engine.faces(pixels) for pixels in frames]


def faces_of_pixels(path: str, *, pixels: np.ndarray, detector: str = "hog") -> list[Face]:
    """``FaceEngine.faces`` as a decoder-pool worker calls it (``path`` names the file, for messages)."""
    return shared_engine(detector).faces(pixels)
