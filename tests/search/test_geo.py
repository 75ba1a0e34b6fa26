"""Place and camera: EXIF GPS becomes a geo point, and `query --near` / `--camera` filter on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.errors import QueryError
from mediasearch.lab.shapes import render
from mediasearch.media.decode import load_image
from mediasearch.search.query import parse_near

# (name, colour, shape, (lat, lon) or None, (make, model) or None)
PHOTOS = (
    ("paris_canon", "red", "circle", (48.8584, 2.2945), ("Canon", "Canon EOS R5")),
    ("versailles_iphone", "red", "circle", (48.8049, 2.1204), ("Apple", "iPhone 12")),  # 15 km from Paris
    ("sydney_canon", "red", "circle", (-33.8568, 151.2153), ("Canon", "Canon EOS 5D Mark IV")),
    ("nyc_nikon", "blue", "star", (40.6892, -74.0445), ("NIKON CORPORATION", "NIKON D750")),
    ("nowhere_iphone", "red", "circle", None, ("Apple", "iPhone 12")),
    ("nothing", "red", "circle", None, None),
)


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4)


def _photo(path: Path, colour: str, shape: str, place: Any, camera: Any, seed: int) -> Path:
    """A rendered photo with the EXIF a phone or a camera writes: make, model, and GPS in D/M/S."""
    img = render(colour, shape, rng=np.random.default_rng(seed), size=(240, 180))
    exif = img.getexif()
    if camera is not None:
        exif[0x010F], exif[0x0110] = camera
    if place is not None:
        lat, lon = place
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if lat >= 0 else "S"), _dms(lat)
        gps[3], gps[4] = ("E" if lon >= 0 else "W"), _dms(lon)
    img.save(path, exif=exif, quality=90)
    return path


@pytest.fixture
def placed(tmp_path: Path) -> Path:
    folder = tmp_path / "trip"
    folder.mkdir()
    for i, (name, colour, shape, place, camera) in enumerate(PHOTOS):
        _photo(folder / f"{name}.jpg", colour, shape, place, camera, seed=i)
    return folder


def test_exif_gps_is_read_in_decimal_degrees(placed: Path) -> None:
    _, meta = load_image(placed / "sydney_canon.jpg")
    assert meta.lat == pytest.approx(-33.8568, abs=1e-4) and meta.lon == pytest.approx(151.2153, abs=1e-4)
    assert meta.camera == "Canon EOS 5D Mark IV"
    _, meta = load_image(placed / "nyc_nikon.jpg")
    assert meta.lat == pytest.approx(40.6892, abs=1e-4) and meta.lon == pytest.approx(-74.0445, abs=1e-4)
    _, meta = load_image(placed / "nothing.jpg")
    assert meta.lat is None and meta.lon is None


def test_parse_near_accepts_a_place_and_refuses_nonsense() -> None:
    assert parse_near(" 48.85, 2.35 ,10") == (48.85, 2.35, 10.0)
    for bad in ("48.85,2.35", "91,0,1", "0,181,1", "1,2,0", "a,b,c", "1,2,nan"):
        with pytest.raises(QueryError):
            parse_near(bad)


def _names(rows: list[dict[str, Any]]) -> set[str]:
    return {Path(r["path"]).stem for r in rows}


def test_near_and_camera_filter_queries(cli: Any, placed: Path) -> None:
    report = cli.json("index", str(placed))
    assert report["added"] == len(PHOTOS) and report["failed"] == 0

    def found(*options: str) -> set[str]:
        return _names(cli.json("query", "a red circle", "--limit", "50", *options))

    assert found() == {name for name, *_ in PHOTOS}
    assert found("--near", "48.8566,2.3522,5") == {"paris_canon"}
    assert found("--near", "48.8566,2.3522,25") == {"paris_canon", "versailles_iphone"}
    assert found("--near", "-33.87,151.21,50") == {"sydney_canon"}
    assert found("--near", "0,0,1000") == set()
    assert found("--camera", "canon") == {"paris_canon", "sydney_canon"}
    assert found("--camera", "iPhone 12") == {"versailles_iphone", "nowhere_iphone"}
    assert found("--camera", "nikon d750") == {"nyc_nikon"}
    assert found("--camera", "Leica") == set()
    assert found("--near", "48.8566,2.3522,25", "--camera", "iphone") == {"versailles_iphone"}
    bad = cli("query", "a red circle", "--near", "48.8,2.3", ok=False)
    assert bad.exit_code != 0 and "LAT,LON,KM" in bad.output


def test_python_api_takes_near_and_camera(demo_settings: Any, demo_model: Any, placed: Path) -> None:
    import mediasearch as ms

    with ms.Library.open(settings=demo_settings(), use_daemon=False) as lib:
        lib.index([placed])
        hits = lib.query("a red circle", limit=50, near="48.8566,2.3522,25", camera="canon")
        assert {Path(h.path).stem for h in hits} == {"paris_canon"}
        hits = lib.query("a red circle", limit=50, near=(-33.87, 151.21, 50.0))
        assert {Path(h.path).stem for h in hits} == {"sydney_canon"}


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_both_store_backends_filter_by_place_and_camera(tmp_path: Path, backend: str) -> None:
    from mediasearch.store import collections
    from mediasearch.store.base import Filter, PointIn, point_id
    from mediasearch.store.filters import terms
    from mediasearch.store.server import forget_memory_servers

    forget_memory_servers()
    url = ":memory:" if backend == "memory" else None
    points = [
        ("paris", "Canon EOS R5", {"lat": 48.8584, "lon": 2.2945}),
        ("sydney", "Apple iPhone 12 Pro", {"lat": -33.8568, "lon": 151.2153}),
        ("unplaced", "Apple iPhone 12", None),
    ]
    try:
        with collections.open_store(home=tmp_path, collection="media_geo", dim=2, qdrant_url=url, create=True) as store:
            store.upsert(
                [
                    PointIn(
                        point_id(name, None),
                        np.array([1.0, 0.0], np.float32),
                        {"name": name, "camera": camera} | ({"geo": geo} if geo else {}),
                    )
                    for name, camera, geo in points
                ]
            )

            def names(flt: Filter) -> set[str]:
                found = {r.payload["name"] for r in store.scroll(flt)}
                assert found == {r.payload["name"] for r in store.search(np.array([1.0, 0.0], np.float32), 10, flt)}
                return found

            assert names(Filter(near=(48.8566, 2.3522, 10.0))) == {"paris"}
            assert names(Filter(near=(48.8566, 2.3522, 1.0))) == set()
            assert names(Filter(near=(-34.0, 151.0, 50.0))) == {"sydney"}
            assert names(Filter(camera="iPhone 12")) == {"sydney", "unplaced"}
            assert names(Filter(camera="canon eos")) == {"paris"}
            assert names(Filter(camera="iPhone 12", near=(-34.0, 151.0, 50.0))) == {"sydney"}
            assert not terms(Filter(camera="")) and Filter(camera="").is_empty()
    finally:
        forget_memory_servers()


def test_a_phone_video_keeps_its_iso6709_location(tmp_path: Path) -> None:
    import av

    from mediasearch.media.decode import sample_video

    def video(name: str, location: str | None) -> Path:
        path = tmp_path / name
        with av.open(str(path), "w", format="mp4") as container:
            if location is not None:
                container.metadata["location"] = location
            stream = container.add_stream("libx264", rate=4)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for _ in range(8):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return path

    meta = sample_video(str(video("sydney.mp4", "-33.8568+151.2153+012.000/"))).meta
    assert (meta.lat, meta.lon) == (pytest.approx(-33.8568), pytest.approx(151.2153))
    for name, location in (("none.mp4", None), ("zero.mp4", "+00.0000+000.0000/"), ("junk.mp4", "here")):
        meta = sample_video(str(video(name, location))).meta
        assert meta.lat is None and meta.lon is None


def test_a_daemon_answers_near_and_camera(tmp_path: Path, placed: Path) -> None:
    """The CLI's place and camera filters through the daemon that owns the home (/query and /similar)."""
    from daemon_helpers import Daemon, _cli

    daemon = Daemon(tmp_path / "home", str(placed), "--rescan-every", "off")
    try:
        daemon.wait_ready().wait_idle()

        def found(*options: str) -> set[str]:
            out = _cli(daemon.home, "query", "a red circle", "--limit", "50", *options, "--json")
            assert out.returncode == 0, out.stderr
            return _names(json.loads(out.stdout))

        assert found("--near", "48.8566,2.3522,25") == {"paris_canon", "versailles_iphone"}
        assert found("--near", "48.8566,2.3522,25", "--camera", "iphone") == {"versailles_iphone"}
        assert found("--camera", "canon") == {"paris_canon", "sydney_canon"}
        near = {"lat": -33.87, "lon": 151.21, "km": 50}
        similar = daemon.call("POST", "/similar", {"path": str(placed / "paris_canon.jpg"), "near": near})
        assert _names(similar) == {"sydney_canon"}
        assert _names(daemon.call("POST", "/similar", {"path": str(placed / "nothing.jpg"), "camera": "nikon"})) == {
            "nyc_nikon"
        }
    finally:
        daemon.stop()
