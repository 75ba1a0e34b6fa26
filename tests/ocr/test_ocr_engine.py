"""The OCR engine on pictures the tests render (fonts, sizes, +-15 degrees, both polarities, photo-like
backgrounds, a UI screenshot, a receipt) and on the shared real photos when ``../shared`` is there."""

from __future__ import annotations

import gzip
import json
import random
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from mediasearch.errors import MediaError
from mediasearch.lab import textpics
from mediasearch.ocr.engine import OcrEngine, TextLine
from mediasearch.ocr.text import normalise, words

if TYPE_CHECKING:
    from PIL import Image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OCR_DATA = SHARED / "ocr"
FACES_DATA = SHARED / "faces"
needs_shared = pytest.mark.skipif(not (OCR_DATA / "truth.json").is_file(), reason="../shared/data/ocr is absent")


@cache
def engine() -> OcrEngine:
    return OcrEngine()


def found_words(lines: list[TextLine]) -> set[str]:
    return {word for line in lines for word in words(line.text)}


def test_rendered_words_are_read_with_recall_of_at_least_097() -> None:
    found = total = 0
    missed = []
    for picture in textpics.suite():
        got = found_words(engine().read(picture.image))
        for word in picture.words:
            total += 1
            if word in got:
                found += 1
            else:
                missed.append((picture.name, word))
    assert total >= 70
    assert found / total >= 0.97, missed


def test_boxes_are_normalised_and_cover_the_text() -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (800, 600), (255, 255, 255))
    ImageDraw.Draw(image).text((420, 450), "Harbour", fill=(0, 0, 0), font=textpics.font(None, 48))
    (line,) = engine().read(image)
    assert words(line.text) == ["harbour"] and 0.5 <= line.conf <= 1.0
    left, top, right, bottom = line.box
    assert 0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0
    assert left == pytest.approx(420 / 800, abs=0.03) and top == pytest.approx(450 / 600, abs=0.06)
    assert line.as_dict()["box"] == [round(v, 4) for v in line.box]


def test_blank_and_textured_pictures_give_no_lines() -> None:
    rng = random.Random(3)
    assert engine().read(np.full((480, 640, 3), 128, np.uint8)) == []
    for seed in range(3):
        assert engine().read(textpics.background((1024, 768), rng, dark=seed % 2 == 0)) == []


def test_tiny_grey_and_odd_inputs() -> None:
    assert engine().read(np.zeros((1, 1, 3), np.uint8)) == []
    assert engine().read(np.zeros((10, 10), np.uint8)) == []  # grey arrays are taken as they are
    with pytest.raises(MediaError, match="RGB"):
        engine().read(np.zeros((4, 4, 2), np.uint8))


def _truth() -> dict[str, dict]:
    return json.loads((OCR_DATA / "truth.json").read_text())["files"]


def _read_shared(path: Path) -> set[str]:
    from mediasearch.media.decode import load_image

    image, _ = load_image(path, target=1024)
    return found_words(engine().read(image))


def _has(found: set[str], word: str) -> bool:
    """A search word counts as found when the recogniser's words hold it (digits read for letters
    are folded as the index folds them)."""
    from mediasearch.ocr.text import index_text

    wanted = words(word)
    return bool(wanted) and all(w in found or w in set(index_text([" ".join(found)]).split()) for w in wanted)


@needs_shared
@pytest.mark.slow
def test_shared_real_photos_search_words_recall() -> None:
    """All 25 real pictures with text: their 1-3 distinctive words (44 in all, 3 of them in scripts the
    bundled models do not read: Devanagari, Arabic, Vietnamese diacritics)."""
    found = total = 0
    for name, item in _truth().items():
        if item["kind"] != "text":
            continue
        got = _read_shared(OCR_DATA / name)
        total += len(item["words"])
        found += sum(_has(got, word) for word in item["words"])
    assert total == 44
    assert found / total >= 0.9


@needs_shared
def test_shared_small_pictures_with_words() -> None:
    """The quick part of the real set (rendered words, screenshots, a TV screen photo)."""
    for name in ("t003.jpg", "t009.jpg", "t013.jpg", "t019.jpg", "t026.jpg"):
        item = _truth()[name]
        got = _read_shared(OCR_DATA / name)
        assert all(_has(got, word) for word in item["words"]), (name, item["words"], got)


