"""Factories for the OCR tests: a picture with words on it, and a video with a slide."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from mediasearch.lab import textpics


@pytest.fixture
def make_text_picture(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_text_picture(name, words, *, size=48, angle=0.0, dark=False) -> Path``: the
    words as one or two lines over a photo-like background, written as JPEG (or the name's format)."""

    def make(name: str, words: Sequence[str], *, size: int = 48, angle: float = 0.0, dark: bool = False) -> Path:
        face = next(iter(textpics.fonts()), None)
        image = textpics.scene(tuple(words), font_path=face, size=size, angle=angle, dark=dark, seed=len(name))
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return path

    return make


@pytest.fixture
def make_slide_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_slide_video(name, words, *, seconds=12.0, start=4.0, end=8.0) -> Path``: an H.264
    MP4 (640x360, 4 fps) of a plain photo-like scene, with a slide bearing ``words`` shown from
    ``start`` to ``end`` seconds."""

    def make(name: str, words: Sequence[str], *, seconds: float = 12.0, start: float = 4.0, end: float = 8.0) -> Path:
        import random

        import av
        import numpy as np
        from PIL import Image, ImageDraw

        size = (640, 360)
        scene = np.asarray(textpics.background(size, random.Random(5), dark=False))
        slide = Image.new("RGB", size, (250, 250, 250))
        draw = ImageDraw.Draw(slide)
        draw.rectangle((0, 0, size[0], 50), fill=(30, 60, 120))
        face = next(iter(textpics.fonts()), None)
        draw.text((40, 140), " ".join(words), fill=(20, 20, 20), font=textpics.font(face, 40))
        slide_px = np.asarray(slide)
        path = tmp_path / name
        fps = 4
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt, stream.gop_size = size[0], size[1], "yuv420p", 8
            stream.options = {"preset": "ultrafast"}
            for i in range(round(seconds * fps)):
                pixels = slide_px if start <= i / fps < end else scene
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path

    return make
