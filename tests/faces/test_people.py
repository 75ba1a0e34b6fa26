"""People over both store backends (an Edge shard, the ":memory:" server), fed with the faces the real
engine finds in the shared photos: grouping, names, merges, corrections, forgetting, wiping."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.errors import QueryError
from mediasearch.faces.engine import Face
from mediasearch.faces.registry import RegistryFile
from mediasearch.index.people import People
from mediasearch.store import Filter, PointIn, Store, open_store, point_id
from mediasearch.store.faces import faces_home, open_faces
from mediasearch.store.server import forget_memory_servers


@pytest.fixture(params=["edge", "memory"])
def home(request: pytest.FixtureRequest) -> Iterator[tuple[Path, str | None]]:
    fast = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="mediasearch-people-", dir=fast))
    forget_memory_servers()
    yield path, (":memory:" if request.param == "memory" else None)
    forget_memory_servers()
    shutil.rmtree(path, ignore_errors=True)


def media_store(home: Path, url: str | None, collection: str = "media_people") -> Store:
    return open_store(home=home, collection=collection, dim=4, qdrant_url=url)


def enrich(people: People, media: Store, detected: dict[str, list[Face]], names: list[str]) -> dict[str, list[str]]:
    """What the faces enricher does for each photo: its faces replaced, its point's people written."""
    found = {}
    for name in names:
        point = point_id(f"/photos/{name}", None)
        ids = people.replace(f"/photos/{name}", point, None, detected[name])
        vector = np.ones(4, dtype=np.float32) / 2
        media.upsert([PointIn(point, vector, {"path": f"/photos/{name}", "kind": "image", "people": ids})])
        found[name] = ids
    return found


