"""The library's places: the cities of its geotagged files with file counts, and the names to filter on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.geo.gazetteer import gazetteer
from mediasearch.search.places import place_counts, place_names
from mediasearch.store.base import Filter, PointIn, point_id

SPOTS = {"nice": (43.7009, 7.2683), "antibes": (43.5804, 7.1251), "sydney": (-33.8568, 151.2153)}


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_places_count_files_once_and_filter_by_any_of_their_names(tmp_path: Path, backend: str) -> None:
    from mediasearch.store import collections
    from mediasearch.store.server import forget_memory_servers

    forget_memory_servers()
    gaz = gazetteer()
    files = [
        ("nice_video.mp4", "nice", 3),
        ("nice.jpg", "nice", 1),
        ("antibes.jpg", "antibes", 1),
        ("sydney.jpg", "sydney", 1),
        ("unplaced.jpg", None, 1),
    ]
    points = []
    for path, spot, frames in files:
        location = gaz.reverse(*SPOTS[spot]) if spot else None
        payload = {"path": path, **(location.payload() if location else {})}
        for t in range(frames):
            points.append(
                PointIn(point_id(path, float(t) if frames > 1 else None), np.array([1.0, 0.0], np.float32), payload)
            )
    url = ":memory:" if backend == "memory" else None
    try:
        with collections.open_store(
            home=tmp_path, collection="media_places", dim=2, qdrant_url=url, create=True
        ) as store:
            store.upsert(points)
            rows = place_counts(store)
            assert rows[0] == ("Nice", "Provence-Alpes-Cote d'Azur", "France", 2)  # the video counts once
            assert {r[0]: r[3] for r in rows} == {"Nice": 2, "Antibes": 1, "Sydney": 1}
            names = place_names(store)
            assert {"nice", "antibes", "france", "australia", "provence alpes cote d azur"} <= set(names)

            def paths(place: str) -> set[str]:
                return {r.payload["path"] for r in store.scroll(Filter(place=place))}

            assert paths("france") == {"nice_video.mp4", "nice.jpg", "antibes.jpg"}
            assert paths("antibes") == {"antibes.jpg"}
            assert paths("australia") == {"sydney.jpg"}
            assert paths("japan") == set()
    finally:
        forget_memory_servers()


def test_places_of_a_library_without_gps_say_so(cli: Any, make_image: Any, tmp_path: Path) -> None:
    make_image(tmp_path / "photos" / "no_gps.jpg")
    cli.json("index", str(tmp_path / "photos"))
    assert cli.json("places") == []
    assert "no geotagged files" in cli("places").output


def _geotagged(path: Path, lat: float, lon: float) -> Path:
    from PIL import Image

    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        degrees, minutes = int(value), int((abs(value) - int(value)) * 60)
        return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4)

    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, exif=exif)
    return path


def test_the_places_enricher_names_geotagged_files_and_goes_when_turned_off(
    tmp_path: Path, demo_settings: Any, make_image: Any
) -> None:
    import mediasearch as ms
    from mediasearch.library import home as library

    folder = tmp_path / "trip"
    _geotagged(folder / "nice.jpg", *SPOTS["nice"])
    _geotagged(folder / "sea.jpg", 0.0, -140.0)  # the middle of the Pacific: no town near
    make_image(folder / "no_gps.jpg")

    def payloads(settings: Any) -> dict[str, dict[str, Any]]:
        with library.open_for_query(settings, need_model=False).store as store:
            return {Path(r.payload["path"]).stem: r.payload for r in store.scroll()}

    on = demo_settings()
    with ms.Library.open(settings=on, use_daemon=False) as lib:
        assert lib.index([str(folder)]).enriched["places"] == 3
        assert [(p.city, p.files) for p in lib.places()] == [("Nice", 1)]
    stored = payloads(on)
    assert stored["nice"]["place"] == {"city": "Nice", "region": "Provence-Alpes-Cote d'Azur", "country": "France"}
    assert stored["nice"]["places"] == ["nice", "provence alpes cote d azur", "france"]
    assert stored["sea"].get("place") is None and stored["no_gps"].get("place") is None
    assert all(p["enrichers"]["places"] == 1 for p in stored.values())

    off = demo_settings(places=False)
    with ms.Library.open(settings=off, use_daemon=False) as lib:
        lib.index([str(folder)])
        assert lib.places() == []
    assert all(p.get("places") is None and "places" not in p["enrichers"] for p in payloads(off).values())

    with ms.Library.open(settings=on, use_daemon=False) as lib:
        report = lib.index([str(folder)])
        assert report.unchanged == 3 and report.enriched["places"] == 3  # named again, nothing encoded
        assert [p.city for p in lib.places()] == ["Nice"]
