"""The people of a library: faces (in the faces store) grouped into people (ids kept in the store,
names in the home's ``faces/people.json``), kept current as items are enriched, forgotten, merged
and corrected. The faces enricher and the use cases of ``library`` both go through ``People``.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.faces.engine import Face, FaceEngine
from mediasearch.faces.grouping import PeopleIndex
from mediasearch.faces.registry import Registry, RegistryFile, UnknownPersonError
from mediasearch.store.base import Filter, Store
from mediasearch.store.faces import FaceRecord, FaceStore, face_id, faces_home

MAX_FACES = 32  # per picture or frame: the clearest ones (a crowd's tiny faces tell nobody apart)


@dataclass(frozen=True)
class PersonSummary:
    """A person as listed: id, name (None until named), faces, files, the clearest face, hidden."""

    id: str
    name: str | None
    faces: int
    files: list[str]
    cover: FaceRecord
    hidden: bool


class People:
    """Faces and people of one home; every method is safe to call from several threads."""

    def __init__(self, home: Path, faces: FaceStore) -> None:
        self.faces = faces
        self.file = RegistryFile(faces_home(home))
        self._index: PeopleIndex | None = None
        self._lock = threading.RLock()

    # -- the grouping working set

    def _people_index(self, registry: Registry) -> PeopleIndex:
        if self._index is None:
            index = PeopleIndex(next_id=registry.next_id)
            for face in self.faces.faces():
                index.add(face.person, face.vector.astype(np.float64))
                if face.person.isdigit():
                    index.next_id = max(index.next_id, int(face.person) + 1)
            self._index = index
        return self._index

    def registry(self) -> Registry:
        """The user's word on people, as saved."""
        return self.file.load()

    # -- enrichment

    def replace(
        self, path: str, point: str, timestamp: float | None, found: Sequence[Face], fingerprint: str | None = None
    ) -> list[str]:
        """Make ``found`` the faces of one media point (a picture or a frame) and return the ids of the
        people in it, clearest face first. A face found again joins the person it was in, as long as
        it is still closest to it; the point's earlier faces are then taken out."""
        with self._lock:
            registry = self.file.load()
            index = self._people_index(registry)
            old = [f for f in self.faces.faces(path=path) if f.point == point]
            records = []
            for number, face in enumerate(found[:MAX_FACES]):
                fid = face_id(point, number)
                vector = np.asarray(face.embedding, dtype=np.float64)
                person = index.assign(vector, exclude=registry.rejected.get(fid, ()))
                records.append(
                    FaceRecord(
                        fid, path, point, number, face.box, face.quality, person, face.embedding, timestamp, fingerprint
                    )
                )
            new_ids = {r.id for r in records}
            for earlier in old:
                index.remove(earlier.person, earlier.vector.astype(np.float64))
            self.faces.add(records)
            self.faces.delete([f.id for f in old if f.id not in new_ids])
            if index.next_id != registry.next_id:
                registry.next_id = index.next_id
                self.file.save(registry)
            return list(dict.fromkeys(r.person for r in records))

    def forget(self, paths: Iterable[str]) -> int:
        """Delete the faces of these files (removed from the library); people left with no face
        disappear. Returns how many faces went."""
        with self._lock:
            registry = self.file.load()
            index = self._people_index(registry)
            gone = 0
            for path in paths:
                for face in self.faces.delete_path(path):
                    index.remove(face.person, face.vector.astype(np.float64))
                    gone += 1
            if gone:
                self._prune(registry, index)
            return gone

    def forget_points(self, points: Iterable[str]) -> int:
        """Delete the faces of these media points (they left the index). Returns how many went."""
        with self._lock:
            registry = self.file.load()
            index = self._people_index(registry)
            wanted = [face_id(point, n) for point in points for n in range(MAX_FACES)]
            gone = 0
            for start in range(0, len(wanted), 4096):
                found = self.faces.retrieve(wanted[start : start + 4096])
                for face in found:
                    index.remove(face.person, face.vector.astype(np.float64))
                self.faces.delete([f.id for f in found])
                gone += len(found)
            if gone:
                self._prune(registry, index)
            return gone

    def tidy(self, media: Store) -> int:
        """Keep the faces in step with the media points after files were removed, forgotten or moved:
        the faces of a moved file follow it to its new points (found by the file's fingerprint and the
        frame's time), faces whose point is gone are deleted (people left with none disappear).
        Returns how many faces went."""
        with self._lock:
            by_point: dict[str, list[str]] = defaultdict(list)
            for fid, point, _ in self.faces.points():
                by_point[point].append(fid)
            points = list(by_point)
            lost: list[str] = []
            for start in range(0, len(points), 1024):
                batch = points[start : start + 1024]
                found = {r.id for r in media.retrieve(batch)}
                lost.extend(fid for point in batch if point not in found for fid in by_point[point])
            if not lost:
                return 0
            gone = self._follow_moves(media, lost)
            if gone:
                registry = self.file.load()
                index = self._people_index(registry)
                for face in gone:
                    index.remove(face.person, face.vector.astype(np.float64))
                self.faces.delete([f.id for f in gone])
                self._prune(registry, index)
            return len(gone)

    def _follow_moves(self, media: Store, lost: list[str]) -> list[FaceRecord]:
        """Re-key the faces of moved files under their new points; the faces left over (gone)."""
        faces = [f for start in range(0, len(lost), 4096) for f in self.faces.retrieve(lost[start : start + 4096])]
        prints = {f.fingerprint for f in faces if f.fingerprint}
        where: dict[tuple[str, float | None], tuple[str, str]] = {}
        if prints:
            for record in media.scroll(fields=("fingerprint", "timestamp", "path")):
                key = (str(record.payload.get("fingerprint")), record.payload.get("timestamp"))
                if key[0] in prints:
                    where[key] = (record.id, str(record.payload.get("path", "")))
        gone, moved = [], []
        for face in faces:
            target = where.get((str(face.fingerprint), face.timestamp)) if face.fingerprint else None
            if target is None:
                gone.append(face)
                continue
            point, path = target
            moved.append(replace(face, id=face_id(point, face.face), point=point, path=path))
        self.faces.add(moved)
        left = {f.id for f in gone}
        self.faces.delete([f.id for f in faces if f.id not in left])
        return gone

    def clear(self) -> int:
        """Delete every face and everything said about people (faces turned off)."""
        with self._lock:
            gone = self.faces.clear()
            self.file.save(Registry())
            self._index = None
            return gone

    def _prune(self, registry: Registry, index: PeopleIndex) -> None:
        live = set(index.people())
        stale = [p for p in registry.people if p not in live]
        for person in stale:
            del registry.people[person]
        if stale:
            self.file.save(registry)

    # -- listing

    def summaries(self, *, hidden: bool = False) -> list[PersonSummary]:
        """Every person with a face, largest first (hidden ones only when asked)."""
        registry = self.file.load()
        by_person: dict[str, list[FaceRecord]] = defaultdict(list)
        for face in self.faces.faces():
            by_person[face.person].append(face)
        people = []
        for person, faces in by_person.items():
            info = registry.info(person)
            if info.hidden and not hidden:
                continue
            files = sorted({f.path for f in faces})
            cover = max(faces, key=lambda f: (f.quality, f.id))
            people.append(PersonSummary(person, info.name, len(faces), files, cover, info.hidden))
        return sorted(people, key=lambda p: (-p.faces, _id_order(p.id)))

    def names(self, ids: Iterable[str], registry: Registry | None = None) -> list[str]:
        """Display names of these people, hidden ones left out."""
        registry = registry or self.file.load()
        return [registry.name(p) for p in ids if not registry.info(p).hidden]

    def resolve(self, names: Iterable[str]) -> tuple[str, ...]:
        """Person ids for names given to ``query --person`` (a name, or an id); UnknownPersonError for
        anyone unknown."""
        registry = self.file.load()
        ids = []
        for name in names:
            person = registry.resolve(name)
            if person is None or not any(True for _ in self.faces.faces(person=person)):
                listed = "`mediasearch people` lists the people and their names"
                raise UnknownPersonError(f"nobody called {name!r}: {listed}")
            ids.append(person)
        return tuple(dict.fromkeys(ids))

    # -- corrections

    def name(self, person: str, name: str) -> None:
        """Give ``person`` a name (unique among people)."""
        with self._lock:
            self._require(person)
            registry = self.file.load()
            registry.set_name(person, name)
            self.file.save(registry)

    def hide(self, person: str, hidden: bool = True) -> None:
        """Leave ``person`` out of the people list and of hits (or show them again)."""
        with self._lock:
            self._require(person)
            registry = self.file.load()
            registry.people.setdefault(person, registry.info(person)).hidden = hidden
            self.file.save(registry)

    def merge(self, keep: str, other: str, media: Iterable[Store]) -> int:
        """Move every face of ``other`` into ``keep`` (and the payloads that name ``other`` in each of the
        ``media`` collections: one per model the home was indexed with); ``keep`` takes ``other``'s name
        if it had none. Returns the faces moved."""
        with self._lock:
            self._require(keep)
            if keep == other:
                return 0
            moved = list(self.faces.faces(person=other))
            if not moved:
                raise UnknownPersonError(f"there is no person {other}: `mediasearch people` lists them")
            registry = self.file.load()
            index = self._people_index(registry)
            self.faces.set_person([f.id for f in moved], keep)
            for face in moved:
                index.remove(other, face.vector.astype(np.float64))
                index.add(keep, face.vector.astype(np.float64))
            for store in media:
                _rename_in_media(store, other, keep)
            gone = registry.people.pop(other, None)
            if gone and gone.name and not registry.info(keep).name:
                registry.people.setdefault(keep, registry.info(keep)).name = gone.name
            self._prune(registry, index)
            self.file.save(registry)
            return len(moved)

    def remove_face(self, path: str, number: int | None, media: Iterable[Store]) -> list[FaceRecord]:
        """Take faces of a file out of their person (all of the file's faces, or its ``number``-th):
        each becomes a person of its own and never joins its former person again (in the payloads of
        each of the ``media`` collections that hold the file)."""
        with self._lock:
            faces = sorted(self.faces.faces(path=path), key=lambda f: (f.timestamp or 0.0, f.face))
            if not faces:
                raise UnknownPersonError(f"no face is known in {path}")
            if number is not None:
                if not 0 <= number < len(faces):
                    raise UnknownPersonError(f"{path} has {len(faces)} face(s): --face takes 0 to {len(faces) - 1}")
                faces = [faces[number]]
            registry = self.file.load()
            index = self._people_index(registry)
            for face in faces:
                vector = face.vector.astype(np.float64)
                registry.rejected.setdefault(face.id, []).append(face.person)
                index.remove(face.person, vector)
                person = str(index.next_id)
                index.next_id += 1
                index.add(person, vector)
                self.faces.set_person([face.id], person)
            for store in media:
                for point in dict.fromkeys(f.point for f in faces):
                    _refresh_point(store, point, path, self.faces)
            registry.next_id = index.next_id
            self._prune(registry, index)
            self.file.save(registry)
            return faces

    def _require(self, person: str) -> None:
        if not any(True for _ in self.faces.faces(person=person)):
            raise UnknownPersonError(f"there is no person {person}: `mediasearch people` lists them")


