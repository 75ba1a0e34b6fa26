"""Faces beside the media: one record per face found in a picture or a video frame, in a store of its
own (Edge: a second shard, ``home/faces/store/mediasearch_faces``, owned by the same process as the
CLIP one; a server: the collection ``mediasearch_faces``). Faces do not depend on the CLIP model, so a
model switch keeps them.

A face record's vector is its descriptor scaled to length 1 (the store compares by cosine) and the
payload keeps the length (``norm``), so the descriptor dlib made comes back exactly enough to group
by Euclidean distance. Payload: ``path``, ``point`` (the media point's id), ``timestamp`` (frames),
``face`` (its number in the item, clearest first), ``box`` (fractions of the picture: left, top,
right, bottom), ``quality`` (0..1), ``people`` (the person's id, one element, so that
``Filter(people=...)`` finds a person's faces), ``norm``, ``fingerprint`` (the file's).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from mediasearch.store.base import Filter, PointIn, Record, Store, point_id
from mediasearch.store.collections import open_store

FACES_COLLECTION = "mediasearch_faces"
FACES_DIM = 128
FACES_FOLDER = "faces"  # under the home: the shard and people.json
_INDEXED = ("path", "people")  # what faces are found by (the media's other indexes would be dead weight)
_FIELDS = ("path", "point", "timestamp", "face", "box", "quality", "people", "norm", "fingerprint")


@dataclass(frozen=True)
class FaceRecord:
    """One stored face; ``vector`` is the descriptor as dlib made it (length ~1.3-1.6)."""

    id: str
    path: str
    point: str
    face: int
    box: tuple[float, float, float, float]
    quality: float
    person: str
    vector: np.ndarray
    timestamp: float | None = None
    fingerprint: str | None = None  # the file's content fingerprint: a moved file's faces follow it


def face_id(point: str, face: int) -> str:
    """Deterministic id of the ``face``-th face of a media point (re-running a file rewrites it)."""
    return point_id(f"face:{point}", float(face))


def faces_home(home: Path) -> Path:
    """The folder under a home that holds the faces shard and the people file."""
    return Path(home) / FACES_FOLDER


def faces_exist(home: Path, qdrant_url: str | None = None) -> bool:
    """Whether the library may have faces: an Edge shard was created (a server is asked when opened)."""
    if qdrant_url:
        return True
    return (faces_home(home) / "store" / FACES_COLLECTION / "edge_config.json").is_file()


class FaceStore:
    """The faces of a library: write, read back, move between people, delete."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, faces: Sequence[FaceRecord]) -> None:
        """Insert or replace faces (by id)."""
        points = []
        for face in faces:
            vector = np.asarray(face.vector, dtype=np.float32)
            norm = float(np.linalg.norm(vector)) or 1.0
            payload: dict[str, Any] = {
                "path": face.path,
                "point": face.point,
                "face": face.face,
                "box": [float(x) for x in face.box],
                "quality": float(face.quality),
                "people": [face.person],
                "norm": norm,
                "timestamp": face.timestamp,
                "fingerprint": face.fingerprint,
            }
            points.append(PointIn(face.id, vector / norm, payload))
        self.store.upsert(points)

    def faces(self, *, path: str | None = None, person: str | None = None) -> Iterator[FaceRecord]:
        """Every face, or those of one file or one person."""
        flt = Filter(path=path, people=(person,) if person is not None else ())
        for record in self.store.scroll(flt, fields=_FIELDS, with_vectors=True):
            yield _face(record)

    def points(self) -> Iterator[tuple[str, str, str]]:
        """(face id, media point id, path) of every face, without descriptors (a light scroll)."""
        for record in self.store.scroll(fields=("point", "path"), batch=4096):
            yield record.id, str(record.payload.get("point", "")), str(record.payload.get("path", ""))

    def set_path(self, ids: Sequence[str], path: str) -> None:
        """Faces whose file moved: their new path."""
        self.store.set_payload(list(ids), {"path": path})

    def retrieve(self, ids: Sequence[str]) -> list[FaceRecord]:
        """The faces with these ids that exist."""
        return [_face(r) for r in self.store.retrieve(list(ids), with_vectors=True)]

    def count(self) -> int:
        """How many faces are stored."""
        return self.store.count()

    def set_person(self, ids: Sequence[str], person: str) -> None:
        """Move faces to ``person``."""
        self.store.set_payload(list(ids), {"people": [person]})

    def delete(self, ids: Sequence[str]) -> None:
        """Delete faces by id."""
        self.store.delete(list(ids))

    def delete_path(self, path: str) -> list[FaceRecord]:
        """Delete the faces of one file; returns them."""
        gone = list(self.faces(path=path))
        self.delete([face.id for face in gone])
        return gone

    def clear(self) -> int:
        """Delete every face; returns how many there were."""
        ids = [record.id for record in self.store.scroll(fields=())]
        for start in range(0, len(ids), 1024):
            self.store.delete(ids[start : start + 1024])
        return len(ids)

    def flush(self) -> None:
        self.store.flush()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FaceStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_faces(
    *,
    home: Path,
    qdrant_url: str | None = None,
    api_key: str | None = None,
    create: bool = True,
    wait_s: float = 5.0,
) -> FaceStore:
    """Open (or create) the faces of the library in ``home`` (or on the server at ``qdrant_url``)."""
    store = open_store(
        home=faces_home(home),
        collection=FACES_COLLECTION,
        dim=FACES_DIM,
        qdrant_url=qdrant_url,
        api_key=api_key,
        create=create,
        wait_s=wait_s,
        indexed=_INDEXED,
    )
    return FaceStore(store)


def _face(record: Record) -> FaceRecord:
    payload = record.payload
    vector = record.vector if record.vector is not None else np.zeros(FACES_DIM, dtype=np.float32)
    people = payload.get("people") or [""]
    timestamp = payload.get("timestamp")
    return FaceRecord(
        id=record.id,
        path=str(payload.get("path", "")),
        point=str(payload.get("point", "")),
        face=int(payload.get("face", 0)),
        box=tuple(float(x) for x in payload.get("box", (0, 0, 0, 0)))[:4],  # type: ignore[arg-type]
        quality=float(payload.get("quality", 0.0)),
        person=str(people[0]),
        vector=np.asarray(vector, dtype=np.float32) * float(payload.get("norm", 1.0)),
        timestamp=None if timestamp is None else float(timestamp),
        fingerprint=payload.get("fingerprint"),
    )
