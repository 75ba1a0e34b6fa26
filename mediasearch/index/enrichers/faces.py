"""The faces enricher: the faces of every picture and video frame (dlib, on a picture of at most
1024 px), kept in the faces store and grouped into people; each point's payload gets ``people`` (the
ids of the people in it, clearest face first) and ``faces`` (how many). Turned off (``faces = false``,
``index --no-faces``), it deletes every face and what was said about people. Faces never leave the
machine: the models ship in ``face-recognition-models``; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from mediasearch.faces.engine import MAX_SIDE
from mediasearch.index.enrich import FileInput, drop_fields
from mediasearch.settings import Settings
from mediasearch.store.base import Store

if TYPE_CHECKING:
    from mediasearch.faces.engine import FaceEngine
    from mediasearch.index.people import People

VERSION = 1  # bump when detection, alignment or the descriptor change: every item's faces are found again


class FacesEnricher:
    name = "faces"
    version = VERSION
    reads: Literal["pixels", "payload"] = "pixels"
    max_side = MAX_SIDE
    fields: tuple[str, ...] = ("people", "faces")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._people: People | None = None
        self._engine: FaceEngine | None = None

    def _book(self) -> People:
        if self._people is None:
            from mediasearch.index.people import acquire_people

            s = self.settings
            self._people = acquire_people(s.home, s.qdrant_url, s.qdrant_api_key)
        return self._people

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        from mediasearch.faces.engine import FaceEngine
        from mediasearch.index.people import faces_of_frames

        if self._engine is None:
            self._engine = FaceEngine()
        frames = [(f.point_id, f.timestamp, f.pixels) for f in item.frames if f.pixels is not None]
        fingerprint = item.payload.get("fingerprint")
        return faces_of_frames(self._book(), self._engine, item.path, frames, fingerprint)

    def drop(self, store: Store) -> None:
        drop_fields(store, self)
        self._book().clear()

    def forget(self, point_ids: Sequence[str], store: Store) -> None:
        self._book().forget_points(point_ids)

    def tidy(self, store: Store) -> int:
        """After a run that removed or moved files: their faces follow (``People.tidy``)."""
        from mediasearch.store.faces import faces_exist

        if self._people is None and not faces_exist(self.settings.home, self.settings.qdrant_url):
            return 0  # no face was ever found: nothing to keep in step (and no store to create)
        return self._book().tidy(store)

    def close(self) -> None:
        if self._people is not None:
            from mediasearch.index.people import release_people

            release_people(self._people)
            self._people = None

    def __del__(self) -> None:
        self.close()


def make(settings: Settings) -> FacesEnricher | None:
    """The faces enricher, or None when dlib or the face models are not installed."""
    import importlib.util

    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        return None
    return FacesEnricher(settings)
