#!/usr/bin/env python
"""OCR on photos fetched from outside the project: search-word recall, and dictionary words read in
photos without text; one table each.

    python scripts/ocr_outside.py FOLDER TRUTH.json    # recall of each photo's 1-3 search words
    python scripts/ocr_outside.py --junk FOLDER         # photos without text that a word would find
    python scripts/ocr_outside.py --junk FOLDER --raw   # ... and what the junk filter dropped
    python scripts/ocr_outside.py --junk FOLDER --has-text LIST  # LIST: photos there that do show text

TRUTH.json: {"files": {"source/name.jpg": {"words": ["Louvre", "Mairie"], "crop": [l, t, r, b]}}}
(paths relative to FOLDER; the first folder of a path names its source; ``crop``, in pixels, keeps
the photo out of a figure that also prints text; ``"file"`` names the file where several photos are
cut from one). The photos are read as the OCR enricher reads
them (decoded to a long side of 1500) and a word counts as found when ``query --ocr WORD`` would find
the photo: every normalised word of it in the indexed text (``ocr.text.index_text``: lowercase,
accents folded, long-word prefixes, words split out of glued runs), the rule of
``scripts/bench_ocr.py``. The enricher reads a picture whole (CLIP's view is cropped to 4:1 at most,
which would cut the ends off a banner's words).

``--junk``: a photo counts when its indexed text holds a word of 3+ letters of the English word list
(``--words``: wordninja's list, the one the indexer splits glued runs with, by default; or a file of
one word per line such as /usr/share/dict/words). Photos named in ``--has-text`` (one path relative to
FOLDER a line, ``#`` comments: a sign or a logo you saw in them) are counted apart: a word found
there is no junk. ``scripts/data/`` holds the truth and the list for the photos the README names.
Every photo where a line was kept is listed with its lines. The machine's load is printed too.
None of the photos belong to the project: fetch them (the sources are listed in the README).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediasearch.ocr import engine as engine_module  # noqa: E402
from mediasearch.ocr.engine import OcrEngine, TextLine  # noqa: E402
from mediasearch.ocr.text import index_text, words  # noqa: E402

ENRICHER_SIDE = 1500  # index.enrichers.ocr.MAX_SIDE
PICTURES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
MIN_WORD = 3


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def english(path: str | None) -> frozenset[str]:
    """Words of ``MIN_WORD``+ letters: from ``path`` (one per line) or wordninja's list."""
    if path:
        entries = Path(path).read_text(errors="replace").split()
    else:
        import wordninja

        listing = Path(wordninja.__file__).parent / "wordninja" / "wordninja_words.txt.gz"
        entries = gzip.open(listing).read().decode("utf-8").split()
    return frozenset(w for e in entries for w in words(e) if len(w) >= MIN_WORD and w.isalpha())


def pixels(path: Path, crop: list[int] | None = None) -> Any:
    """The picture as the OCR enricher gets it: decoded whole, oriented, long side at most 1500."""
    from mediasearch.index.enrich import _fit
    from mediasearch.media.decode import load_image

    image, _ = load_image(path, target=ENRICHER_SIDE, whole=True)
    if crop:
        left, top, right, bottom = crop
        image = image.crop((left, top, right, bottom))
    return _fit(image, ENRICHER_SIDE)


def searchable(lines: list[TextLine]) -> set[str]:
    """The words a ``query --ocr`` would match in the payload of these lines."""
    return set(words(index_text([line.text for line in lines])))


def found(word: str, got: set[str]) -> bool:
    asked = words(word)
    return bool(asked) and all(w in got for w in asked)


