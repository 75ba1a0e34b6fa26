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
