#!/usr/bin/env python
"""Benchmark of the OCR engine: word recall and speed, with where the time goes; one table.

    python scripts/bench_ocr.py              # rendered pictures, 12 MP photos, the shared real photos
    python scripts/bench_ocr.py --quick      # fewer 12 MP photos, no faces photos
    python scripts/bench_ocr.py --threads 1  # the engine on one core

Rows: word recall on the pictures ``mediasearch.lab.textpics`` renders (fonts, sizes, +-15 degrees,
both polarities, photo-like backgrounds, a UI screenshot, a receipt); on the real photos of
``../shared/data/ocr`` (their 1-3 search words, matched as ``query --ocr`` matches them) when that
folder is there; recognised dictionary words on the photos there without text and on
``../shared/data/faces``; photos per second at 12 MP without text (the detector alone) and with a
few lines of text, as the OCR enricher gets them (long side 1500) and from the JPEG file (decoding
included); the split between detection and recognition. The machine's load is printed with the table:
figures from a loaded machine are slower than the engine is.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediasearch.lab import textpics  # noqa: E402
from mediasearch.ocr.engine import OcrEngine  # noqa: E402
from mediasearch.ocr.text import index_text, words  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
ENRICHER_SIDE = 1500  # index.enrichers.ocr.MAX_SIDE


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "unknown"


def dictionary() -> frozenset[str]:
    from mediasearch.clip.bpe import vocabulary_file

    merges = gzip.open(vocabulary_file()).read().decode("utf-8").split("\n")[1:]
    entries = (line.replace(" ", "") for line in merges)
    return frozenset(e[:-4] for e in entries if e.endswith("</w>") and e[:-4].isalpha() and len(e) >= 7)


def rendered_recall(engine: OcrEngine) -> tuple[float, int, float]:
    found = total = 0
    seconds = 0.0
    pictures = list(textpics.suite())
    for picture in pictures:
        start = time.perf_counter()
        got = {w for line in engine.read(picture.image) for w in words(line.text)}
        seconds += time.perf_counter() - start
        total += len(picture.words)
        found += sum(w in got for w in picture.words)
    return found / total, total, len(pictures) / seconds


def _searchable(lines: list[Any]) -> set[str]:
    return set(words(index_text([line.text for line in lines])))


def shared_recall(engine: OcrEngine) -> dict[str, Any] | None:
    from mediasearch.media.decode import load_image

    truth_file = SHARED / "ocr" / "truth.json"
    if not truth_file.is_file():
        return None
    truth = json.loads(truth_file.read_text())["files"]
    found = total = 0
    junk: list[str] = []
    seconds = 0.0
    missed = []
    for name, item in sorted(truth.items()):
        image, _ = load_image(SHARED / "ocr" / name, target=1024)
        start = time.perf_counter()
        lines = engine.read(image)
        seconds += time.perf_counter() - start
        got = _searchable(lines)
        if item["kind"] == "no_text":
            junk += sorted(got & dictionary())
            continue
        for word in item["words"]:
            total += 1
            hit = all(w in got for w in words(word)) and bool(words(word))
            found += hit
            if not hit:
                missed.append(f"{name}:{word}")
    return {"recall": found / total, "words": total, "per_s": len(truth) / seconds, "junk": junk, "missed": missed}


def faces_junk(engine: OcrEngine) -> tuple[int, list[str]]:
    from mediasearch.media.decode import load_image

    paths = sorted((SHARED / "faces").glob("*.jpg"))
    junk = []
    for path in paths:
        image, _ = load_image(path, target=1024)
        junk += [f"{path.name}:{w}" for w in sorted(_searchable(engine.read(image)) & dictionary())]
    return len(paths), junk


def photo_12mp(seed: int, text: bool) -> Any:
    """A 4000x3000 photo-like picture, with a shop sign and a poster when ``text``."""
    if not text:
        return textpics.background((4000, 3000), random.Random(seed), dark=seed % 2 == 0)
    rng = random.Random(seed)
    face = next(iter(textpics.fonts()), None)
    return textpics.scene(
        tuple(rng.sample(textpics.WORDS, 4)),
        font_path=face,
        size=160,
        angle=rng.uniform(-10, 10),
        dark=seed % 2 == 0,
        seed=seed,
        canvas=(4000, 3000),
    )


def speed_12mp(engine: OcrEngine, count: int, text: bool) -> dict[str, float]:
    """Photos/s on the enricher's pixels (long side 1500) and from the JPEG file, and the detector's share."""
    import numpy as np

    from mediasearch.media.decode import load_image

    photos = [photo_12mp(i + (1000 if text else 0), text) for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, photo in enumerate(photos):
            files.append(Path(tmp) / f"{i}.jpg")
            photo.save(files[-1], quality=90)
        decode = read = detect = 0.0
        for path in files:
            start = time.perf_counter()
            image, _ = load_image(path, target=ENRICHER_SIDE)
            image.thumbnail((ENRICHER_SIDE, ENRICHER_SIDE))
            pixels = np.asarray(image)
            decode += time.perf_counter() - start
            start = time.perf_counter()
            engine.detect_boxes(pixels)
            detect += time.perf_counter() - start
            start = time.perf_counter()
            engine.read(pixels)
            read += time.perf_counter() - start
    return {
        "pixels_per_s": count / read,
        "file_per_s": count / (read + decode),
        "decode_ms": 1000 * decode / count,
        "detect_ms": 1000 * detect / count,
        "read_ms": 1000 * read / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--det-side", type=int, default=None, help="the first detection's long side (px)")
    parser.add_argument("--only", choices=("recall", "speed"), default=None)
    args = parser.parse_args()
    engine = OcrEngine(threads=args.threads, **({"det_side": args.det_side} if args.det_side else {}))
    engine.read(textpics.screenshot(0).image)  # sessions built and warm
    print(f"load before: {loadavg()}  threads: {engine.threads}  detection at {engine.det_side} px", flush=True)
    rows: list[tuple[str, str]] = []
    if args.only != "speed":
        recall, total, per_s = rendered_recall(engine)
        rows.append((f"rendered pictures: word recall ({total} words)", f"{recall:.3f}  ({per_s:.2f} pictures/s)"))
    count = 4 if args.quick else 12
    for text in (False, True) if args.only != "recall" else ():
        speed = speed_12mp(engine, count, text)
        what = "with text" if text else "without text"
        rows.append((f"12 MP photos {what}: photos/s on 1500 px pixels", f"{speed['pixels_per_s']:.2f}"))
        rows.append((f"12 MP photos {what}: photos/s from the JPEG", f"{speed['file_per_s']:.2f}"))
        split = f"decode {speed['decode_ms']:.0f}, detect {speed['detect_ms']:.0f}, read {speed['read_ms']:.0f}"
        rows.append((f"12 MP photos {what}: ms per photo", split))
    shared = shared_recall(engine) if args.only != "speed" else None
    if shared is not None:
        rows.append((f"shared real photos: search-word recall ({shared['words']} words)", f"{shared['recall']:.3f}"))
        rows.append(("shared real photos: missed", " ".join(shared["missed"]) or "-"))
        rows.append(("shared real photos: pictures/s (all 32, documents included)", f"{shared['per_s']:.2f}"))
        rows.append(("shared photos without text: dictionary words read", " ".join(shared["junk"]) or "none"))
        if not args.quick:
            photos, junk = faces_junk(engine)
            rows.append((f"shared faces photos ({photos}): dictionary words read", " ".join(junk) or "none"))
    width = max(len(what) for what, _ in rows)
    for what, value in rows:
        print(f"{what:<{width}}  {value}")
    print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
