"""The enrichment pass computes faces and OCR on several files at once (worker processes) and writes in
file order: the payloads and people are exactly those of a one-lane pass, and a file whose computation
fails, hangs or crashes its worker is one line in the errors while the others are enriched."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mediasearch as ms
from mediasearch.index.enrichers import faces as faces_enricher
from mediasearch.index.enrichers import ocr as ocr_enricher
from mediasearch.lab import textpics
from mediasearch.lane import usable_cpus
from mediasearch.library import home as library
from mediasearch.settings import Settings

SHARED_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"
FIELDS = ("people", "faces", "ocr_text", "ocr_lines", "enrichers")


def scene(words: tuple[str, ...], seed: int) -> Any:
    font = next(iter(textpics.fonts()), None)
    return textpics.scene(words, font_path=font, size=56, angle=4.0, dark=seed % 2 == 1, seed=seed)


@pytest.fixture
def library_folder(tmp_path: Path, make_image: Callable[..., Path], make_video: Callable[..., Path]) -> Path:
    """Real photos of people (the shared ones, where present), pictures with words, a plain picture, a video."""
    folder = tmp_path / "media"
    folder.mkdir()
    if (SHARED_FACES / "truth.json").is_file():
        truth = json.loads((SHARED_FACES / "truth.json").read_text())["files"]
        chosen = []
        for person in ("person_01", "person_04"):
            chosen += sorted(n for n, item in truth.items() if item["people"] == [person])[:3]
        chosen += sorted(n for n, item in truth.items() if item["kind"] == "no_face")[:1]
        for name in chosen:
            shutil.copy(SHARED_FACES / name, folder / name)
    rng = random.Random(3)
    for seed in range(3):
        scene(tuple(rng.sample(textpics.WORDS, 3)), seed).save(folder / f"words{seed}.jpg", quality=92)
    make_image("media/plain.png", size=(300, 200), color=(30, 140, 90))
    make_video("media/clip.mp4", seconds=4.0, size=(320, 240))
    return folder


def enriched(settings: Settings) -> dict[tuple[str, Any], dict[str, Any]]:
    """(file name, time) -> the enrichers' fields, each person id replaced by the files of that person."""
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        people = {p.id: tuple(sorted(Path(f).name for f in p.files)) for p in lib.people()}
    opened = library.open_for_query(settings, need_model=False)
    with opened.store as store:
        records = list(store.scroll())
    out = {}
    for rec in records:
        fields = {k: rec.payload.get(k) for k in FIELDS}
        fields["people"] = [people[i] for i in fields["people"] or []]
        out[(Path(rec.payload["path"]).name, rec.payload.get("timestamp"))] = fields
    return out


def test_the_pass_on_several_lanes_writes_what_one_lane_writes(
    library_folder: Path, demo_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    lanes = faces_enricher.FacesEnricher.lanes

    def counted(self: Any, count: int) -> Any:
        opened.append(count)
        return lanes(self, count)

    monkeypatch.setattr(faces_enricher.FacesEnricher, "lanes", counted)
    results = []
    for workers in (1, 2):
        settings = demo_settings(home=tmp_path / f"home{workers}", places=False)
        with ms.Library.open(settings=settings, use_daemon=False) as lib:
            report = lib.index([str(library_folder)], workers=workers)
        results.append(enriched(settings))
        assert report.errors == []
        assert report.enriched["faces"] == report.enriched["ocr"] == len(results[-1])  # every point, once
    assert opened == [1, min(2, usable_cpus())]
    one, several = results
    assert one == several
    read = {name: " ".join(f["ocr_text"] or "" for (n, _), f in one.items() if n == name) for name, _ in one}
    assert all(read[f"words{seed}.jpg"] for seed in range(3))
    if (SHARED_FACES / "truth.json").is_file():
        with_people = {name for (name, _), f in one.items() if f["people"]}
        assert len(with_people) >= 5  # the photos of the two people, each found and grouped


@pytest.mark.parametrize("signal", ["faces", "ocr"])
def test_a_file_whose_computation_fails_hangs_or_crashes_is_one_line_and_the_rest_are_enriched(
    signal: str,
    make_image: Callable[..., Path],
    demo_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if signal == "faces":
        monkeypatch.setattr(faces_enricher, "FRAMES_FN", "enrich_helpers:faces_or_trouble")
        monkeypatch.setattr(faces_enricher._WorkerEngine, "TIMEOUT_S", 8.0)
    else:
        monkeypatch.setattr(ocr_enricher, "FRAMES_FN", "enrich_helpers:lines_or_trouble")
        monkeypatch.setattr(ocr_enricher, "TIMEOUT_S", 8.0)
    names = ["a.jpg", "b_broken.jpg", "c_hang.jpg", "d.jpg", "e_crash.jpg", "f.jpg"]
    for n, name in enumerate(names):
        make_image(f"media/{name}", size=(120, 90), color=(40 * n, 90, 200 - 30 * n))
    settings = demo_settings(places=False, faces=signal == "faces", ocr=signal == "ocr")
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        report = lib.index([str(tmp_path / "media")], workers=2)
    assert report.failed == 0
    errors = {Path(e["path"]).name: e["error"] for e in report.errors}
    who = "the face finder" if signal == "faces" else "the text reader"
    assert errors.keys() == {"b_broken.jpg", "c_hang.jpg", "e_crash.jpg"}
    assert errors["b_broken.jpg"] == f"{signal}: {who} failed: this picture breaks the engine"
    assert errors["c_hang.jpg"].startswith(f"{signal}: ") and "took too long" in errors["c_hang.jpg"]
    assert errors["e_crash.jpg"] == f"{signal}: {who} crashed on this file (exit 3)"
    opened = library.open_for_query(settings, need_model=False)
    with opened.store as store:
        done = {Path(r.payload["path"]).name for r in store.scroll() if signal in r.payload["enrichers"]}
    assert done == {"a.jpg", "d.jpg", "f.jpg"}