def _id_order(person: str) -> tuple[int, str]:
    return (int(person), "") if person.isdigit() else (1 << 62, person)


def _rename_in_media(media: Store, old: str, new: str) -> None:
    for record in list(media.scroll(Filter(people=(old,)), fields=("people",))):
        people = [new if p == old else p for p in record.payload.get("people") or []]
        media.set_payload([record.id], {"people": list(dict.fromkeys(people))})


def _refresh_point(media: Store, point: str, path: str, faces: FaceStore) -> None:
    """Rewrite a media point's ``people`` from its faces (after one of them moved), where it exists."""
    if not media.retrieve([point]):
        return  # a collection of another model that never indexed this file
    people = [f.person for f in sorted(faces.faces(path=path), key=lambda f: f.face) if f.point == point]
    media.set_payload([point], {"people": list(dict.fromkeys(people))})


def faces_of_frames(
    people: People,
    engine: FaceEngine,
    path: str,
    frames: Iterable[tuple[str, float | None, np.ndarray]],
    fingerprint: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Find the faces of a file's pictures (an image's one, a video's frames: point id, time, RGB
    pixels), group them into people and give each point's payload: ``{"people": ids, "faces": n}``."""
    out: dict[str, dict[str, Any]] = {}
    for point, timestamp, pixels in frames:
        found = engine.faces(pixels)
        ids = people.replace(path, point, timestamp, found, fingerprint)
        out[point] = {"people": ids, "faces": min(len(found), MAX_FACES)}
    return out


_SHARED: dict[tuple[str, str | None], tuple[People, int]] = {}
_SHARED_LOCK = threading.Lock()


def acquire_people(home: Path, qdrant_url: str | None = None, api_key: str | None = None) -> People:
    """The people of a home, shared within this process (an Edge shard has one owner, and the grouping
    must see every face): the library and the faces enricher hold the same one. Release each
    acquisition with :func:`release_people`; the last release closes the faces store."""
    from mediasearch.store.faces import open_faces

    key = (str(Path(home).resolve()), qdrant_url)
    with _SHARED_LOCK:
        people, count = _SHARED.get(key, (None, 0))
        if people is None:
            people = People(Path(home), open_faces(home=Path(home), qdrant_url=qdrant_url, api_key=api_key))
        _SHARED[key] = (people, count + 1)
        return people


def release_people(people: People) -> None:
    """Give back one :func:`acquire_people`; the last one closes the faces store."""
    with _SHARED_LOCK:
        for key, (held, count) in list(_SHARED.items()):
            if held is people:
                if count > 1:
                    _SHARED[key] = (held, count - 1)
                    return
                del _SHARED[key]
        people.faces.close()
