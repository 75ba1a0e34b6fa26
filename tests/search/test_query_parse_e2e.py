"""End to end: a generated library with known dates and GPS positions, searched with one-line queries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.lab.shapes import render

NICE = (43.7009, 7.2683)


def _last_summer(today: dt.date) -> int:
    """The year of the latest summer (June to August) that is over."""
    return today.year if today.month >= 9 else today.year - 1


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4)


def _photo(
    path: Path, colour: str, shape: str, where: tuple[float, float] | None, when: dt.datetime, seed: int
) -> None:
    img = render(colour, shape, rng=np.random.default_rng(seed), size=(240, 180))
    exif = img.getexif()
    exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
    if where is not None:
        lat, lon = where
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if lat >= 0 else "S"), _dms(lat)
        gps[3], gps[4] = ("E" if lon >= 0 else "W"), _dms(lon)
    img.save(path, exif=exif, quality=90)


@pytest.fixture
def trips(tmp_path: Path) -> Path:
    summer = _last_summer(dt.date.today())
    photos = {
        "nice_old_town": (NICE, dt.datetime(summer, 7, 14, 12)),
        "nice_port": ((43.6950, 7.2850), dt.datetime(summer, 8, 30, 18)),  # 1.5 km from the centre
        "nice_last_winter": (NICE, dt.datetime(summer, 12, 26, 12) - dt.timedelta(days=365)),
        "nice_earlier_summer": (NICE, dt.datetime(summer - 1, 7, 1, 12)),
        "antibes_summer": ((43.5804, 7.1251), dt.datetime(summer, 7, 20, 12)),  # 17 km away: outside Nice
        "paris_summer": ((48.8584, 2.2945), dt.datetime(summer, 6, 10, 12)),
        "tokyo_summer": ((35.6586, 139.7454), dt.datetime(summer, 6, 11, 12)),
        "nowhere_summer": (None, dt.datetime(summer, 7, 15, 12)),
    }
    folder = tmp_path / "trips"
    folder.mkdir()
    for i, (name, (where, when)) in enumerate(photos.items()):
        _photo(folder / f"{name}.jpg", "red", "circle", where, when, seed=i)
    return folder


def _names(rows: list[dict[str, Any]]) -> set[str]:
    return {Path(r["path"]).stem for r in rows}


def test_in_nice_last_summer_finds_exactly_the_photos_taken_there_then(cli: Any, trips: Path) -> None:
    report = cli.json("index", str(trips))
    assert report["added"] == 8 and report["failed"] == 0

    def found(text: str, *options: str) -> set[str]:
        return _names(cli.json("query", text, "--limit", "50", *options))

    assert found("a red circle in Nice last summer") == {"nice_old_town", "nice_port"}
    assert found("a red circle near Nice") == {"nice_old_town", "nice_port", "nice_last_winter", "nice_earlier_summer"}
    assert found("a red circle in France last summer") == {
        "nice_old_town",
        "nice_port",
        "antibes_summer",
        "paris_summer",
    }
    assert found("a red circle in Japan") == {"tokyo_summer"}
    # explicit options win over the parse; --literal turns it off
    summer = _last_summer(dt.date.today())
    assert found(
        "a red circle in Nice last summer", "--after", f"{summer - 1}-06-01", "--before", f"{summer - 1}-08-31"
    ) == {"nice_earlier_summer"}
    assert found("a red circle in Nice last summer", "--literal") == {p.stem for p in trips.iterdir()}


def test_filters_alone_rank_by_the_whole_query_newest_first_and_hits_name_their_place(cli: Any, trips: Path) -> None:
    cli.json("index", str(trips))
    summer = _last_summer(dt.date.today())
    hits = cli.json("query", "photos from last summer", "--limit", "50")
    assert [Path(h["path"]).stem for h in hits] == [
        "nice_port",  # 30 August
        "antibes_summer",  # 20 July
        "nowhere_summer",  # 15 July
        "nice_old_town",  # 14 July
        "tokyo_summer",
        "paris_summer",
    ]
    assert {Path(h["path"]).stem: h["place"] for h in hits}["nice_port"] == "Nice, France"
    assert {Path(h["path"]).stem: h["place"] for h in hits}["nowhere_summer"] is None
    oldest = cli.json("query", "a red circle near Nice oldest first", "--limit", "50")
    assert [Path(h["path"]).stem for h in oldest] == [
        "nice_earlier_summer",
        "nice_last_winter",
        "nice_old_town",
        "nice_port",
    ]
    assert summer  # the dates above are relative to it
    shown = cli("query", "a red circle in Nice last summer").output
    assert f"“a red circle” · {summer}-06-01 – {summer}-09-01 · Nice (7.4 km)" in shown
    assert "Nice, France" in shown
    assert "“a red circle”" not in cli("query", "a red circle in Nice last summer", "--literal").output


def test_explain_prints_the_parse(cli: Any, trips: Path) -> None:
    cli.json("index", str(trips))
    doc = cli.json("query", "a red circle in Nice last summer", "--explain")
    summer = _last_summer(dt.date.today())
    assert doc["text"] == "a red circle"
    assert (doc["after"], doc["before"]) == (f"{summer}-06-01", f"{summer}-09-01")
    assert doc["place"]["name"] == "Nice" and doc["place"]["km"] < 17
    assert set(doc) == {"text", "after", "before", "place", "people", "kind", "ocr", "sort"}


def test_places_lists_the_cities_with_counts_and_place_filters(cli: Any, trips: Path) -> None:
    cli.json("index", str(trips))
    rows = cli.json("places")
    by_city = {r["city"]: r for r in rows}
    assert by_city["Nice"]["files"] == 4 and by_city["Nice"]["country"] == "France"
    assert by_city["Antibes"]["files"] == 1 and by_city["Paris"]["files"] == 1
    assert by_city["Tokyo"]["country"] == "Japan"
    assert rows[0]["city"] == "Nice"
    assert _names(cli.json("query", "a red circle", "--place", "antibes", "--limit", "50")) == {"antibes_summer"}
    assert _names(cli.json("query", "a red circle", "--place", "Provence-Alpes-Côte d'Azur", "--limit", "50")) == {
        "nice_old_town",
        "nice_port",
        "nice_last_winter",
        "nice_earlier_summer",
        "antibes_summer",
    }


SHARED_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faces"


def test_people_named_in_the_library_are_read_out_of_the_query(cli: Any, tmp_path: Path) -> None:
    """Real photos of two people (the shared set), geotagged and dated here; the faces enricher groups
    them, the people are named, and "Alice in Nice last summer" keeps Alice's photos taken there then."""
    from PIL import Image

    if not (SHARED_FACES / "truth.json").is_file():
        pytest.skip(f"the shared face photos are absent ({SHARED_FACES})")
    summer = _last_summer(dt.date.today())
    in_summer, in_winter = dt.datetime(summer, 7, 14, 12), dt.datetime(summer - 1, 12, 28, 12)
    shots = {  # shared photo: (person in it per truth.json, where, when)
        "d007.jpg": (NICE, in_summer),
        "d021.jpg": (NICE, in_winter),
        "d026.jpg": ((48.8584, 2.2945), in_summer),
        "d004.jpg": (NICE, in_summer),
        "d015.jpg": (NICE, in_summer),
        "d024.jpg": (None, in_summer),
    }
    folder = tmp_path / "people"
    folder.mkdir()
    for name, (where, when) in shots.items():
        with Image.open(SHARED_FACES / name) as image:
            image.convert("RGB").save(folder / name, quality=95)
        rendered = folder / name
        with Image.open(rendered) as image:
            pixels = image.copy()
        exif = pixels.getexif()
        exif.get_ifd(0x8769)[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
        if where is not None:
            gps = exif.get_ifd(0x8825)
            gps[1], gps[2], gps[3], gps[4] = "N", _dms(where[0]), "E", _dms(where[1])
        pixels.save(rendered, exif=exif, quality=95)
    cli.json("index", str(folder), "--no-ocr")
    people = cli.json("people", model=None)
    alice = next(p for p in people if str(folder / "d007.jpg") in p["files"])  # person_01's
    bob = next(p for p in people if str(folder / "d004.jpg") in p["files"])  # person_07's
    assert alice["id"] != bob["id"]
    cli.json("people", "name", alice["id"], "Alice", model=None)
    cli.json("people", "name", bob["id"], "Bob", model=None)
    alice_files = {Path(f).name for f in alice["files"]}
    bob_files = {Path(f).name for f in bob["files"]}
    there_then = {n for n, (where, when) in shots.items() if where == NICE and when == in_summer}

    def found(text: str) -> set[str]:
        return {Path(h["path"]).name for h in cli.json("query", text, "--limit", "50")}

    doc = cli.json("query", "Alice in Nice last summer", "--explain")
    assert doc["people"] == ["Alice"] and doc["place"]["name"] == "Nice"
    assert "d007.jpg" in alice_files & there_then
    assert found("Alice in Nice last summer") == alice_files & there_then
    assert found("photos of bob in Nice last summer") == bob_files & there_then
    assert found("with Alice") == alice_files
    assert found("Alice and Bob") == alice_files & bob_files  # both in the picture: none here
