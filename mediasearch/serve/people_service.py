"""The daemon's people use cases (a part of ``service.Service``): listing is a read, beside queries;
naming, merging, hiding and taking a face out are writes, one at a time with indexing. A face's
picture is cut from the thumbnail of the indexed file it is in, so it is served under the same checks.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

from mediasearch.library.people import UnknownPersonError

if TYPE_CHECKING:
    from mediasearch.library.local import LocalLibrary

FACE_SOURCE_PX = 768  # the thumbnail a face is cut from
FACE_MARGIN = 0.25  # of the face's size, on each side


class PeopleService:
    """Needs the ``Service``'s ``_querying``, ``_library``, ``_submit``, ``_wait`` and ``thumbnail``."""

    _querying: Callable[..., Any]
    _library: Callable[[], LocalLibrary]
    _submit: Callable[..., Future[Any]]
    _wait: Callable[[Future[Any]], Any]
    thumbnail: Callable[..., bytes]

    def people(self, hidden: bool = False) -> list[dict[str, Any]]:
        """`people --json`."""
        with self._querying() as lib:
            return [asdict(p) for p in lib.people(hidden)]

    def _write(self, fn: Callable[[LocalLibrary], Any]) -> Any:
        return self._wait(self._submit(lambda: fn(self._library())))

    def name_person(self, person: str, name: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self._write(lambda lib: asdict(lib.name_person(person, name))))

    def hide_person(self, person: str, hidden: bool) -> dict[str, Any]:
        return cast("dict[str, Any]", self._write(lambda lib: asdict(lib.hide_person(person, hidden))))

    def merge_people(self, keep: str, other: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self._write(lambda lib: asdict(lib.merge_people(keep, other))))

    def remove_face(self, path: str, face: int | None) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self._write(lambda lib: [asdict(p) for p in lib.remove_face(path, face)]))

    def face(self, person: str, size: int) -> bytes:
        """A JPEG of the person's clearest face, ``size`` pixels square."""
        with self._querying() as lib:
            found = next((p for p in lib.people(True) if p.id == person), None)
        if found is None or found.cover is None:
            raise UnknownPersonError(f"there is no person {person}: `mediasearch people` lists them")
        picture = self.thumbnail(found.cover.path, FACE_SOURCE_PX, found.cover.timestamp)
        return crop_face(picture, found.cover.box, size)


def crop_face(jpeg: bytes, box: list[float], size: int) -> bytes:
    """The face ``box`` (fractions of the picture) cut from a JPEG with a margin, as a square JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    left, top, right, bottom = box
    side = max((right - left) * width, (bottom - top) * height) * (1 + 2 * FACE_MARGIN)
    cx, cy = (left + right) / 2 * width, (top + bottom) / 2 * height
    area = (
        max(0, round(cx - side / 2)),
        max(0, round(cy - side / 2)),
        min(width, round(cx + side / 2)),
        min(height, round(cy + side / 2)),
    )
    out = io.BytesIO()
    rgb.crop(area).resize((size, size)).save(out, "JPEG", quality=85)
    return out.getvalue()
