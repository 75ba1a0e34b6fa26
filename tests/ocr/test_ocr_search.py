"""Searching recognised text: ``--ocr`` keeps the items holding every word; a plain text query fuses the
words found in pictures with the CLIP ranking; hits carry the matching text; a video's moment is where
the words are on screen. On both store backends, through the CLI and Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mediasearch as ms
from mediasearch.lab.shapes import render
from mediasearch.ocr.text import words


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shape photos the demo model knows, pictures with words it cannot read, and a talk with a slide."""
    import numpy as np
    from PIL import Image, ImageDraw

    from mediasearch.lab import textpics

    root = tmp_path_factory.mktemp("ocr-search") / "media"
    root.mkdir()
    rng = np.random.default_rng(3)
    for colour, shape in (("red", "circle"), ("blue", "star"), ("green", "square"), ("red", "square")):
        render(colour, shape, rng=rng, size=(320, 240)).save(root / f"{colour}_{shape}.jpg")
    face = next(iter(textpics.fonts()), None)
    for name, text in (("receipt.jpg", ("STARBUCKS", "Latte", "TOTAL")), ("sign.png", ("WiFi", "password", "harbour"))):
        textpics.scene(text, font_path=face, size=52, angle=0.0, dark=False, seed=len(name)).save(root / name)
    # A red circle with a caption: CLIP's and the words' rankings disagree on it.
    captioned = render("red", "circle", rng=rng, size=(640, 480))
    ImageDraw.Draw(captioned).text((30, 400), "harbour festival", fill=(255, 255, 255), font=textpics.font(face, 40))
    captioned.save(root / "captioned_circle.jpg")
    _slide_video(root / "talk.mp4", face)
    assert Image.open(root / "sign.png").size == (1024, 768)
    return root


def _slide_video(path: Path, face: Any) -> None:
    import av
    import numpy as np
    from PIL import Image, ImageDraw

    from mediasearch.lab import textpics

    plain = np.full((360, 640, 3), (40, 70, 220), np.uint8)
    slide = Image.new("RGB", (640, 360), (250, 250, 250))
    ImageDraw.Draw(slide).text((40, 140), "Quarterly invoice summary", fill=(20, 20, 20), font=textpics.font(face, 40))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = 640, 360, "yuv420p", 8
        for i in range(48):  # 12 s; the slide from 4 s to 8 s
            pixels = np.asarray(slide) if 16 <= i < 32 else plain
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module", params=["edge", "server"])
def library(request: pytest.FixtureRequest, folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mediasearch.settings import load_settings
    from mediasearch.store.server import forget_memory_servers

    forget_memory_servers()
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    extra = {"qdrant_url": ":memory:"} if request.param == "server" else {}
    settings = load_settings({"home": home, "model": "demo", "device": "cpu", **extra}, env={})
    lib = ms.Library.open(settings=settings, use_daemon=False)
    report = lib.index([str(folder)])
    assert report.errors == [] and report.to_json()["enriched"]["ocr"] > 0
    yield lib
    lib.close()
    forget_memory_servers()


def _names(hits: list[Any]) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_a_word_in_a_picture_comes_first_and_carries_its_text(library: Any) -> None:
    hits = library.query("the receipt from starbucks", limit=5)
    assert _names(hits)[0] == "receipt.jpg"
    assert hits[0].text is not None and "starbucks" in words(hits[0].text)
    assert all(h.text is None for h in hits[1:] if Path(h.path).name.endswith("_square.jpg"))


def test_fusion_keeps_what_clip_finds(library: Any) -> None:
    """"red circle harbour": the captioned red circle holds a word and looks right: first; the plain
    red circle, which CLIP ranks high, stays among the results."""
    names = _names(library.query("a red circle at the harbour", limit=4))
    assert names[0] == "captioned_circle.jpg"
    assert "red_circle.jpg" in names


def test_ocr_keeps_only_items_holding_every_word(library: Any) -> None:
    hits = library.query("a photo", ocr=["wifi password"], limit=10)
    assert _names(hits) == ["sign.png"]
    assert {"wifi", "password"} <= set(words(hits[0].text or ""))
    assert library.query("a photo", ocr=["wifi starbucks"], limit=10) == []
    assert _names(library.query("a photo", ocr=["STARBUCK"], limit=10)) == ["receipt.jpg"]  # a prefix, any case


def test_a_video_moment_is_where_the_words_are_on_screen(library: Any) -> None:
    for hits in (library.query("a blue square", ocr=["invoice"], limit=3), library.query("quarterly invoice", limit=3)):
        video = next(h for h in hits if h.kind == "video")
        assert 4.0 <= video.timestamp < 8.0 and 4.0 <= video.start <= video.timestamp <= video.end < 8.0
        assert "invoice" in words(video.text or "")


def test_cli_json_hits_carry_text(cli: Any, folder: Path) -> None:
    cli("index", str(folder))
    rows = cli.json("query", "starbucks receipt", "--limit", "3")
    assert Path(rows[0]["path"]).name == "receipt.jpg" and "starbucks" in words(rows[0]["text"])
    assert all("text" in row for row in rows)
    rows = cli.json("query", "a photo", "--ocr", "wifi password")
    assert [Path(r["path"]).name for r in rows] == ["sign.png"]
    table = cli("query", "starbucks receipt", "--limit", "2").output
    assert "latte" in table.lower()  # the recognised line under the path (the query does not say it)
    assert "no good match" not in table  # a word found in the picture is a match, whatever CLIP's score
