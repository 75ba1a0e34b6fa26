"""The OCR enricher in indexing: after the CLIP pass every picture and video frame gets its recognised
text, searchable with ``--ocr`` on both store backends; ``text`` answers from the index; turning OCR
off deletes its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mediasearch as ms
from mediasearch.library import home as library
from mediasearch.ocr.text import words
from mediasearch.settings import Settings
from mediasearch.store.base import Filter


@pytest.fixture
def folder(make_text_picture: Any, make_slide_video: Any, make_image: Any, tmp_path: Path) -> Path:
    make_text_picture("media/receipt.jpg", ["starbucks", "coffee", "total"])
    make_text_picture("media/sign.png", ["harbour", "parking"], angle=12.0, dark=True)
    make_image("media/plain.jpg", size=(320, 240), color=(40, 170, 60))
    make_slide_video("media/talk.mp4", ["quarterly", "invoice"])
    return tmp_path / "media"


def payloads(settings: Settings) -> list[dict[str, Any]]:
    opened = library.open_for_query(settings, need_model=False)
    with opened.store as store:
        return [r.payload for r in store.scroll()]


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_index_reads_text_into_payloads_and_ocr_filters_on_both_backends(
    folder: Path, demo_settings: Any, demo_model: Any, backend: str
) -> None:
    from mediasearch.store.server import forget_memory_servers

    forget_memory_servers()
    settings = demo_settings(**({"qdrant_url": ":memory:"} if backend == "server" else {}))
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        report = lib.index([str(folder)])
    assert report.errors == [] and report.to_json()["enriched"]["ocr"] == report.frames + 3
    by_name: dict[str, list[dict[str, Any]]] = {}
    for p in payloads(settings):
        by_name.setdefault(Path(p["path"]).name, []).append(p)
    assert {"starbucks", "coffee", "total"} <= set(words(by_name["receipt.jpg"][0]["ocr_text"]))
    assert {"harbour", "parking"} <= set(words(by_name["sign.png"][0]["ocr_text"]))
    assert by_name["plain.jpg"][0].get("ocr_text") is None and by_name["plain.jpg"][0]["ocr_lines"] == []
    for frame in by_name["talk.mp4"]:
        shown = 4.0 <= frame["timestamp"] < 8.0
        assert ("invoice" in words(frame.get("ocr_text") or "")) == shown, frame["timestamp"]
    line = by_name["receipt.jpg"][0]["ocr_lines"][0]
    assert set(line) == {"text", "conf", "box"} and len(line["box"]) == 4
    opened = library.open_for_query(settings, need_model=False)
    with opened.store as store:
        found = {Path(r.payload["path"]).name for r in store.scroll(Filter(ocr=("starbuck",)), fields=["path"])}
        assert found == {"receipt.jpg"}  # a long word from its beginning
        assert store.count(Filter(ocr=("invoice", "quarterly"))) >= 2  # the slide's frames
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        stored = lib.text(folder / "talk.mp4")
    assert stored.source == "index" and stored.kind == "video"
    assert any("invoice" in words(line.text) for line in stored.lines)
    assert all(4.0 <= line.timestamp < 8.0 for line in stored.lines if "invoice" in words(line.text))
    forget_memory_servers()


def test_turning_ocr_off_deletes_its_data_and_on_brings_it_back(
    folder: Path, demo_settings: Any, demo_model: Any
) -> None:
    settings = demo_settings()
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        lib.index([str(folder)])
    off = demo_settings(ocr=False)
    with ms.Library.open(settings=off, use_daemon=False) as lib:
        report = lib.index([str(folder)])
        assert "ocr" not in report.to_json()["enriched"]
        assert lib.text(folder / "receipt.jpg").source == "read"  # nothing stored: read on the spot
    assert all(not p.get("ocr_text") and not p.get("ocr_lines") for p in payloads(off))
    assert all("ocr" not in (p.get("enrichers") or {}) for p in payloads(off))
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        again = lib.index([str(folder)])
    assert again.to_json()["enriched"]["ocr"] > 0 and again.added == 0  # no CLIP work, OCR only
    texts = [p["ocr_text"] for p in payloads(settings) if Path(p["path"]).name == "receipt.jpg"]
    assert "starbucks" in words(texts[0])


def test_the_words_at_the_ends_of_a_banner_are_read(tmp_path: Path, demo_settings: Any, demo_model: Any) -> None:
    """A picture wider than 4:1: CLIP sees its middle (the decoder crops it to 4:1), the OCR enricher
    and `text` read it whole, so the words at both ends are found, with boxes in the whole picture."""
    from PIL import Image, ImageDraw

    from mediasearch.lab import textpics
    from mediasearch.media.decode import load_image

    banner = Image.new("RGB", (2400, 300), (245, 240, 225))
    draw = ImageDraw.Draw(banner)
    face = textpics.font(next(iter(textpics.fonts()), None), 90)
    draw.text((30, 100), "Harbour", fill=(20, 20, 20), font=face)
    draw.text((1950, 100), "Parking", fill=(20, 20, 20), font=face)
    folder = tmp_path / "banners"
    folder.mkdir()
    banner.save(folder / "banner.png")
    banner.save(tmp_path / "loose.png")  # not indexed: `text` reads it now
    assert load_image(folder / "banner.png", target=224)[0].size == (1200, 300)  # CLIP's view: 4:1
    assert load_image(folder / "banner.png", target=224, whole=True)[0].size == (2400, 300)

    settings = demo_settings()
    with ms.Library.open(settings=settings, use_daemon=False) as lib:
        assert lib.index([str(folder)]).errors == []
        read = lib.text(str(tmp_path / "loose.png"))
    (payload,) = payloads(settings)
    assert {"harbour", "parking"} <= set(words(payload["ocr_text"]))
    boxes = {words(line["text"])[0]: line["box"] for line in payload["ocr_lines"]}
    assert boxes["harbour"][0] < 0.1 and boxes["parking"][2] > 0.8  # left and right ends of the whole banner
    assert read.source == "read" and {"harbour", "parking"} <= {w for line in read.lines for w in words(line.text)}
