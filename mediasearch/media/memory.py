"""The decompression-bomb guard: a bound on the memory that decoding takes, not on megapixels.

Pillow's own guard refuses any image over 89.5 megapixels (178.9 with a warning in between), which
turns away a 200 MP phone HEIC or a 16000x9000 WebP that a viewer opens. What hurts is memory: here
each decode reserves the bytes of the picture *as the decoder produces it* (a JPEG after DCT
scaling, a RAW's preview) plus those of its conversion to RGB, from one budget shared by every
decoding thread of the process. A picture that alone needs more than the budget is refused with a
one-line reason; one that fits waits until the pictures decoding beside it are done. Decoding time
grows with the original's pixels even when DCT scaling keeps the memory small, so the original is
also bounded, at a gigapixel (panoramas stay under it).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

from mediasearch.errors import MediaError

__all__ = [
    "DECODE_BUDGET_BYTES",
    "MAX_SOURCE_PIXELS",
    "bomb_message",
    "decode_cost",
    "decoded_bytes",
    "pillow_guard_off",
    "reserve",
]

DECODE_BUDGET_BYTES = 1536 * 1024**2
"""Bytes of decoded pictures in flight at once in this process (a 200 MP RGB picture takes 0.75 GB)."""
MAX_SOURCE_PIXELS = 1_000_000_000
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2}


class _Budget:
    """Bytes reserved by the decodes in progress; a decode waits while the others hold too much."""

    def __init__(self) -> None:
        self._used = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, amount: int, capacity: int) -> Iterator[None]:
        with self._changed:
            # alone it always goes ahead (it fits the capacity: the caller checked)
            self._changed.wait_for(lambda: self._used == 0 or self._used + amount <= capacity)
            self._used += amount
        try:
            yield
        finally:
            with self._changed:
                self._used -= amount
                self._changed.notify_all()


_BUDGET = _Budget()


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """The bytes a decoder's output of this size and Pillow mode takes (4 a pixel for modes not listed)."""
    return size[0] * size[1] * _BYTES_PER_PIXEL.get(mode, 3 if mode in ("RGB", "YCbCr", "LAB", "HSV") else 4)


def decode_cost(size: tuple[int, int], mode: str) -> int:
    """Bytes to decode a picture of ``size`` in ``mode`` and bring it to RGB: the decoded buffer, the
    RGB copy (none for RGB; an RGBA one too when there is alpha), and the reduced copy after it."""
    pixels = size[0] * size[1]
    converted = 0 if mode == "RGB" else 3 * pixels + (4 * pixels if "A" in mode or mode == "P" else 0)
    return decoded_bytes(size, mode) + converted + 3 * pixels // 4


def reserve(size: tuple[int, int], mode: str, shown: tuple[int, int]) -> contextlib.AbstractContextManager[None]:
    """Hold the memory to decode a picture of ``size`` in ``mode`` (``shown``: the original's size, for
    the message); `MediaError` when it alone needs more than the budget."""
    needed = decode_cost(size, mode)
    capacity = DECODE_BUDGET_BYTES
    if needed > capacity or shown[0] * shown[1] > MAX_SOURCE_PIXELS:
        raise MediaError(bomb_message(shown, needed))
    return _BUDGET.reserve(needed, capacity)


def bomb_message(size: tuple[int, int] | None, needed: int | None = None) -> str:
    shown = f"{size[0]}x{size[1]}" if size else "over the pixel limit"
    memory = f", {needed / 1024**3:.1f} GB to decode" if needed else ""
    return f"image too large (decompression bomb guard): {shown}{memory}"


@functools.cache
def pillow_guard_off() -> None:
    """Turn off Pillow's pixel-count guard (once): `reserve` bounds memory instead.

    Pillow checks the count when a file is opened, before a JPEG could be scaled down in the DCT;
    the check above sees the size the decoder will really produce.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
