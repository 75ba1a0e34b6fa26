"""People: the use cases over the faces of a library (list, name, merge, take a face out, hide), for
this process (``LocalPeople``), a daemon (``RemotePeople``) and ``Library`` (``PeopleMethods``).

A person is listed as ``{"id", "name", "faces", "files", "cover"}`` (``people --json``); ``cover`` is
the clearest face: ``{"path", "box", "timestamp"}`` (box: fractions of the picture, left, top,
right, bottom). Names and corrections are kept in the home (``faces/people.json``); faces never leave
the machine.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mediasearch.errors import UnknownPersonError
from mediasearch.library.wire import from_json
from mediasearch.settings import Settings

if TYPE_CHECKING:
    from mediasearch.index.people import People, PersonSummary
    from mediasearch.library.base import Backend
    from mediasearch.library.types import Hit
    from mediasearch.store.base import Store


@dataclass(frozen=True)
class FaceRef:
    """A face: the file, its box (fractions: left, top, right, bottom) and, in a video, the time."""

    path: str
    box: list[float]
    timestamp: float | None = None


@dataclass(frozen=True)
class Person:
    """A person of the library, as ``people --json`` lists it."""

    id: str
    name: str | None
    faces: int
    files: list[str] = field(default_factory=list)
    cover: FaceRef | None = None


def person_of(summary: PersonSummary) -> Person:
    cover = summary.cover
    face = FaceRef(cover.path, list(cover.box), cover.timestamp)
    return Person(summary.id, summary.name, summary.faces, summary.files, face)


def open_people(settings: Settings) -> People:
    """The people of the home in ``settings`` (its faces store opened, created if new), shared with the
    faces enricher of this process; give it back with ``index.people.release_people``."""
    from mediasearch.index.people import acquire_people

    return acquire_people(settings.home, settings.qdrant_url, settings.qdrant_api_key)


class LocalPeople:
    """The people use cases for a ``LocalLibrary`` (which provides ``settings`` and ``_store_only``)."""

    settings: Settings
    _people: People | None = None

    def people_book(self) -> People:
        """The home's people, opened on first use (and closed with the library)."""
        if self._people is None:
            self._people = open_people(self.settings)
        return self._people

    def close_people(self) -> None:
        if self._people is not None:
            from mediasearch.index.people import release_people

            release_people(self._people)
            self._people = None

    def _media_stores(self) -> Iterator[Store]:
        """Every collection of the home (one per model it was indexed with): a merge or a face taken out
        rewrites the ``people`` of each, so that a switch back to another model finds the same people."""
        yield from self.every_collection()  # type: ignore[attr-defined]

    def people(self, hidden: bool = False) -> list[Person]:
        return [person_of(s) for s in self.people_book().summaries(hidden=hidden)]

    def person(self, person: str) -> Person:
        for summary in self.people_book().summaries(hidden=True):
            if summary.id == person:
                return person_of(summary)
        raise UnknownPersonError(f"there is no person {person}: `mediasearch people` lists them")

    def name_person(self, person: str, name: str) -> Person:
        self.people_book().name(person, name)
        return self.person(person)

    def hide_person(self, person: str, hidden: bool = True) -> Person:
        self.people_book().hide(person, hidden)
        return self.person(person)

    def merge_people(self, keep: str, other: str) -> Person:
        self.people_book().merge(keep, other, self._media_stores())
        return self.person(keep)

    def remove_face(self, path: str, face: int | None = None) -> list[Person]:
        """Take the faces of ``path`` (or its ``face``-th, clearest first) out of their people; each
        becomes a person of its own. Returns those new people."""
        moved = self.people_book().remove_face(path, face, self._media_stores())
        by_id = {s.id: s for s in self.people_book().summaries(hidden=True)}
        faces = {f.id for f in moved}
        return [person_of(s) for s in by_id.values() if s.cover.id in faces]

    def name_hits(self, hits: list[Hit]) -> list[Hit]:
        """Hits with the ids of their people replaced by names (``person N`` until named; hidden
        people left out). Reads the names alone: no faces store is opened."""
        if not any(hit.people for hit in hits):
            return hits
        from mediasearch.faces.registry import RegistryFile
        from mediasearch.store.faces import faces_home

        registry = RegistryFile(faces_home(self.settings.home)).load()
        return [
            replace(hit, people=[registry.name(p) for p in hit.people if not registry.info(p).hidden]) for hit in hits
        ]

    def person_ids(self, names: list[str]) -> tuple[str, ...]:
        return self.people_book().resolve(names)

    def people_names(self) -> list[str]:
        registry = self.people_book().registry()
        return sorted(i.name for i in registry.people.values() if i.name and not i.hidden)


class RemotePeople:
    """The people use cases asked of the daemon (``client.call``)."""

    client: Any

    def people(self, hidden: bool = False) -> list[Person]:
        rows = self.client.call("GET", "/people" + ("?hidden=true" if hidden else ""))
        return [from_json(Person, r) for r in rows]

    def name_person(self, person: str, name: str) -> Person:
        return from_json(Person, self.client.call("POST", f"/people/{_quote(person)}/name", {"name": name}))

    def hide_person(self, person: str, hidden: bool = True) -> Person:
        return from_json(Person, self.client.call("POST", f"/people/{_quote(person)}/hide", {"hidden": hidden}))

    def merge_people(self, keep: str, other: str) -> Person:
        return from_json(Person, self.client.call("POST", "/people/merge", {"keep": keep, "other": other}))

    def remove_face(self, path: str, face: int | None = None) -> list[Person]:
        rows = self.client.call("POST", "/people/remove-face", {"path": path, "face": face})
        return [from_json(Person, r) for r in rows]


class PeopleMethods:
    """``Library``'s people methods."""

    backend: Backend

    def people(self, *, hidden: bool = False) -> list[Person]:
        """The people in the library, largest first (``hidden`` ones too when asked)."""
        return self.backend.people(hidden)  # type: ignore[attr-defined]

    def name_person(self, person: str, name: str) -> Person:
        """Give a person (by id) a name; ``query(person=[name])`` then finds them."""
        return self.backend.name_person(str(person), name)  # type: ignore[attr-defined]

    def merge_people(self, keep: str, other: str) -> Person:
        """Make ``other`` part of ``keep`` (the same person found twice)."""
        return self.backend.merge_people(str(keep), str(other))  # type: ignore[attr-defined]

    def remove_face(self, path: str | os.PathLike[str], face: int | None = None) -> list[Person]:
        """Take the faces of a file (or its ``face``-th) out of the person they were put in."""
        target = os.path.abspath(os.fspath(path))
        return self.backend.remove_face(target, face)  # type: ignore[attr-defined]

    def hide_person(self, person: str, hidden: bool = True) -> Person:
        """Leave a person out of the people list and of hits (``hidden=False`` shows them again)."""
        return self.backend.hide_person(str(person), hidden)  # type: ignore[attr-defined]


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
