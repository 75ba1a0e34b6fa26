"""The enrichment pass: enrichers run on what lacks their version and nothing else, never encode, write
their fields with their version, survive a failing file, resume after a stop, and lose their data when
turned off."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mediasearch as ms
from mediasearch.errors import MediaError
from mediasearch.index import enrichers
from mediasearch.index.enrich import FileInput, drop_fields
from mediasearch.library import home as library
from mediasearch.library import models
from mediasearch.settings import Settings
from mediasearch.store.base import Filter, Store

ENCODED = {"clip": 1, "metadata": 1}


class Reader:
    """A pixel enricher that writes what it saw: the file's stem and each frame's size and mean colour."""

    reads = "pixels"
    fields = ("ocr_text",)

    def __init__(self, name: str = "ocr", version: int = 1, max_side: int = 48, fail_on: str = "") -> None:
        self.name, self.version, self.max_side, self.fail_on = name, version, max_side, fail_on
        self.seen: list[FileInput] = []

    def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
        self.seen.append(item)
        if self.fail_on and self.fail_on in item.path:
            raise MediaError("no text could be read")
        out = {}
        for frame in item.frames:
            assert frame.pixels is not None
            mean = frame.pixels.reshape(-1, 3).mean(0).round().astype(int).tolist()
            words = f"{Path(item.path).stem} {frame.pixels.shape[1]}x{frame.pixels.shape[0]} {mean}"
            out[frame.point_id] = {"ocr_text": words}
        return out

    def drop(self, store: Store) -> None:
        drop_fields(store, self)

    def forget(self, point_ids: Sequence[str], store: Store) -> None:
        pass


@pytest.fixture(autouse=True)
def mechanism_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Of the real enrichers only metadata (part of the CLIP pass): these tests are about the pass; each
    signal's enricher (places, OCR, faces) is tested with its own package."""
    real = enrichers.installed
    monkeypatch.setattr(enrichers, "installed", lambda s: [e for e in real(s) if e.name == "metadata"])


def only_metadata(settings: Settings) -> list[Any]:
    """The installation's metadata enricher alone: the tests plug in their own instead of OCR, faces, places."""
    return [e for e in REAL_INSTALLED(settings) if e.name == "metadata"]


REAL_INSTALLED = enrichers.installed