def by_label(truth: dict[str, Any], found: dict[str, list[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, ids in found.items():
        if truth[name]["kind"] == "person" and ids:
            out.setdefault(truth[name]["people"][0], set()).add(ids[0])
    return out


def test_people_are_listed_largest_first_with_their_files_and_clearest_face(
    home: tuple[Path, str | None], truth: dict[str, Any], detected: dict[str, list[Face]]
) -> None:
    path, url = home
    with open_faces(home=path, qdrant_url=url) as faces, media_store(path, url) as media:
        people = People(path, faces)
        found = enrich(people, media, detected, sorted(truth))
        listed = people.summaries()
        assert [p.faces for p in listed] == sorted((p.faces for p in listed), reverse=True)
        assert sum(p.faces for p in listed) == sum(len(f) for f in detected.values())
        labelled = by_label(truth, found)
        biggest = max(labelled, key=lambda p: sum(1 for n in truth if truth[n]["people"] == [p]))
        (person,) = labelled[biggest]
        summary = next(p for p in listed if p.id == person)
        expected = {f"/photos/{n}" for n, ids in found.items() if person in ids}
        assert set(summary.files) == expected and len(expected) >= 5
        assert summary.cover.quality == max(f.quality for n in expected for f in detected[n.rsplit("/", 1)[1]])
        # Each labelled person is one id (precision: no id shared by two labels).
        owners = [label for label, ids in labelled.items() for _ in ids]
        assert len({i for ids in labelled.values() for i in ids}) == len(owners)


def test_names_merges_and_ids_survive_a_reopen_and_a_rerun(
    home: tuple[Path, str | None], truth: dict[str, Any], detected: dict[str, list[Face]]
) -> None:
    path, url = home
    names = [n for n in sorted(truth) if truth[n]["kind"] == "person" and detected[n]][:14]
    with open_faces(home=path, qdrant_url=url) as faces, media_store(path, url) as media:
        people = People(path, faces)
        first = enrich(people, media, detected, names)
        alice, bob = first[names[0]][0], next(ids[0] for ids in first.values() if ids[0] != first[names[0]][0])
        people.name(alice, "Alice")
        with pytest.raises(QueryError, match="already names"):
            people.name(bob, "alice")
        people.name(bob, "Bob")
        assert people.resolve(["alice", "BOB"]) == (alice, bob)
        with pytest.raises(QueryError, match="nobody called 'Carol'"):
            people.resolve(["Carol"])
    if url is None:  # the server forgets nothing between clients; Edge must read it back from disk
        with open_faces(home=path, qdrant_url=url) as faces, media_store(path, url) as media:
            people = People(path, faces)
            again = enrich(people, media, detected, names)
            assert again == first
            assert people.resolve(["Alice"]) == (alice,)
    with (
        open_faces(home=path, qdrant_url=url) as faces,
        media_store(path, url) as media,
        media_store(path, url, "media_other_model") as other,
    ):
        # The home indexed with a second model too: the same points in a collection of their own.
        other.upsert([PointIn(r.id, np.ones(4, dtype=np.float32) / 2, r.payload) for r in media.scroll()])
        people = People(path, faces)
        moved = people.merge(alice, bob, [media, other])
        assert moved >= 1 and bob not in {p.id for p in people.summaries()}
        for collection in (media, other):  # both rewritten: a switch back to the other model finds Alice
            alice_files = {r.payload["path"] for r in collection.scroll(Filter(people=(alice,)))}
            assert alice_files == {f"/photos/{n}" for n in names if first[n][0] in (alice, bob)}
            assert collection.count(Filter(people=(bob,))) == 0
        with pytest.raises(QueryError, match="there is no person"):
            people.merge(alice, bob, [media])


def test_a_face_taken_out_of_a_person_stays_out(
    home: tuple[Path, str | None], truth: dict[str, Any], detected: dict[str, list[Face]]
) -> None:
    path, url = home
    names = [n for n in sorted(truth) if truth[n]["kind"] == "person" and detected[n]]
    with open_faces(home=path, qdrant_url=url) as faces, media_store(path, url) as media:
        people = People(path, faces)
        found = enrich(people, media, detected, names)
        person = by_label(truth, found)["person_01"].pop()
        wrong = next(n for n in names if found[n] == [person])
        people.name(person, "Dana")
        with media_store(path, url, "media_other_model") as other:  # a model that indexed other files only
            other.upsert([PointIn(point_id("/photos/elsewhere.jpg", None), np.ones(4, dtype=np.float32), {})])
            (face,) = people.remove_face(f"/photos/{wrong}", 0, [media, other])
            assert other.count() == 1 and not other.retrieve([point_id(f"/photos/{wrong}", None)])
        point = point_id(f"/photos/{wrong}", None)
        (record,) = media.retrieve([point])
        assert record.payload["people"] != [person] and len(record.payload["people"]) == 1
        # Indexed again (the file changed), the face keeps out of the person it was taken from.
        enrich(people, media, detected, [wrong])
        assert person not in {f.person for f in faces.faces(path=f"/photos/{wrong}")}
        assert RegistryFile(faces_home(path)).load().rejected[face.id] == [person]
        with pytest.raises(QueryError, match="--face takes 0 to 0"):
            people.remove_face(f"/photos/{wrong}", 3, [media])


def test_forgotten_files_take_their_faces_and_lone_people_with_them(
    home: tuple[Path, str | None], truth: dict[str, Any], detected: dict[str, list[Face]]
) -> None:
    path, url = home
    names = [n for n in sorted(truth) if truth[n]["kind"] == "person" and detected[n]]
    with open_faces(home=path, qdrant_url=url) as faces, media_store(path, url) as media:
        people = People(path, faces)
        found = enrich(people, media, detected, names)
        lone = next(n for n in names if sum(1 for ids in found.values() if ids == found[n]) == 1)
        people.name(found[lone][0], "Eve")
        before = faces.count()
        assert people.forget([f"/photos/{lone}", "/photos/never-indexed.jpg"]) == len(detected[lone])
        assert faces.count() == before - len(detected[lone])
        assert found[lone][0] not in {p.id for p in people.summaries()}
        assert "Eve" not in {info.name for info in people.registry().people.values()}
        left = faces.count()
        assert people.clear() == left
        assert faces.count() == 0 and people.summaries() == [] and people.registry().people == {}


def test_hidden_people_leave_the_list_and_the_names_of_hits(
    home: tuple[Path, str | None], truth: dict[str, Any], detected: dict[str, list[Face]]
) -> None:
    path, url = home
    group = next(n for n in sorted(truth) if truth[n]["kind"] == "group")
    with open_faces(home=path, qdrant_url=url) as faces, media_store(path, url) as media:
        people = People(path, faces)
        ids = enrich(people, media, detected, [group])[group]
        assert len(ids) == len(detected[group]) >= 3  # strangers: one person each
        people.hide(ids[0])
        assert ids[0] not in {p.id for p in people.summaries()}
        assert ids[0] in {p.id for p in people.summaries(hidden=True)}
        assert people.names(ids) == [f"person {p}" for p in ids[1:]]
