"""Media helpers for the faces tests (a module of its own: ``from conftest import`` picks whichever
test folder's conftest was imported first when several folders run in one process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


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