@pytest.fixture(autouse=True)
def plug(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``plug(*enrichers)``: these are installed beside the metadata enricher (as adapter modules would be)."""
    monkeypatch.setattr(enrichers, "installed", only_metadata)

    def install(*extra: Any) -> None:
        monkeypatch.setattr(enrichers, "installed", lambda s: [*only_metadata(s), *extra])

    return install


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch, demo_model: Any) -> Iterator[list[str]]:
    """Every model load and every batch the model encodes, by name."""
    calls: list[str] = []
    load = models.load

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        calls.append("load")
        return load(*args, **kwargs)

    encode = demo_model.encode_tensors

    def counting_encode(batch: Any) -> Any:
        calls.append("encode")
        return encode(batch)

    monkeypatch.setattr(models, "load", counting_load)
    monkeypatch.setattr(demo_model, "encode_tensors", counting_encode)
    yield calls


def points(settings: Settings) -> dict[str, dict[str, Any]]:
    """id -> payload of every point of the home."""
    opened = library.open_for_query(settings, need_model=False)
    with opened.store as store:
        return {r.id: r.payload for r in store.scroll()}


def index(settings: Settings, folder: Path) -> dict[str, Any]:
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        return lib.index([str(folder)]).to_json()


@pytest.fixture
def media(make_image: Callable[..., Path], make_video: Callable[..., Path], tmp_path: Path) -> Path:
    make_image("media/red.jpg", size=(200, 100), color=(220, 30, 30))
    make_image("media/blue.png", size=(60, 90), color=(40, 70, 220))
    make_video("media/clip.mp4", seconds=6.0)
    return tmp_path / "media"


def test_an_added_enricher_runs_alone_on_indexed_files_and_nothing_is_encoded(
    media: Path, demo_settings: Callable[..., Settings], plug: Callable[..., None], loads: list[str]
) -> None:
    settings = demo_settings()
    first = index(settings, media)
    assert first["added"] == 3 and first["enriched"] == {"metadata": 0}
    assert "encode" in loads
    before = points(settings)
    assert all(p["enrichers"] == ENCODED for p in before.values())

    reader = Reader()
    plug(reader)
    loads.clear()
    report = index(settings, media)
    assert loads == []  # the model was not even loaded
    assert report["unchanged"] == 3 and report["added"] == report["updated"] == 0
    assert report["enriched"] == {"metadata": 0, "ocr": len(before)}
    after = points(settings)
    assert after.keys() == before.keys()
    for pid, payload in after.items():
        assert payload["enrichers"] == {**ENCODED, "ocr": 1}
        assert payload["ocr_text"].startswith(Path(payload["path"]).stem)
        assert {k: v for k, v in payload.items() if k not in ("enrichers", "ocr_text")} == {
            k: v for k, v in before[pid].items() if k != "enrichers"
        }

    reader.seen.clear()
    assert index(settings, media)["enriched"] == {"metadata": 0, "ocr": 0}
    assert reader.seen == []  # done at its version: not run again

    reader.version = 2
    assert index(settings, media)["enriched"]["ocr"] == len(before)  # bumped: every item again
    assert {p["enrichers"]["ocr"] for p in points(settings).values()} == {2}
    assert loads == []


def test_pixels_come_at_the_enricher_size_and_video_frames_at_their_stored_times(
    media: Path,
    demo_settings: Callable[..., Settings],
    plug: Callable[..., None],
    video_color_at: Callable[..., tuple[int, int, int]],
) -> None:
    settings = demo_settings()
    index(settings, media)
    small, large = Reader("ocr", max_side=40), Reader("faces", max_side=120)
    plug(small, large)
    index(settings, media)
    for reader in (small, large):
        by_path = {Path(i.path).name: i for i in reader.seen}
        assert sorted(by_path) == ["blue.png", "clip.mp4", "red.jpg"]
        for item in reader.seen:
            for frame in item.frames:
                assert frame.pixels is not None and frame.pixels.dtype == np.uint8
                assert max(frame.pixels.shape[:2]) <= reader.max_side
        red = by_path["red.jpg"].frames[0].pixels
        assert red is not None and red.shape[1] == 2 * red.shape[0]  # the aspect kept
        assert abs(red.reshape(-1, 3).mean(0) - (220, 30, 30)).max() < 12
        video = by_path["clip.mp4"]
        assert video.kind == "video" and len(video.frames) == 3
        for frame in video.frames:
            assert frame.timestamp is not None and frame.pixels is not None
            colour = video_color_at(frame.timestamp + 0.01)
            assert abs(frame.pixels.reshape(-1, 3).mean(0) - colour).max() < 25, frame.timestamp
        assert video.payload["kind"] == "video" and video.payload["path"] == video.path


def test_a_failing_file_is_one_line_and_is_tried_again_next_run(
    media: Path, demo_settings: Callable[..., Settings], plug: Callable[..., None]
) -> None:
    settings = demo_settings()
    index(settings, media)
    reader = Reader(fail_on="blue")
    plug(reader)
    report = index(settings, media)
    assert report["failed"] == 0  # the file is indexed: only one of its signals is missing
    errors = [(Path(e["path"]).name, e["error"]) for e in report["errors"]]
    assert errors == [("blue.png", "ocr: no text could be read")]
    done = {Path(p["path"]).name for p in points(settings).values() if "ocr" in p["enrichers"]}
    assert done == {"red.jpg", "clip.mp4"}
    reader.seen.clear()
    reader.fail_on = ""
    assert index(settings, media)["enriched"]["ocr"] == 1
    assert [Path(i.path).name for i in reader.seen] == ["blue.png"]


def test_a_stopped_pass_goes_on_where_it_stopped(
    media: Path, demo_settings: Callable[..., Settings], plug: Callable[..., None]
) -> None:
    settings = demo_settings()
    index(settings, media)

    class Stopped(BaseException):
        pass

    class StopsAtSecond(Reader):
        def run(self, item: FileInput, store: Store) -> dict[str, dict[str, Any]]:
            if len(self.seen) == 1:
                self.seen.append(item)
                raise Stopped  # as a kill would: nothing of this file is written
            return super().run(item, store)

    plug(StopsAtSecond())
    with pytest.raises(Stopped):
        index(settings, media)
    first = {Path(p["path"]).name for p in points(settings).values() if "ocr" in p["enrichers"]}
    assert len(first) == 1
    reader = Reader()
    plug(reader)
    index(settings, media)
    assert {Path(i.path).name for i in reader.seen} == {"blue.png", "clip.mp4", "red.jpg"} - first
    assert all(p["enrichers"].get("ocr") == 1 for p in points(settings).values())


def test_turned_off_its_data_is_deleted_and_turned_on_it_comes_back(
    media: Path, demo_settings: Callable[..., Settings], plug: Callable[..., None]
) -> None:
    settings = demo_settings()
    plug(Reader())
    index(settings, media)
    assert all(p.get("ocr_text") for p in points(settings).values())
    off = demo_settings(ocr=False)
    assert index(off, media)["enriched"] == {"metadata": 0}
    for payload in points(off).values():
        assert payload["enrichers"] == ENCODED and payload.get("ocr_text") is None
    with library.open_for_query(off, need_model=False).store as store:
        assert store.count(Filter(ocr=("red",))) == 0
    assert index(settings, media)["enriched"]["ocr"] == len(points(settings))


def _gps_jpeg(path: Path) -> Path:
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS R5"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:14 10:30:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (43.0, 42.0, 0.0), "E", (7.0, 16.0, 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, exif=exif)
    return path


def test_a_file_indexed_before_gps_was_read_gets_its_place_without_encoding(
    tmp_path: Path, demo_settings: Callable[..., Settings], loads: list[str]
) -> None:
    photo = _gps_jpeg(tmp_path / "trip" / "nice.jpg")
    settings = demo_settings()
    index(settings, photo.parent)
    [(pid, fresh)] = points(settings).items()
    assert fresh["geo"] == pytest.approx({"lat": 43.7, "lon": 7.2667}, abs=1e-3) and fresh["camera"] == "Canon EOS R5"
    # What an older release stored: no place, no camera, the file's mtime as its date (and, once
    # upgraded, a record of the vector alone).
    with library.open_for_query(settings, need_model=False).store as store:
        store.set_payload([pid], {"geo": None, "camera": None, "date": fresh["mtime"], "enrichers": {"clip": 1}})
    loads.clear()
    report = index(settings, photo.parent)
    assert loads == [] and report["unchanged"] == 1 and report["enriched"] == {"metadata": 1}
    [again] = points(settings).values()
    assert again == fresh


def test_a_place_is_found_in_the_pass_that_reads_the_gps(
    tmp_path: Path, demo_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older point with neither GPS nor place: metadata reads the GPS and places names the town in one
    pass (places sees what metadata wrote for the file, not the payload from before the pass)."""
    monkeypatch.setattr(
        enrichers, "installed", lambda s: [e for e in REAL_INSTALLED(s) if e.name in ("metadata", "places")]
    )
    photo = _gps_jpeg(tmp_path / "trip" / "nice.jpg")
    settings = demo_settings()
    index(settings, photo.parent)
    [(pid, fresh)] = points(settings).items()
    assert "nice" in fresh["places"] and fresh["enrichers"]["places"] >= 1
    with library.open_for_query(settings, need_model=False).store as store:
        store.set_payload([pid], {"geo": None, "place": None, "places": None, "enrichers": {"clip": 1}})
    report = index(settings, photo.parent)
    assert report["enriched"] == {"metadata": 1, "places": 1}
    [again] = points(settings).values()
    assert again == fresh


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.sampled_from(["bump", "off", "on", "index"]), min_size=1, max_size=6))
def test_after_any_run_each_point_records_exactly_the_enabled_versions(
    steps: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    make_image: Callable[..., Path],
    demo_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = tmp_path_factory.mktemp("case")
    make_image(base / "media" / "a.jpg", color=(40, 170, 60))
    make_image(base / "media" / "b.png", color=(250, 140, 20))
    reader = Reader()
    monkeypatch.setattr(enrichers, "installed", lambda s: [*only_metadata(s), reader])
    on = True
    for step in [*steps, "index"]:
        if step == "bump":
            reader.version += 1
        elif step in ("on", "off"):
            on = step == "on"
        else:
            current = demo_settings(home=base / "home", ocr=on)
            index(current, base / "media")
            for payload in points(current).values():
                assert payload["enrichers"] == ({**ENCODED, "ocr": reader.version} if on else ENCODED)
                assert bool(payload.get("ocr_text")) == on