def recall(engine: OcrEngine, folder: Path, truth_file: Path) -> None:
    truth = json.loads(truth_file.read_text())["files"]
    per_source: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    missed: list[str] = []
    seconds = 0.0
    for name, item in sorted(truth.items()):
        image = pixels(folder / item.get("file", name), item.get("crop"))
        start = time.perf_counter()
        lines = engine.read(image)
        seconds += time.perf_counter() - start
        got = searchable(lines)
        row = per_source[name.split("/")[0]]
        row[2] += 1
        for word in item["words"]:
            row[1] += 1
            if found(word, got):
                row[0] += 1
            else:
                read = " | ".join(line.text for line in lines) or "(nothing)"
                missed.append(f"{name}: {word!r} not found; read: {read}")
    total = [sum(row[i] for row in per_source.values()) for i in range(3)]
    print(f"{'source':<16}{'photos':>8}{'words':>8}{'found':>8}{'recall':>8}")
    for source, (hit, asked, photos) in sorted(per_source.items()) + [("all", tuple(total))]:
        print(f"{source:<16}{photos:>8}{asked:>8}{hit:>8}{hit / asked:>8.3f}")
    print(f"pictures/s (OCR only): {total[2] / seconds:.2f}")
    for line in missed:
        print(f"missed  {line}")


def raw_lines(engine: OcrEngine, image: Any) -> list[TextLine]:
    """Every recognised line, the junk filter (``ocr.junk.keep_line``) switched off."""
    keep = engine_module.keep_line
    engine_module.keep_line = lambda text, conf: bool(text.strip())
    try:
        return engine.read(image)
    finally:
        engine_module.keep_line = keep


def junk(engine: OcrEngine, folder: Path, dictionary: frozenset[str], raw: bool, has_text: set[str]) -> None:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICTURES)
    hits = {True: 0, False: 0}  # photo shows text -> photos a dictionary word finds
    raw_hits = {True: 0, False: 0}
    listed: list[str] = []
    dropped: list[str] = []
    seconds = 0.0
    for path in paths:
        name = path.relative_to(folder).as_posix()
        image = pixels(path)
        start = time.perf_counter()
        lines = engine.read(image)
        seconds += time.perf_counter() - start
        matched = sorted(searchable(lines) & dictionary)
        hits[name in has_text] += bool(matched)
        if lines:
            read = " | ".join(f"{line.text} ({line.conf:.2f})" for line in lines)
            label = "shows text" if name in has_text else "JUNK" if matched else "no word"
            listed.append(f"{label:<10}  {name}: {' '.join(matched) or '-'}  <- {read}")
        if raw:
            every = raw_lines(engine, image)
            raw_hits[name in has_text] += bool(searchable(every) & dictionary)
            kept = {(line.text, line.box) for line in lines}
            dropped += [f"{line.text!r} {line.conf:.2f}" for line in every if (line.text, line.box) not in kept]
    plain = len(paths) - len(has_text & {p.relative_to(folder).as_posix() for p in paths})
    print(f"word list: {len(dictionary)} words of {MIN_WORD}+ letters; photos: {len(paths)}, {plain} without text")
    print(f"photos without text that a dictionary word finds: {hits[False]} of {plain}")
    print(f"photos showing text (--has-text) that a dictionary word finds: {hits[True]} of {len(paths) - plain}")
    print(f"pictures/s (OCR only): {len(paths) / seconds:.2f}")
    for line in listed:
        print(f"lines  {line}")
    if raw:
        print(f"junk filter off: photos without text a dictionary word finds: {raw_hits[False]} of {plain}")
        print(f"junk filter off: lines the filter drops: {len(dropped)}: " + "; ".join(dropped))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("truth", type=Path, nargs="?", help="TRUTH.json (not with --junk)")
    parser.add_argument("--junk", action="store_true", help="the folder holds photos without text")
    parser.add_argument("--raw", action="store_true", help="with --junk: also read with the junk filter off")
    parser.add_argument("--words", default=None, help="word list, one a line (default: wordninja's)")
    parser.add_argument("--has-text", type=Path, default=None, help="with --junk: photos there that show text")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if not args.junk and args.truth is None:
        parser.error("give TRUTH.json, or --junk")
    engine = OcrEngine(threads=args.threads)
    print(f"load before: {loadavg()}  threads: {engine.threads}", flush=True)
    if args.junk:
        listing = args.has_text.read_text().splitlines() if args.has_text else []
        has_text = {line.strip() for line in listing if line.strip() and not line.startswith("#")}
        junk(engine, args.folder, english(args.words), args.raw, has_text)
    else:
        recall(engine, args.folder, args.truth)
    print(f"load after: {loadavg()}")


if __name__ == "__main__":
    main()
