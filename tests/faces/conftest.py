"""Fixtures for faces: the shared real photos (skipped when ``../shared`` is absent) and the faces
the real engine finds in them, computed once per session (~20 s on one core)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mediasearch.faces.engine import Face, FaceEngine

SHARED_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """The shared real face photos; the test is skipped where they are absent (a user's clone)."""
    if not (SHARED_FACES / "truth.json").is_file():
        pytest.skip(f"the shared face photos are absent ({SHARED_FACES})")
    return SHARED_FACES


@pytest.fixture(scope="session")
def truth(faces_dir: Path) -> dict[str, dict[str, Any]]:
    """truth.json's files: name -> {"people", "kind", ...}."""
    return dict(json.loads((faces_dir / "truth.json").read_text(encoding="utf-8"))["files"])


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="session")
def detected(faces_dir: Path, truth: dict[str, dict[str, Any]], engine: FaceEngine) -> dict[str, list[Face]]:
    """The faces found in every shared photo, by file name."""
    return {name: engine.faces(load_rgb(faces_dir / name)) for name in sorted(truth)}


def write_video(target: Path, segments: list[tuple[Path | None, float]], size: tuple[int, int] = (640, 480)) -> Path:
    """An H.264 MP4 of still pictures: each segment shows a photo (fitted on grey) for its seconds;
    None shows plain grey."""
    import av

    fps = 4
    width, height = size
    with av.open(str(target), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for photo, seconds in segments:
            canvas = Image.new("RGB", size, (128, 128, 128))
            if photo is not None:
                with Image.open(photo) as image:
                    picture = image.convert("RGB")
                picture.thumbnail(size)
                canvas.paste(picture, ((width - picture.width) // 2, (height - picture.height) // 2))
            frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return target
