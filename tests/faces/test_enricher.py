"""The faces enricher in real index runs (demo CLIP model, real face models, the shared photos), on both
store backends: people appear as photos are indexed, keep their ids and names across runs, follow
deleted, moved and forgotten files, and go when faces are turned off; a video's frames carry the people
seen in them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from face_media import write_video

from mediasearch import Library
from mediasearch.errors import MediaSearchError
from mediasearch.settings import Settings
from mediasearch.store import Filter
from mediasearch.store.server import forget_memory_servers


@pytest.fixture(params=["edge", "memory"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    forget_memory_servers()
    yield ":memory:" if request.param == "memory" else None
    forget_memory_servers()


def pick(truth: dict[str, Any], person: str) -> list[str]:
    return sorted(n for n, item in truth.items() if item["people"] == [person])


@pytest.fixture
def photos(tmp_path: Path, faces_dir: Path, truth: dict[str, Any]) -> dict[str, list[Path]]:
    """A library folder: person_01's photos (6), person_04's (4), two photos without people."""
    folder = tmp_path / "photos"
    folder.mkdir()
    empty = sorted(n for n, item in truth.items() if item["kind"] == "no_face")[:2]
    chosen = {"person_01": pick(truth, "person_01"), "person_04": pick(truth, "person_04"), "none": empty}
    out: dict[str, list[Path]] = {}
    for label, names in chosen.items():
        out[label] = []
        for name in names:
            out[label].append(folder / name)
            shutil.copy(faces_dir / name, folder / name)
    return out


def open_lib(settings: Settings) -> Library:
    return Library.open(settings=settings, use_daemon=False)


def media_people(lib: Library) -> dict[str, list[str]]:
    """path -> people ids in its payload (the first point of each file)."""
    store = lib.backend._store_only()  # type: ignore[attr-defined]
    return {r.payload["path"]: r.payload.get("people") or [] for r in store.scroll(fields=("path", "people"))}


def test_indexing_finds_people_and_keeps_them_in_step(
    demo_settings: Callable[..., Settings], demo_model: Any, photos: dict[str, list[Path]], backend: str | None
) -> None:
    settings = demo_settings(qdrant_url=backend)
    folder = photos["none"][0].parent
    with open_lib(settings) as lib:
        report = lib.index([folder])
        assert report.added == 12 and not report.errors
        people = lib.people()
        assert len(people) >= 2
        alice = next(p for p in people if str(photos["person_01"][0]) in p.files)
        assert set(alice.files) >= {str(p) for p in photos["person_01"][:4]}
        assert not set(alice.files) & {str(p) for p in photos["person_04"] + photos["none"]}
        lib.name_person(alice.id, "Alice")
        payloads = media_people(lib)
        assert all(payloads[str(p)] == [] for p in photos["none"])
        assert alice.id in payloads[str(photos["person_01"][0])]
        with_alice = {r.payload["path"] for r in lib.backend._store_only().scroll(Filter(people=(alice.id,)))}  # type: ignore[attr-defined]
        assert with_alice == set(alice.files)

    with open_lib(settings) as lib:  # nothing changed: nothing is looked at again, ids and names stay
        again = lib.index([folder])
        assert again.unchanged == 12 and again.enriched.get("faces", 0) == 0
        assert next(p for p in lib.people() if p.id == alice.id).name == "Alice"

        gone = photos["person_01"][0]
        moved = photos["person_01"][1]
        gone.unlink()
        moved.rename(folder / "renamed.jpg")
        report = lib.index([folder])
        assert report.removed == 1 and report.moved == 1
        after = next(p for p in lib.people() if p.id == alice.id)
        assert str(gone) not in after.files and str(moved) not in after.files
        assert str(folder / "renamed.jpg") in after.files and after.faces == alice.faces - 1

        bob = next(p for p in lib.people() if str(photos["person_04"][0]) in p.files)
        for path in photos["person_04"]:
            lib.forget(path)
        assert bob.id not in {p.id for p in lib.people()}


def test_turning_faces_off_deletes_every_face_and_name(
    demo_settings: Callable[..., Settings], demo_model: Any, photos: dict[str, list[Path]], backend: str | None
) -> None:
    folder = photos["none"][0].parent
    with open_lib(demo_settings(qdrant_url=backend)) as lib:
        lib.index([folder])
        first = lib.people()[0]
        lib.name_person(first.id, "Carol")
    with open_lib(demo_settings(qdrant_url=backend, faces=False)) as lib:
        lib.index([folder])
        assert lib.people() == []
        assert all(ids == [] for ids in media_people(lib).values())
    with open_lib(demo_settings(qdrant_url=backend)) as lib:  # on again: found again, the name is gone
        lib.index([folder])
        again = lib.people()
        assert again and all(p.name is None for p in again)


def test_a_video_s_frames_carry_the_people_seen_in_them(
    demo_settings: Callable[..., Settings], demo_model: Any, faces_dir: Path, truth: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    face = faces_dir / pick(truth, "person_09")[0]
    empty = faces_dir / sorted(n for n, item in truth.items() if item["kind"] == "no_face")[0]
    video = write_video(folder / "clip.mp4", [(empty, 4.0), (face, 4.0), (empty, 4.0)])
    shutil.copy(faces_dir / pick(truth, "person_09")[1], folder / "still.jpg")
    with open_lib(demo_settings()) as lib:
        lib.index([folder])
        (person,) = [p for p in lib.people() if str(folder / "still.jpg") in p.files]
        assert str(video) in person.files
        store = lib.backend._store_only()  # type: ignore[attr-defined]
        frames = {r.payload["timestamp"]: r.payload.get("people") or [] for r in store.scroll(Filter(path=str(video)))}
        seen = sorted(t for t, ids in frames.items() if person.id in ids)
        assert seen and 4.0 <= seen[0] and seen[-1] < 8.0
        assert all(person.id not in ids for t, ids in frames.items() if t < 4.0 or t >= 8.0)


def test_query_person_finds_their_photos_and_the_moment_of_a_video(
    demo_settings: Callable[..., Settings],
    demo_model: Any,
    faces_dir: Path,
    truth: dict[str, Any],
    photos: dict[str, list[Path]],
    cli: Any,
) -> None:
    folder = photos["none"][0].parent
    face, still = (faces_dir / n for n in pick(truth, "person_09"))
    empty = photos["none"][0]
    video = write_video(folder / "clip.mp4", [(empty, 4.0), (face, 4.0), (empty, 4.0)])
    shutil.copy(still, folder / "still.jpg")
    settings = demo_settings(home=cli.home)
    with open_lib(settings) as lib:
        lib.index([folder])
        eve = next(p for p in lib.people() if str(folder / "still.jpg") in p.files)
        alice = next(p for p in lib.people() if str(photos["person_01"][0]) in p.files)
        lib.name_person(eve.id, "Eve")
        lib.name_person(alice.id, "Alice")

        hits = lib.query("portrait", person=["eve"], limit=20)
        assert {h.path for h in hits} == {str(folder / "still.jpg"), str(video)}
        assert all(h.people == ["Eve"] for h in hits)
        moment = next(h for h in hits if h.kind == "video")
        assert 4.0 <= moment.start <= moment.timestamp <= moment.end < 8.0

        found = lib.query("portrait", person=["Alice"], limit=20)
        assert {h.path for h in found} == set(alice.files) and len(found) >= 4  # --person precision 1.0
        assert lib.query("portrait", person=["Alice", "Eve"], limit=20) == []  # all of them: nobody has both
        with pytest.raises(MediaSearchError, match="Zed"):
            lib.query("portrait", person=["Zed"])
        lib.hide_person(alice.id)
        assert all(h.people == [] for h in lib.query("portrait", person=[alice.id], limit=20))

    rows = cli.json("query", "portrait", "--person", "Eve", "--limit", "20")
    assert {r["path"] for r in rows} == {str(folder / "still.jpg"), str(video)} and rows[0]["people"] == ["Eve"]
    unknown = cli("query", "portrait", "--person", "Zed", ok=False)
    assert unknown.exit_code == 1 and "Zed" in unknown.stderr and "Traceback" not in unknown.output