@cache
def dictionary() -> frozenset[str]:
    """English words: the whole-word entries (3+ letters) of CLIP's BPE vocabulary."""
    from mediasearch.clip.bpe import vocabulary_file

    merges = gzip.open(vocabulary_file()).read().decode("utf-8").split("\n")[1:]
    entries = (line.replace(" ", "") for line in merges)
    return frozenset(e[:-4] for e in entries if e.endswith("</w>") and e[:-4].isalpha() and len(e) >= 7)


@needs_shared
def test_shared_photos_without_text_match_no_dictionary_word() -> None:
    for name, item in _truth().items():
        if item["kind"] == "no_text":
            got = _read_shared(OCR_DATA / name)
            assert not got & dictionary(), (name, got)


@needs_shared
@pytest.mark.slow
def test_shared_face_photos_match_no_dictionary_word_but_real_captions() -> None:
    """The face photos as more text-free material; d003 is a press photo with a real caption."""
    assert len(dictionary()) > 20_000
    for path in sorted(FACES_DATA.glob("*.jpg")):
        got = _read_shared(path)
        if path.name != "d003.jpg":
            assert not got & dictionary(), (path.name, got)


def test_normalised_text_of_lines_is_searchable() -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (900, 300), (20, 20, 30))
    face = next((f for f in textpics.fonts() if f.name == "DejaVuSans.ttf"), None)
    if face is None:
        pytest.skip("needs a font with accented letters (DejaVu Sans)")
    ImageDraw.Draw(image).text((40, 100), "Café CRÈME 4,50", fill=(250, 250, 250), font=textpics.font(face, 56))
    text = normalise(" ".join(line.text for line in engine().read(image)))
    assert "cafe" in text and "creme" in text


def _tight(word: str, size: int, dark: bool) -> Image.Image:
    """``word`` on a canvas cut to its letters: it touches all four edges (a word crop, a banner)."""
    from PIL import Image, ImageDraw

    font = textpics.font(None, size)
    ink, paper = ((240, 240, 240), (20, 30, 60)) if dark else ((10, 10, 10), (235, 225, 200))
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), word, font=font)
    image = Image.new("RGB", (right - left, bottom - top), paper)
    ImageDraw.Draw(image).text((-left, -top), word, fill=ink, font=font)
    return image


@pytest.mark.parametrize("size", [24, 64, 120])
def test_a_word_filling_a_tight_canvas_is_read(size: int) -> None:
    """Text touching the picture's edges: the detector finds it once the picture is framed."""
    for word in ("Harbour", "Bakery", "LONDON"):
        for dark in (False, True):
            got = found_words(engine().read(_tight(word, size, dark)))
            assert word.lower() in got, (word, size, dark, got)


def test_boxes_of_a_small_picture_are_in_its_own_pixels() -> None:
    """A small picture is enlarged and framed for the detector; its boxes come back in its pixels."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (300, 200), (250, 250, 245))
    ImageDraw.Draw(image).text((150, 120), "Dock", fill=(0, 0, 0), font=textpics.font(None, 36))
    (line,) = engine().read(image)
    assert words(line.text) == ["dock"]
    left, top, right, bottom = line.box
    assert left == pytest.approx(150 / 300, abs=0.04) and top == pytest.approx(120 / 200, abs=0.06)
    assert right <= 1.0 and bottom <= 1.0


class _Mistaken:
    """The real angle classifier, wrong about every line: it says each is upside down and turns it."""

    def __init__(self, real: Any) -> None:
        self.cls_thresh = real.cls_thresh

    def __call__(self, crops: list[np.ndarray]) -> tuple[list[np.ndarray], list[list[Any]], float]:
        return [np.ascontiguousarray(np.rot90(crop, 2)) for crop in crops], [["180", 0.99] for _ in crops], 0.0


def test_a_line_the_angle_classifier_turns_wrongly_is_still_read() -> None:
    """The classifier takes some upright lines for upside down (red print on a dark sign); the
    recogniser reads nothing in them turned, so both ways are read and the surer reading kept."""
    from dataclasses import replace

    from PIL import Image, ImageDraw

    mistaken = OcrEngine()
    mistaken._parts = replace(mistaken._parts, cls=_Mistaken(mistaken._parts.cls))
    image = Image.new("RGB", (800, 300), (25, 25, 30))
    ImageDraw.Draw(image).text((60, 110), "Lighthouse 24H", fill=(220, 60, 60), font=textpics.font(None, 56))
    assert {"lighthouse", "24h"} <= found_words(mistaken.read(image))
    # and a line that is upside down is still read the right way up by the real classifier
    assert {"lighthouse", "24h"} <= found_words(engine().read(image.rotate(180)))
